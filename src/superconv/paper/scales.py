"""The paper's three scales and the building blocks its plans share.

- ``full``: the paper's setting exactly (ResNet-56, batch 1000 as 8 x 125 ghost
  BN, MAF 0.95, CLR 0.1-3 over 10k iterations, mirror only, ...).
- ``reduced``: the CPU-hours scale: ResNet-20 for ResNet-56 (other depths scaled
  the same way), batch 128, flip + pad-4 crop, iterations x 0.12 (10k -> 1,200,
  about 3 epochs), the paper's LRs and MAFs kept.
- ``small``: minutes on a CPU: ResNet-8, iterations x 0.01; a smoke test.

Each scale's choices are written into its plans' ``notes``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from superconv.config import TrainConfig
from superconv.errors import UserError, did_you_mean
from superconv.plan import Plan, RangeTest

SCALES = ("small", "reduced", "full")


@dataclass(frozen=True)
class Scale:
    """How one scale shrinks the paper's setting."""

    name: str
    base: TrainConfig  # the paper's ResNet-56 run at this scale
    unit: float  # iterations per paper iteration
    evals: int  # evaluations (metrics rows, checkpoints) per run
    depth: int  # the ResNet depth standing in for ResNet-56
    notes: tuple[str, ...]

    def iterations(self, paper_iterations: int) -> int:
        return max(2, round(paper_iterations * self.unit))

    def cadence(self, iterations: int) -> dict[str, int]:
        every = max(1, math.ceil(iterations / self.evals))
        return {"eval_every": every, "checkpoint_every": every}

    def model(self, paper_depth: int) -> str:
        """ResNet-``paper_depth`` scaled like ResNet-56 -> ``self.depth`` (nearest 6n+2, n >= 1)."""
        n = max(1, round((paper_depth * self.depth / 56 - 2) / 6))
        return f"resnet{6 * n + 2}"

    def config(self, paper_iterations: int | None = None, **changes: Any) -> TrainConfig:
        """The base config with ``changes``; iterations from the paper's count unless given."""
        if "iterations" not in changes:
            changes["iterations"] = self.iterations(paper_iterations or 10_000)
        changes = {**self.cadence(changes["iterations"]), **changes}
        return self.base.replace(**changes)


def scale(name: str) -> Scale:
    if name == "full":
        return Scale(
            "full",
            # The TrainConfig defaults are the paper's (section 6, Tables 1-4); the
            # batch of 1000 was 8 GPUs x 125 with unsynchronised BN: ghost batches of 125.
            TrainConfig(ghost_batch=125),
            unit=1.0,
            evals=20,  # every 500 iterations of a 10k run
            depth=56,
            notes=(
                "full = the paper's setting: ResNet-56 (Tables 2-4), batch 1000 as 8 ghost "
                "batches of 125 (the paper's 8 GPUs with unsynchronised BN), SGD momentum 0.9, "
                "weight decay 1e-4, BN moving-average fraction (MAF) 0.95 for CLR and 0.999 for "
                "PC-LR with Caffe's debiased average, horizontal mirror only (the authors' "
                "prototxts), the paper's iteration counts.",
                "Inputs are standardised per channel (mean and std); the authors' prototxts "
                "subtract the mean only.",
                "Test accuracy is the final model's on the 10,000 test images; 20 evaluations "
                "per run give the curves.",
            ),
        )
    if name == "reduced":
        return Scale(
            "reduced",
            TrainConfig(model="resnet20", batch_size=128, crop_pad=4),
            unit=0.12,
            evals=12,
            depth=20,
            notes=(
                "reduced = the CPU-hours scale: ResNet-20 stands in for ResNet-56, and other "
                "depths are scaled by 20/56 to the nearest 6n+2 (ResNet-20 -> 8, ResNet-110 -> 38).",
                "Batch 128 on one device: about the paper's per-GPU BN batch of 125, so no ghost "
                "batches. Flip + pad-4 crop (the common CIFAR recipe; the paper mirrors only).",
                "Iterations = 0.12 x the paper's: a 10k-iteration CLR run becomes 1,200 "
                "iterations (about 3 epochs), the 80k PC-LR baseline 9,600; stepsize stays "
                "half the run.",
                "LR ranges and BN MAFs are the paper's, not rescaled for the 8x smaller batch: "
                "divergence at the top of a range is a finding of this scale, recorded as such.",
            ),
        )
    if name == "small":
        return Scale(
            "small",
            TrainConfig(model="resnet8", batch_size=128, crop_pad=4),
            unit=0.01,
            evals=4,
            depth=8,
            notes=(
                "small = minutes on a CPU: ResNet-8 (other depths scaled by 8/56), batch 128, "
                "flip + pad-4 crop, iterations = 0.01 x the paper's (10k -> 100). A smoke test "
                "and a first look: accuracies are far below the paper's by construction.",
            ),
        )
    hint = did_you_mean(name, SCALES) or "."
    raise UserError(f"unknown scale {name!r}{hint} Choose one of: {', '.join(SCALES)}.")


def scaled(build: Callable[[Scale], Plan]) -> Callable[[str], Plan]:
    """``build`` (a plan from a :class:`Scale`) as an experiment's builder (from a scale name)."""

    def builder(name: str) -> Plan:
        return build(scale(name))

    return builder


# ----------------------------------------------------------------------------- building blocks
def clr_run(
    s: Scale, min_lr: float = 0.1, max_lr: float = 3.0, paper_iterations: int = 10_000, **kw
):
    """The paper's CLR run: one triangular cycle min_lr -> max_lr -> min_lr (stepsize = half)."""
    return s.config(
        paper_iterations, policy="clr", policy_params={"min_lr": min_lr, "max_lr": max_lr}, **kw
    )


def pc_run(s: Scale, lr: float = 0.35, paper_iterations: int = 80_000, **kw):
    """The paper's PC-LR baseline: ``lr``, x0.1 at 5/8 and 7/8 of the run (50k, 70k of 80k), MAF 0.999."""
    kw.setdefault("bn_maf", 0.999)  # Table 1: PC-LR rows use Caffe's default 0.999
    return s.config(paper_iterations, policy="piecewise", policy_params={"lr": lr}, **kw)


# Range-test lengths per scale for the paper's 5k / 20k / 100k-iteration tests (Fig. 2b):
# reduced ~1 and ~4 epochs of 50k images at batch 128; small: tens of iterations. The
# 100k test has no reduced or small counterpart.
RANGE_LENGTHS = {
    "full": {5_000: 5_000, 20_000: 20_000, 100_000: 100_000},
    "reduced": {5_000: 391, 20_000: 1_563},
    "small": {5_000: 30, 20_000: 120},
}


def range_lengths(s: Scale, paper: Sequence[int]) -> tuple[int, ...]:
    """This scale's lengths for the paper's range-test lengths ``paper`` (dropping any it lacks)."""
    return tuple(RANGE_LENGTHS[s.name][n] for n in paper if n in RANGE_LENGTHS[s.name])


def range_test_step(s: Scale, name: str, iterations: int, note: str = "", **changes) -> RangeTest:
    """A range test 0 -> 3.0 evaluated on the test set (as the paper's figures plot)."""
    evals = {"full": (50, None), "reduced": (30, 2), "small": (10, 1)}[s.name]
    return RangeTest(
        name,
        s.config(iterations=iterations, **changes),
        eval_points=evals[0],
        eval_batches=evals[1],
        note=note,
    )


RANGE_TEST_NOTES = {
    "full": "Range tests evaluate the full test set at 50 points, as the paper's figures plot test accuracy.",
    "reduced": "Range tests stand in for the paper's 5k / 20k-iteration tests with about 1 / 4 "
    "epochs (391 / 1,563 iterations) and evaluate the first 2,000 test images at 30 points; the "
    "100k test has no reduced counterpart.",
    "small": "Range tests of 30 / 120 iterations stand in for the paper's 5k / 20k; they evaluate "
    "the first 1,000 test images at 10 points.",
}
