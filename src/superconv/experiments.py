"""The paper's tables and figures as data, and :func:`reproduce`, which runs them.

Every entry of the registry is one paper item (Smith & Topin 2017, arXiv
1708.07120v1, plus the follow-up MNIST claim and the skeptic's fair comparison):
an :class:`Experiment` whose :meth:`Experiment.plan` gives, per *scale*, the
ordered steps to run, all built from :class:`~superconv.train.TrainConfig`:

- :class:`Train`: one row of a table / one curve of a figure, trained once per seed,
  with the paper's number and the authors'-log number beside it (:class:`Reference`).
- :class:`RangeTest`: an LR range test (section 3, Fig. 2b, 4, 7a, 11).
- :class:`Sweep`: a tuning step: train one policy at several values of one
  policy parameter on a validation split and keep the best by *validation*
  accuracy (never the test set); later :class:`Train` steps take the value
  through :class:`Tuned` (which can also take a range test's suggestion).

Scales (documented per entry in ``Plan.notes``):

- ``full``: the paper's setting exactly (ResNet-56, batch 1000 as 8 x 125 ghost
  BN, MAF 0.95, CLR 0.1-3 over 10k iterations, mirror only, ...).
- ``reduced``: the CPU-hours scale: ResNet-20 for ResNet-56 (other depths scaled
  the same way), batch 128, flip + pad-4 crop, iterations x 0.12 (10k -> 1,200,
  about 3 epochs), the paper's LRs and MAFs kept.
- ``small``: minutes on a CPU: ResNet-8, iterations x 0.01; a smoke test.

>>> exp = get_experiment("table1-clr-range")
>>> [step.name for step in exp.plan("full").steps][:2]
['clr-0.1-3.5', 'clr-0.1-3']

The registry is built on demand by :func:`experiments` (no work at import
time); ``EXPERIMENTS`` is the same read-only mapping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

from superconv.errors import DivergenceError, UserError, did_you_mean
from superconv.timing import format_duration  # noqa: F401 - used here, and its old home
from superconv.train import TrainConfig

SCALES = ("small", "reduced", "full")
MANIFEST_FILE = "manifest.json"
RANGE_TEST_FILE = "range_test.json"
DONE = ("finished", "diverged")  # a diverged run is a finding: recorded, not retried


# ----------------------------------------------------------------------------- the data types
@dataclass(frozen=True)
class Reference:
    """A published number for a row: test accuracy (%) of the final model.

    ``paper``: as printed in the paper (or the follow-up notes for MNIST);
    ``log``: the final test accuracy in the authors' released raw logs;
    ``source``: where each comes from (table, section, REFERENCE.md line).
    """

    paper: float | None = None
    log: float | None = None
    source: str = ""


NO_REFERENCE = Reference()


@dataclass(frozen=True)
class Tuned:
    """A policy parameter of a :class:`Train` step filled from an earlier step of the plan.

    ``source`` names a :class:`Sweep` (``field="best"``: its picked value) or a
    :class:`RangeTest` (``field`` one of ``"max_lr"``, ``"min_lr"`` (max/4),
    ``"min_lr_steepest"`` or ``"div"`` = max_lr / min_lr, the 1cycle divisor that
    makes its range [min_lr, max_lr]).
    """

    param: str
    source: str
    field: str = "best"


@dataclass(frozen=True)
class Train:
    """One row: ``config`` trained once per seed into ``<name>/seed<k>``."""

    name: str
    config: TrainConfig
    ref: Reference = NO_REFERENCE
    tuned: tuple[Tuned, ...] = ()
    note: str = ""
    seeds: int | None = None  # None: every seed of the call; n: the first n of them

    def resolve(self, values: Mapping[str, Mapping[str, float]]) -> TrainConfig:
        """The config with every :class:`Tuned` parameter filled from ``values[source][field]``."""
        if not self.tuned:
            return self.config
        params = dict(self.config.policy_params)
        for t in self.tuned:
            if t.source not in values or t.field not in values[t.source]:
                raise UserError(
                    f"row {self.name!r} takes {t.param} from {t.source!r} ({t.field}), "
                    "which has no result (not run yet, or a range test that gave no suggestion: "
                    "see its range_test.json): run the plan's earlier steps first."
                )
            params[t.param] = values[t.source][t.field]
        return self.config.replace(policy_params=params)


@dataclass(frozen=True)
class RangeTest:
    """An LR range test (section 3): LR from ``start_lr`` to ``end_lr`` over ``config.iterations`` steps.

    ``config`` supplies model, data, batch, BN, optimizer (via ``train.build``).
    ``evaluate_on``: ``"test"`` where the paper plots test accuracy (Fig. 2b) or
    ``"val"`` (a held-out split of the training set; ``config.val_size`` > 0)
    when the result is used to choose hyper-parameters. ``eval_points``
    evaluations over the test, each on ``eval_batches`` batches (None: all).
    ``seeds``: None = one test per seed of the call; 1 = seed 0 only (tuning).
    """

    name: str
    config: TrainConfig
    start_lr: float = 0.0
    end_lr: float = 3.0  # section 3: "learning rate values up to 3.0 were tested"
    mode: str = "linear"
    evaluate_on: str = "test"
    eval_points: int = 50
    eval_batches: int | None = None
    seeds: int | None = None
    note: str = ""
    # The rule a Tuned row reads this test by: (name, constants) and the training budget
    # (iterations) for budget-aware rules, applied to seed 0's stored curve. None: the
    # suggestion recorded with the test (range_test.json), as before.
    rule: tuple[str, tuple[tuple[str, float], ...]] | None = None
    budget: int | None = None

    @property
    def eval_every(self) -> int:
        return max(1, self.config.iterations // self.eval_points)

    def record(self) -> dict[str, Any]:
        """What config.json holds besides the TrainConfig."""
        return {
            "start_lr": self.start_lr,
            "end_lr": self.end_lr,
            "num_steps": self.config.iterations,
            "mode": self.mode,
            "evaluate_on": self.evaluate_on,
            "eval_every": self.eval_every,
            "eval_batches": self.eval_batches,
        }


@dataclass(frozen=True)
class Sweep:
    """Train ``config`` with ``policy_params[param]`` = each of ``values``; pick by validation accuracy.

    Trials are rows ``<name>-<param><value>``; ``seeds`` seeds each (the first
    ones of the call). The pick is the value with the highest mean final
    validation accuracy over its finished seeds (diverged trials never win).
    """

    name: str
    config: TrainConfig
    param: str
    values: tuple[float, ...]
    seeds: int = 1
    note: str = ""
    # (value, seeds) where not ``seeds``: a count (seeds 0..n-1) or the seed indices to train
    # (a value whose seed 0 was trained elsewhere, e.g. a reused run, adds only seed 1)
    seeds_by_value: tuple[tuple[float, int | tuple[int, ...]], ...] = ()

    def seeds_for(self, value: float, limit: int) -> tuple[int, ...]:
        """The seeds the trial of ``value`` trains, below ``limit`` (the call's ``--seeds``)."""
        chosen = dict(self.seeds_by_value).get(value, self.seeds)
        seeds = range(chosen) if isinstance(chosen, int) else chosen
        return tuple(k for k in seeds if k < limit)

    def trial(self, value: float) -> Train:
        """The row that trains one value of the sweep."""
        params = {**dict(self.config.policy_params), self.param: value}
        return Train(
            f"{self.name}-{self.param}{value:g}", self.config.replace(policy_params=params)
        )

    def trials(self) -> tuple[Train, ...]:
        return tuple(self.trial(v) for v in self.values)


@dataclass(frozen=True)
class Fit:
    """``superconv fit`` as a row: :func:`superconv.fit.fit_run` once per seed into
    ``<name>/seed<k>`` (range test, budget-matched check, then the chosen 1cycle for
    ``config.iterations``; ``fit.json`` records each phase and its cost, which the report
    counts beside the accuracy). The policy fields of ``config`` are not trained: fit
    chooses the cycle. Resumable phase by phase; skipped once its training phase ended.
    """

    name: str
    config: TrainConfig
    seeds: int | None = None  # None: every seed of the call; n: the first n of them
    note: str = ""
    tuned: tuple[Tuned, ...] = ()  # nothing taken from other steps: fit tunes itself
    evaluations: int | None = None  # fit_run's: None keeps config.eval_every (the rows' cadence)

    def resolve(self, values: Mapping[str, Mapping[str, float]]) -> TrainConfig:
        return self.config


Step = Train | RangeTest | Sweep | Fit


@dataclass(frozen=True)
class Plan:
    """The ordered steps of one experiment at one scale, and the choices made for that scale."""

    scale: str
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()
    estimates_window: int | None = None  # Fig. 5a: show the first N iterations of the estimate

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise UserError(
            f"no step {name!r} in this plan{did_you_mean(name, [s.name for s in self.steps])}"
        )

    def rows(self) -> tuple[Train, ...]:
        """The result rows (Train steps; not sweep trials)."""
        return tuple(s for s in self.steps if isinstance(s, Train))


@dataclass(frozen=True)
class Experiment:
    """One paper item: ids, what it shows, and its plan at each scale (built on demand)."""

    id: str
    title: str
    paper_item: str
    claim: str
    builder: Callable[[_Scale], Plan] = field(repr=False, compare=False)

    def plan(self, scale: str) -> Plan:
        """The steps at ``scale`` (``small``, ``reduced`` or ``full``)."""
        return self.builder(_scale(scale))


def pick_best(scores: Mapping[float, Sequence[float]]) -> float:
    """The value whose mean score (validation accuracy) is highest; ties: the first value.

    Values with no finite score (all trials diverged or unfinished) never win.

    >>> pick_best({0.1: [90.0, 91.0], 0.2: [92.0], 0.4: []})
    0.2
    """
    means = {v: sum(s) / len(s) for v, s in scores.items() if s}
    means = {v: m for v, m in means.items() if math.isfinite(m)}
    if not means:
        raise UserError(
            "no value of the sweep finished with a validation accuracy (all diverged or none "
            "ran): widen the sweep towards smaller values."
        )
    return max(means, key=lambda v: (means[v], -list(scores).index(v)))


def suggestion_from_dict(data: Mapping[str, Any]):
    """A :class:`~superconv.suggest.Suggestion` from its ``to_dict()`` (range_test.json)."""
    from superconv.suggest import Suggestion

    return Suggestion.from_dict(data)


def suggestion_values(suggestion: Mapping[str, Any]) -> dict[str, float]:
    """The fields a :class:`Tuned` can take from a range test's suggestion."""
    max_lr, min_lr = float(suggestion["max_lr"]), float(suggestion["min_lr_ratio"])
    return {
        "max_lr": max_lr,
        "min_lr": min_lr,
        "min_lr_steepest": float(suggestion["min_lr_steepest"]),
        "div": max_lr / min_lr,
    }


# ----------------------------------------------------------------------------- scales
@dataclass(frozen=True)
class _Scale:
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


def _scale(name: str) -> _Scale:
    if name == "full":
        return _Scale(
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
        return _Scale(
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
        return _Scale(
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


# ----------------------------------------------------------------------------- building blocks
def _clr(s: _Scale, min_lr: float = 0.1, max_lr: float = 3.0, paper_iterations: int = 10_000, **kw):
    """The paper's CLR run: one triangular cycle min_lr -> max_lr -> min_lr (stepsize = half)."""
    return s.config(
        paper_iterations, policy="clr", policy_params={"min_lr": min_lr, "max_lr": max_lr}, **kw
    )


def _pc(s: _Scale, lr: float = 0.35, paper_iterations: int = 80_000, **kw):
    """The paper's PC-LR baseline: ``lr``, x0.1 at 5/8 and 7/8 of the run (50k, 70k of 80k), MAF 0.999."""
    kw.setdefault("bn_maf", 0.999)  # Table 1: PC-LR rows use Caffe's default 0.999
    return s.config(paper_iterations, policy="piecewise", policy_params={"lr": lr}, **kw)


# Range-test lengths per scale for the paper's 5k / 20k / 100k-iteration tests (Fig. 2b):
# reduced ~1 and ~4 epochs of 50k images at batch 128; small: tens of iterations. The
# 100k test has no reduced or small counterpart.
_RANGE_LENGTHS = {
    "full": {5_000: 5_000, 20_000: 20_000, 100_000: 100_000},
    "reduced": {5_000: 391, 20_000: 1_563},
    "small": {5_000: 30, 20_000: 120},
}


def _range_lengths(s: _Scale, paper: Sequence[int]) -> tuple[int, ...]:
    """This scale's lengths for the paper's range-test lengths ``paper`` (dropping any it lacks)."""
    return tuple(_RANGE_LENGTHS[s.name][n] for n in paper if n in _RANGE_LENGTHS[s.name])


def _range_test(s: _Scale, name: str, iterations: int, note: str = "", **changes) -> RangeTest:
    """A range test 0 -> 3.0 evaluated on the test set (as the paper's figures plot)."""
    evals = {"full": (50, None), "reduced": (30, 2), "small": (10, 1)}[s.name]
    return RangeTest(
        name,
        s.config(iterations=iterations, **changes),
        eval_points=evals[0],
        eval_batches=evals[1],
        note=note,
    )


_RANGE_TEST_NOTES = {
    "full": "Range tests evaluate the full test set at 50 points, as the paper's figures plot test accuracy.",
    "reduced": "Range tests stand in for the paper's 5k / 20k-iteration tests with about 1 / 4 "
    "epochs (391 / 1,563 iterations) and evaluate the first 2,000 test images at 30 points; the "
    "100k test has no reduced counterpart.",
    "small": "Range tests of 30 / 120 iterations stand in for the paper's 5k / 20k; they evaluate "
    "the first 1,000 test images at 10 points.",
}


# ----------------------------------------------------------------------------- the entries
def _table1_clr_range(s: _Scale) -> Plan:
    # Table 1, rows 1-6: CLR (0.1-max) at BN MAF 0.95, 10,000 iterations, 50,000 images.
    rows = (
        (3.5, Reference(92.1, None, "Table 1")),
        (3.0, Reference(92.4, 92.44, "Table 1; log: REFERENCE.md 'CLR 0.1-3 10k: 92.44'")),
        (2.5, Reference(92.3, None, "Table 1")),
        (2.0, Reference(91.7, None, "Table 1")),
        (1.5, Reference(90.9, None, "Table 1")),
        (1.0, Reference(91.3, None, "Table 1")),
    )
    steps = tuple(Train(f"clr-0.1-{m:g}", _clr(s, max_lr=m), ref) for m, ref in rows)
    return Plan(s.name, steps, s.notes)


def _table1_maf(s: _Scale) -> Plan:
    # Table 1, rows 7-12: CLR 0.1-3 with BN MAF / total iterations varied together (Fig. 1b).
    rows = (
        (0.97, 20_000, Reference(92.7, None, "Table 1")),
        (0.95, 10_000, Reference(92.4, 92.44, "Table 1; log: REFERENCE.md 'CLR 0.1-3 10k: 92.44'")),
        (0.93, 8_000, Reference(91.7, None, "Table 1")),
        (0.90, 6_000, Reference(92.1, None, "Table 1")),
        (0.85, 4_000, Reference(91.1, None, "Table 1")),
        (0.80, 2_000, Reference(89.7, None, "Table 1")),
    )
    steps = tuple(
        Train(f"maf{maf:g}-{n // 1000}k", _clr(s, paper_iterations=n, bn_maf=maf), ref)
        for maf, n, ref in rows
    )
    # Section 6.1: Caffe's default MAF 0.999 "is only appropriate for the typical, very long
    # training times"; with it (or use_global_stats) short runs do not super-converge.
    steps += (
        Train(
            "maf0.999-10k",
            _clr(s, bn_maf=0.999),
            note="paper (section 6.1, no number): MAF 0.999 prevents super-convergence in short runs",
        ),
    )
    notes = s.notes + (
        "Each row keeps the paper's MAF and its share of the paper's length; maf0.999-10k "
        "contrasts Caffe's default MAF with 0.95 at the 10k-iteration length.",
    )
    return Plan(s.name, steps, notes)


def _table1_limited(s: _Scale) -> Plan:
    # Table 1, rows 13-20 and Fig. 6a: class-balanced subsets of the training set.
    # Paper (Table 1) PC-LR vs CLR; logs: REFERENCE.md "Limited data CLR 91.10/89.64/87.92/80.59
    # vs PC 90.43/86.36/62.33/71.20" (40k/30k/20k/10k).
    rows = (
        (40_000, (89.1, 90.43), (91.1, 91.10)),
        (30_000, (85.7, 86.36), (89.6, 89.64)),
        (20_000, (82.7, 62.33), (87.9, 87.92)),
        (10_000, (71.4, 71.20), (80.6, 80.59)),
    )
    src = "Table 1; log: REFERENCE.md authors' logs (limited data)"
    steps: list[Step] = []
    for n, pc, clr in rows:
        steps.append(Train(f"pc-{n // 1000}k", _pc(s, train_subset=n), Reference(*pc, src)))
        steps.append(Train(f"clr-{n // 1000}k", _clr(s, train_subset=n), Reference(*clr, src)))
    notes = s.notes + (
        "The subsets are class-balanced and fixed across seeds and policies (split_seed 0). "
        "Full-data rows are in fig1.",
    )
    return Plan(s.name, tuple(steps), notes)


def _fig1(s: _Scale) -> Plan:
    # Fig. 1a / section 1: PC reaches 91.2% after ~80k iterations, CLR 92.4% after 10k.
    steps = (
        Train(
            "clr-0.1-3",
            _clr(s),
            Reference(92.4, 92.44, "Table 1 / section 1; log: REFERENCE.md 'CLR 0.1-3 10k'"),
        ),
        Train(
            "pc-0.35",
            _pc(s),
            Reference(
                91.2, 90.32, "section 1 ('91.2% after ~80,000 iterations'); log: REFERENCE.md"
            ),
        ),
    )
    return Plan(s.name, steps, s.notes)


def _fig2b(s: _Scale) -> Plan:
    # Fig. 2b: range tests 0 -> 3.0 of 5k, 20k and 100k iterations; TEST accuracy vs LR.
    steps = tuple(
        _range_test(
            s,
            f"range-{n}it",
            n,
            "paper: test accuracy stays high up to LR 3.0 (a long plateau: super-convergence potential)",
        )
        for n in _range_lengths(s, (5_000, 20_000, 100_000))
    )
    notes = s.notes + (
        _RANGE_TEST_NOTES[s.name],
        "Evaluated on the TEST set, as Fig. 2b plots test accuracy; nothing is tuned on it.",
    )
    return Plan(s.name, steps, notes)


def _fig4(s: _Scale) -> Plan:
    # Fig. 4a (ResNet-56) and 4b (ResNet-20, ResNet-110): train vs test loss in the range test.
    # The paper does not state the tests' length: 20k iterations here (the middle of Fig. 2b).
    (length,) = _range_lengths(s, (20_000,))
    note = "paper: train loss rises while test loss falls for LR ~0.2 to 2.0 (regularization)"
    steps = tuple(
        _range_test(s, f"range-resnet{d}", length, note, model=s.model(d)) for d in (56, 20, 110)
    )
    notes = s.notes + (
        _RANGE_TEST_NOTES[s.name],
        "The paper does not give Fig. 4's test length; we use 20k iterations at full scale.",
        "Evaluated on the TEST set (the paper plots test loss).",
    )
    return Plan(s.name, steps, notes)


def _fig5(k: int, window: int | None) -> Callable[[_Scale], Plan]:
    # Section 5, Fig. 5: eq. 8 estimates for constant LR 0.1 vs CLR 0.1-3 (stepsize 5,000).
    def build(s: _Scale) -> Plan:
        constant = s.config(policy="constant", policy_params={"lr": 0.1}, estimator_k=k)
        steps = (
            Train(
                "constant-0.1",
                constant,
                note="paper: estimate spikes to ~3, then drops near 0.2"
                if k > 1
                else "paper: estimate in the range 2..4 over the first 300 iterations",
            ),
            Train(
                "clr-0.1-3",
                _clr(s, estimator_k=k),
                note="paper: estimate stays high, ends near 0.5"
                if k > 1
                else "paper: estimate in the range 2..4 over the first 300 iterations",
            ),
        )
        shown = window if s.name != "small" else None  # a small run is shorter than the window
        span = f"the first {shown} iterations" if shown else "the whole run"
        notes = s.notes + (
            f"Eq. 8 estimate (l1 sums, moving average beta 0.1) from the weights every {k} "
            f"iteration(s) (k={k}) of a full CLR-length run; the figure shows {span}, as the "
            f"paper's Fig. 5{'a' if k == 1 else 'b'} does.",
        )
        return Plan(s.name, steps, notes, estimates_window=shown)

    return build


def _fig6(s: _Scale) -> Plan:
    # Fig. 6b / section 6.1: ResNet-20 and ResNet-110, PC-LR 0.35 vs CLR with stepsize 10,000
    # (20,000 iterations). Paper: ResNet-20 CLR 90.4 vs PC 88.6; ResNet-110 92.1 vs 91.0.
    # Logs (REFERENCE.md): ResNet-20 90.42 / 88.64; ResNet-110 92.37 / 91.21.
    src = "section 6.1; log: REFERENCE.md authors' logs"
    steps: list[Step] = []
    for depth, clr, pc in ((20, (90.4, 90.42), (88.6, 88.64)), (110, (92.1, 92.37), (91.0, 91.21))):
        model = s.model(depth)  # rows keep the paper's name; config.model is this scale's
        steps.append(
            Train(
                f"clr-resnet{depth}",
                _clr(s, paper_iterations=20_000, model=model),
                Reference(*clr, src),
            )
        )
        steps.append(Train(f"pc-resnet{depth}", _pc(s, model=model), Reference(*pc, src)))
    notes = s.notes + (
        "CLR stepsize 10,000 (20,000 iterations) as section 6.1 states; the paper does not give "
        "these runs' BN MAF: 0.95 as Tables 2-3. Limited data (Fig. 6a) is table1-limited-data.",
    )
    return Plan(s.name, tuple(steps), notes)


def _fig7(s: _Scale) -> Plan:
    # Fig. 7 / A.2: CIFAR-100, ResNet-56. 7a range test 0 -> 3; 7b CLR 68.6% vs PC 59.8%
    # (logs: 68.2 / 59.27, REFERENCE.md).
    (length,) = _range_lengths(s, (5_000,))
    src = "A.2; log: REFERENCE.md authors' logs"
    steps = (
        _range_test(
            s,
            f"range-{length}it",
            length,
            "paper: accuracy stays high from 0 to 3 (super-convergence potential)",
            dataset="cifar100",
        ),
        Train("clr-0.1-3", _clr(s, dataset="cifar100"), Reference(68.6, 68.2, src)),
        Train("pc-0.35", _pc(s, dataset="cifar100"), Reference(59.8, 59.27, src)),
    )
    notes = s.notes + (
        _RANGE_TEST_NOTES[s.name],
        "Needs the CIFAR-100 data. The paper does not give the range test's length or the "
        "CIFAR-100 iteration counts: 5k for the test, 10k CLR and 80k PC-LR as for CIFAR-10.",
    )
    return Plan(s.name, steps, notes)


def _fig8(s: _Scale) -> Plan:
    # Fig. 8 / A.2: adaptive methods without CLR (PC regime, 8a) and with CLR (8b).
    # Paper A.2: Nesterov CLR 92.1% after 10k vs PC 90.9% (early stopping at 65k);
    # logs (REFERENCE.md): Nesterov + CLR 92.47, Adam + CLR 87.15.
    # The paper gives no LR bounds for AdaDelta, AdaGrad and Adam: ours are noted per row.
    rows = (
        (
            "nesterov",
            0.35,
            (0.1, 3.0),
            Reference(90.9, None, "A.2 (early stopping at 65k)"),
            Reference(92.1, 92.47, "A.2; log: REFERENCE.md"),
        ),
        ("adadelta", 1.0, (0.1, 3.0), NO_REFERENCE, NO_REFERENCE),
        ("adagrad", 0.01, (0.003, 0.1), NO_REFERENCE, NO_REFERENCE),
        ("adam", 0.001, (0.0003, 0.01), NO_REFERENCE, Reference(None, 87.15, "log: REFERENCE.md")),
    )
    steps: list[Step] = []
    for opt, pc_lr, (lo, hi), pc_ref, clr_ref in rows:
        ours = "" if opt == "nesterov" else " (LRs our choice: the paper gives none)"
        steps.append(
            Train(
                f"pc-{opt}", _pc(s, lr=pc_lr, optimizer=opt), pc_ref, note=f"PC-LR {pc_lr:g}{ours}"
            )
        )
        steps.append(
            Train(
                f"clr-{opt}",
                _clr(s, lo, hi, optimizer=opt),
                clr_ref,
                note=f"CLR {lo:g}-{hi:g}{ours}",
            )
        )
    notes = s.notes + (
        "Paper: Nesterov, AdaDelta and AdaGrad super-converge with CLR; Adam does not; none of "
        "them speeds up training without CLR. PC rows use MAF 0.999, CLR rows 0.95.",
        "AdaDelta/AdaGrad have no momentum; Adam's beta1 is the config's momentum (0.9).",
    )
    return Plan(s.name, tuple(steps), notes)


def _table5(s: _Scale) -> Plan:
    # Table 5 / Fig. 9a: total batch size with CLR 0.1-3, stepsize 5,000 (10k iterations);
    # Fig. 9b: dropout 0.2 "a small improvement" (no number given).
    rows = ((1536, 92.1), (1000, 92.4), (512, 91.7), (256, 89.5))
    steps: list[Step] = []
    for batch, acc in rows:
        if s.name == "full":
            changes = {"batch_size": batch, "ghost_batch": batch // 8}  # 8 GPUs, unsynchronised BN
        else:  # one device holding one GPU's share: batch / 8 (1000 -> the base 128)
            changes = {"batch_size": s.base.batch_size if batch == 1000 else batch // 8}
        steps.append(Train(f"batch{batch}", _clr(s, **changes), Reference(acc, None, "Table 5")))
    steps.append(
        Train(
            "dropout0.2", _clr(s, dropout=0.2), note="paper (Fig. 9b): a small gain over batch1000"
        )
    )
    notes = s.notes + (
        "Ghost batches = batch / 8 at full scale (the paper's 8 GPUs); at reduced and small "
        "scales each batch is divided by 8 (one GPU's share: 192 / 128 / 64 / 32) on one device."
        if s.name != "full"
        else "Ghost batches = batch / 8 (the paper's 8 GPUs with unsynchronised BN).",
    )
    return Plan(s.name, tuple(steps), notes)


def _table6(s: _Scale) -> Plan:
    # Table 6 / Fig. 10a: momentum; Fig. 10b: weight decay (1e-4 works, 1e-3 does not).
    # Logs (REFERENCE.md): momentum 0.8/0.85/0.9/0.95: 91.86/92.29/92.44/90.74.
    src = "Table 6; log: REFERENCE.md authors' logs"
    steps: list[Step] = [
        Train(
            f"momentum{m:g}",
            _clr(s, momentum=m),
            Reference(acc, log, src),
            note="also the weight decay 1e-4 row of Fig. 10b" if m == 0.9 else "",
        )
        for m, acc, log in (
            (0.80, 92.1, 91.86),
            (0.85, 91.9, 92.29),
            (0.90, 92.4, 92.44),
            (0.95, 90.7, 90.74),
        )
    ]
    for wd in (1e-3, 1e-5, 1e-6):
        note = (
            "paper: prevents super-convergence"
            if wd == 1e-3
            else "paper: super-converges, below 1e-4"
        )
        steps.append(Train(f"wd{wd:g}", _clr(s, weight_decay=wd), note=note))
    notes = s.notes + ("Weight decay 1e-4 is the momentum0.9 row (the same run).",)
    return Plan(s.name, tuple(steps), notes)


def _fig11(s: _Scale) -> Plan:
    # Fig. 11 / section 6.2: range tests of architectures without super-convergence.
    # The paper does not state the tests' length: 5k iterations (the shortest of Fig. 2b).
    (length,) = _range_lengths(s, (5_000,))
    notes_by_model = {
        "bottleneck56": "paper (Fig. 11a): a peak near LR 0.15, large swings beyond 0.1",
        "resnext": "paper (Fig. 11b): a peak, then swings and decay beyond LR ~0.1",
        "densenet": "paper (section 6.2): no super-convergence",
    }
    steps = tuple(
        _range_test(s, f"range-{m}", length, note, model=m) for m, note in notes_by_model.items()
    )
    notes = s.notes + (
        _RANGE_TEST_NOTES[s.name],
        "The paper does not give these tests' length: 5k iterations at full scale. Evaluated on "
        "the TEST set, as the paper's Fig. 2b; the models are the section 6.2 variants at their "
        "own depth at every scale.",
    )
    return Plan(s.name, steps, notes)


def _mnist(s: _Scale) -> Plan:
    # Follow-up practice notes: LeNet on MNIST, 1cycle near 99.3% in 12 epochs vs 99.03%
    # after 85 epochs with Caffe's preset solver (inv). Caffe's reference LeNet solver: batch 64,
    # lr 0.01, momentum 0.9, weight decay 5e-4, inv gamma 1e-4 power 0.75 (REFERENCE.md).
    if s.name == "small":
        # One iteration per "epoch": 12 for the 1cycle budget, 85 for the reference solver.
        dataset, val_size, short, long = "mnist-demo", 1_000, 12, 85
    else:  # LeNet is small: reduced runs it at its real size, as full does
        dataset, per_epoch, val_size = "mnist", 60_000 / 64, 5_000
        short, long = round(12 * per_epoch), math.ceil(85 * per_epoch)  # 11,250 and 79,688
    base = TrainConfig(
        model="lenet",
        dataset=dataset,
        batch_size=64,  # Caffe's lenet_solver
        momentum=0.9,
        weight_decay=5e-4,
        flip=False,  # digits are not mirror-symmetric
        normalize="unit",  # Caffe's LeNet scales pixels by 1/256 only
        eval_batch_size=1000,
    )
    evals = 4 if s.name == "small" else 20

    def cfg(iterations: int, **kw) -> TrainConfig:
        every = max(1, math.ceil(iterations / evals))
        return base.replace(iterations=iterations, eval_every=every, checkpoint_every=every, **kw)

    grid_1cycle = (0.01, 0.03, 0.1, 0.3)
    grid_inv = (0.003, 0.01, 0.03, 0.1)
    steps = (
        Sweep(
            "sweep-onecycle",
            cfg(short, policy="one_cycle", policy_params={}, val_size=val_size),
            "max_lr",
            grid_1cycle,
        ),
        Sweep(
            "sweep-inv",
            cfg(short, policy="inv", policy_params={}, val_size=val_size),
            "base_lr",
            grid_inv,
        ),
        Train(
            "onecycle-12ep",
            cfg(short, policy="one_cycle", policy_params={}),
            Reference(99.3, None, "follow-up practice notes: 'near 99.3% in as few as 12 epochs'"),
            tuned=(Tuned("max_lr", "sweep-onecycle"),),
            note="1cycle, max_lr by the validation sweep",
        ),
        Train(
            "inv-12ep-tuned",
            cfg(short, policy="inv", policy_params={}),
            tuned=(Tuned("base_lr", "sweep-inv"),),
            note="Caffe's inv policy at the 1cycle budget, base_lr by the validation sweep",
        ),
        Train(
            "caffe-reference-85ep",
            cfg(long, policy="inv", policy_params={"base_lr": 0.01, "gamma": 1e-4, "power": 0.75}),
            Reference(
                99.03,
                None,
                "follow-up practice notes: 'preset hyper-parameters ... 99.03% after 85 epochs'",
            ),
            note="Caffe's reference solver as shipped (untuned)",
        ),
    )
    if s.name == "small":
        notes = (
            f"small = mnist-demo (10,000 training images shipped in the package), one iteration "
            f"per paper epoch: {short} iterations for the '12-epoch' runs, {long} for the "
            "'85-epoch' one. A smoke test: accuracies are far below the paper's by construction.",
        )
    else:
        notes = (
            f"{s.name} = LeNet on the full MNIST at its real size (it is small): 12 epochs = "
            f"{short:,} iterations, 85 epochs = {long:,} iterations at batch 64.",
        )
    notes += (
        "LeNet (conv5-20, pool, conv5-50, pool, fc-500, ReLU, fc-10); pixels / 256 as Caffe's "
        "example; no augmentation; SGD momentum 0.9 (1cycle cycles it 0.95-0.85), weight decay 5e-4.",
        f"Tuning: each sweep trains {len(grid_1cycle)} values on a {val_size:,}-image validation "
        "split held out of the training set (seed 0) and keeps the best final validation "
        "accuracy; the final runs then train on the whole training set.",
        "Caffe's own example runs the reference solver 10k iterations (~99.1%); the 99.03% is "
        "the follow-up notes' 85-epoch figure.",
    )
    return Plan(s.name, steps, notes)


def _fair_comparison(s: _Scale) -> Plan:
    # The skeptic's critique: tuned baselines, equal budgets, error bars, warm-up + cosine.
    # The budgets: about 5 and 15 epochs, at full and at reduced scale alike.
    budgets = {"full": (5, 15), "reduced": (5, 15), "small": None}[s.name]
    val_size = 1_000 if s.name == "small" else 5_000
    train_images = 50_000 - val_size
    if budgets is None:
        short, long, rt_steps = 40, 120, 30
    else:
        short, long = (math.ceil(e * train_images / 128) for e in budgets)
        rt_steps = math.ceil(train_images / 128)  # one epoch
    model = "resnet8" if s.name == "small" else "resnet20"
    base = TrainConfig(
        model=model,
        batch_size=128,
        momentum=0.9,
        weight_decay=1e-4,
        crop_pad=4,  # flip + pad-4 crop for every policy
        val_size=val_size,
        eval_batch_size=1000,
    )
    evals = 4 if s.name == "small" else 12

    def cfg(iterations: int, policy: str, params: Mapping[str, Any], **kw) -> TrainConfig:
        every = max(1, math.ceil(iterations / evals))
        return base.replace(
            iterations=iterations,
            eval_every=every,
            checkpoint_every=every,
            policy=policy,
            policy_params=dict(params),
            **kw,
        )

    def warmup(iterations: int) -> dict[str, Any]:
        return {"warmup_steps": max(1, iterations // 10)}  # 10% linear warm-up, then cosine to 0

    # Factors of 2 around the usual 0.1. A skeptic's sweep must bracket its optimum:
    # multistep's first five trials put the best at 0.05, the lower edge, so its grid
    # was extended by 0.0125 and 0.025; warm-up + cosine's best (0.2) already had lower
    # validation accuracy on both sides, so its grid stayed.
    grid = (0.05, 0.1, 0.2, 0.4, 0.8)
    grids = {"multistep": (0.0125, 0.025, *grid), "warmup_cosine": grid}
    # 1cycle tuned like the baselines, to tell the schedule from the range test's pick:
    # max_lr by the same kind of sweep, min_lr = max_lr / 4 as suggest() gives.
    onecycle_grid = (0.1, 0.2, 0.4, 0.8, 1.6)
    range_test = RangeTest(
        "range-test",
        base.replace(iterations=rt_steps),
        evaluate_on="val",
        eval_points=10 if s.name == "small" else 30,
        seeds=1,
        note="picks 1cycle's range by suggest(): max_lr where validation accuracy falls, min_lr = max/4",
    )
    steps: list[Step] = [
        range_test,
        Sweep("sweep-multistep", cfg(short, "multistep", {}), "lr", grids["multistep"]),
        Sweep(
            "sweep-warmup_cosine",
            cfg(short, "warmup_cosine", warmup(short)),
            "max_lr",
            grids["warmup_cosine"],
        ),
        Sweep("sweep-onecycle", cfg(short, "one_cycle", {"div": 4}), "max_lr", onecycle_grid),
    ]
    onecycle = (Tuned("max_lr", "range-test", "max_lr"), Tuned("div", "range-test", "div"))
    labels = (
        {"full": "5ep", "reduced": "5ep", "small": "40it"}[s.name],
        {"full": "15ep", "reduced": "15ep", "small": "120it"}[s.name],
    )
    runs = [(short, labels[0], None), (long, labels[1], None)]
    runs += [(short, f"{labels[0]}-{n // 1000}k", n) for n in (10_000, 20_000)]
    for iterations, label, subset in runs:
        extra = {} if subset is None else {"train_subset": subset}
        steps += [
            Train(
                f"onecycle-{label}",
                cfg(iterations, "one_cycle", {}, **extra),
                tuned=onecycle,
                note="1cycle, range from the range test's suggestion",
            ),
            Train(
                f"onecycle_swept-{label}",
                cfg(iterations, "one_cycle", {"div": 4}, **extra),
                tuned=(Tuned("max_lr", "sweep-onecycle"),),
                note="1cycle, max_lr by a sweep as the baselines' (min_lr = max_lr / 4)",
            ),
            Train(
                f"multistep-{label}",
                cfg(iterations, "multistep", {}, **extra),
                tuned=(Tuned("lr", "sweep-multistep"),),
                note="x0.1 at 50% and 75%, lr by the sweep",
            ),
            Train(
                f"warmup_cosine-{label}",
                cfg(iterations, "warmup_cosine", warmup(iterations), **extra),
                tuned=(Tuned("max_lr", "sweep-warmup_cosine"),),
                note="10% warm-up, cosine to 0, max_lr by the sweep",
            ),
        ]
    # Issue 22, item 6: the comparison rerun with the product, appended after every
    # committed step (none of which changes): at the smaller and larger budget and on the
    # 10k subset, not 20k. At the larger budget 2 seeds ("a third only where the result
    # falls inside the band": raise that row's seeds to 3 then).
    product = [(short, labels[0], None, None), (long, labels[1], None, 2)]
    product += [(short, f"{labels[0]}-10k", 10_000, None)]
    for iterations, label, subset, seeds in product:
        extra = {} if subset is None else {"train_subset": subset}
        steps += _default_rule_rows(base, cfg(iterations, "one_cycle", {}, **extra), label, seeds)
        steps += [
            Fit(
                f"fit-{label}",
                cfg(iterations, "one_cycle", _cycle_shape(), **extra),
                seeds=seeds,
                note="superconv fit: range test + check (successive halving) + the chosen "
                "1cycle; cost includes the tuning",
            ),
            Train(
                f"schedulefree-{label}",
                cfg(
                    iterations,
                    "constant",
                    {"lr": SCHEDULEFREE_LR},
                    optimizer="schedulefree_sgd",
                    **extra,
                ),
                seeds=seeds,
                note="schedule-free SGD, lr 1.0, its own 5% warm-up, no schedule, BN "
                "recomputed at its average before each evaluation",
            ),
            Train(
                f"prodigy-{label}",
                cfg(iterations, "cosine", {"max_lr": PRODIGY_LR}, optimizer="prodigy", **extra),
                seeds=seeds,
                note="Prodigy, lr 1.0 with cosine annealing to 0 over the run",
            ),
        ]
    budget_text = (
        f"~{budgets[0]} and ~{budgets[1]} epochs ({short:,} and {long:,} iterations)"
        if budgets
        else f"{short} and {long} iterations"
    )
    notes = (
        f"{s.name}: CIFAR-10, {model}, batch 128, SGD momentum 0.9 (1cycle cycles it 0.95-0.85), "
        f"weight decay 1e-4, flip + pad-4 crop for every policy, BN MAF 0.95; {val_size:,} "
        f"training images held out for validation (all runs train on the other {train_images:,}).",
        f"Budgets: {budget_text}. Each baseline's peak LR is the best value of its sweep "
        "("
        + "; ".join(f"{p}: {', '.join(f'{v:g}' for v in g)}" for p, g in grids.items())
        + ") by final validation accuracy at the smaller budget (seed 0), reused at the larger "
        "budget and for limited data. Multistep's grid reaches lower because its best value "
        "first sat at 0.05, the lower edge of the common grid.",
        f"1cycle's range comes from suggest() on one {rt_steps}-iteration range test 0 -> 3.0 "
        "evaluated on the validation split (seed 0): the `onecycle-*` rows, the issue's policy.",
        "The `onecycle_swept-*` rows (added after the first range-test-tuned 1cycle run "
        "ended far below the baselines) take 1cycle's max_lr from a sweep like the baselines' "
        f"({', '.join(f'{v:g}' for v in onecycle_grid)}; min_lr = max_lr / 4 as suggest() "
        "gives), to tell the 1cycle schedule from the range test's choice of LR.",
        "Limited data: class-balanced 10k and 20k subsets of the training split at the smaller "
        "budget's iteration count.",
        "Tuning cost (sweep and range-test iterations and images) is reported beside the results.",
        "Seed 0 of a swept row at the smaller budget repeats the sweep's winning trial (same "
        "seed, data and config: on the CPU the same run, bit for bit), so that seed was picked "
        "for its validation accuracy; seeds 1 and 2 carry no such selection.",
    )
    notes += (
        f"Rerun with the product (issue 22, item 6; {', '.join(p[1] for p in product)}): "
        "`fit-*` runs `superconv fit` (its own range test and budget-matched check, then "
        "the chosen 1cycle) and is charged its tuning; `schedulefree-*` (schedule-free SGD, "
        "lr 1.0, 5% warm-up inside the optimizer, BN statistics recomputed at its average "
        "before each evaluation and checkpoint) and `prodigy-*` (Prodigy, lr 1.0, cosine to "
        "0, weight decay 1e-4 as an L2 penalty like the baselines') tune nothing; "
        "`onecycle_<rule>-*` train 1cycle at the default rule's suggestion from a range test "
        "on that budget's data, once a default range test is chosen "
        "(superconv.suggest.DEFAULT_TEST). Recipes: docs/fair-comparison.md.",
        "At the larger budget these rows have 2 seeds: a third only where the result falls "
        "inside the band.",
    )
    if s.name != "small":
        notes += (
            "This comparison is specified at CPU scale (ResNet-20, batch 128): `reduced` and "
            "`full` are the same plan here.",
        )
    return Plan(s.name, tuple(steps), notes)


# The rows users pick instead of tuning an LR (docs/fair-comparison.md gives each number's
# source): schedule-free SGD at its class default lr 1.0 (its README: "a learning rate 10x-50x
# larger than classical rates", 10x the usual 0.1); Prodigy at lr 1.0 ("We recommend using
# lr=1. (default) for all networks"), with the cosine annealing its README recommends.
SCHEDULEFREE_LR = 1.0
PRODIGY_LR = 1.0


def _cycle_shape() -> dict[str, Any]:
    """The one_cycle parameters of superconv.suggest.CYCLE, max_lr left to be filled."""
    from superconv.suggest import CYCLE

    return {k: v for k, v in CYCLE.policy_params(1.0).items() if k != "max_lr"}


def _default_rule_rows(
    base: TrainConfig, row: TrainConfig, label: str, seeds: int | None
) -> list[Step]:
    """``onecycle_<rule>-<label>``: 1cycle (superconv.suggest.CYCLE) at the default rule's
    suggestion, read from seed 0 of a range test of the default test's ramp and length on
    the row's own data (``row``: its budget, subset and cadence). None until a default test
    is chosen (``DEFAULT_TEST``), as the suggestion benchmark's confirmation rows."""
    from superconv import suggest
    from superconv.suggest_bench import RANGE_EVAL_IMAGES

    if suggest.DEFAULT_TEST is None:
        return []
    rule = suggest.DEFAULT["rule"]
    constants = tuple(sorted((k, v) for k, v in suggest.DEFAULT.items() if k != "rule"))
    test = suggest.default_range_test(row.optimizer, row.iterations)
    length = test["num_steps"]
    extra = {} if row.train_subset is None else {"train_subset": row.train_subset}
    source = RangeTest(
        f"range-test-{rule}-{label}",
        base.replace(iterations=length, **extra),
        start_lr=test["start_lr"],
        end_lr=test["end_lr"],
        mode=test["mode"],
        evaluate_on="val",
        eval_points=max(1, min(20, length // 3)),  # as the benchmark the rule was chosen on
        eval_batches=max(1, RANGE_EVAL_IMAGES // base.eval_batch_size),
        seeds=1,
        note=f"the default test ({test['mode']} ramp, {length} iterations) read by the default "
        f"rule {rule!r} for a {row.iterations}-iteration budget",
        rule=(rule, constants),
        budget=row.iterations,
    )
    trained = Train(
        f"onecycle_{rule}-{label}",
        row.replace(policy_params=_cycle_shape()),
        tuned=(Tuned("max_lr", source.name, "max_lr"),),
        seeds=seeds,
        note=f"1cycle at the default rule's ({rule}) suggestion from {source.name}",
    )
    return [source, trained]


def _entries() -> tuple[Experiment, ...]:
    return (
        Experiment(
            "table1-clr-range",
            "Table 1: CLR range (ResNet-56, CIFAR-10)",
            "Table 1, rows 1-6",
            "max_lr of 1 is too small; about 3 works best (CLR 0.1-3: 92.4%).",
            _table1_clr_range,
        ),
        Experiment(
            "table1-maf",
            "Table 1: BN moving-average fraction and run length",
            "Table 1, rows 7-12; Fig. 1b",
            "Shorter CLR runs need a smaller BN MAF; 2k-20k iterations give 89.7-92.7%.",
            _table1_maf,
        ),
        Experiment(
            "table1-limited-data",
            "Table 1 / Fig. 6a: limited training data",
            "Table 1, rows 13-20; Fig. 6a",
            "CLR's gain over PC-LR grows as the training set shrinks (10k images: 80.6% vs 71.4%).",
            _table1_limited,
        ),
        Experiment(
            "fig1",
            "Fig. 1a: super-convergence vs piecewise-constant LR",
            "Fig. 1a, section 1",
            "CLR 0.1-3 reaches 92.4% in 10k iterations; PC-LR 91.2% after 80k.",
            _fig1,
        ),
        Experiment(
            "fig2b",
            "Fig. 2b: LR range test to 3.0",
            "Fig. 2b, section 3",
            "Test accuracy stays high up to LR 3.0 for 5k, 20k and 100k-iteration tests.",
            _fig2b,
        ),
        Experiment(
            "fig4",
            "Fig. 4: train vs test loss in the range test",
            "Fig. 4a/4b, section 4",
            "Train loss rises while test loss falls from LR ~0.2 to 2.0: large LRs regularize.",
            _fig4,
        ),
        Experiment(
            "fig5a",
            "Fig. 5a: eq. 8 LR estimate, every iteration",
            "Fig. 5a, section 5",
            "The estimated optimal LR is 2-4 early in training.",
            _fig5(1, 300),
        ),
        Experiment(
            "fig5b",
            "Fig. 5b: eq. 8 LR estimate, every 10 iterations",
            "Fig. 5b, section 5",
            "Constant LR 0.1: the estimate falls near 0.2; CLR: it stays high, ending near 0.5.",
            _fig5(10, None),
        ),
        Experiment(
            "fig6",
            "Fig. 6b: ResNet-20 and ResNet-110",
            "Fig. 6b, section 6.1",
            "CLR beats PC-LR for shallow and deep ResNets (R-20 90.4 vs 88.6; R-110 92.1 vs 91.0).",
            _fig6,
        ),
        Experiment(
            "fig7",
            "Fig. 7: CIFAR-100",
            "Fig. 7a/7b, A.2",
            "Super-convergence on CIFAR-100: CLR 68.6% vs PC-LR 59.8%.",
            _fig7,
        ),
        Experiment(
            "fig8",
            "Fig. 8: adaptive optimizers with and without CLR",
            "Fig. 8a/8b, A.2",
            "Nesterov, AdaDelta, AdaGrad super-converge with CLR; Adam does not.",
            _fig8,
        ),
        Experiment(
            "table5",
            "Table 5 / Fig. 9: batch size and dropout",
            "Table 5; Fig. 9a/9b, A.2",
            "Larger total batches do better with CLR (1536: 92.1% .. 256: 89.5%); dropout 0.2 helps a little.",
            _table5,
        ),
        Experiment(
            "table6",
            "Table 6 / Fig. 10: momentum and weight decay",
            "Table 6; Fig. 10a/10b, A.2",
            "Momentum 0.9 is best (92.4%); weight decay 1e-4 works, 1e-3 prevents super-convergence.",
            _table6,
        ),
        Experiment(
            "fig11",
            "Fig. 11: range tests without super-convergence",
            "Fig. 11a/11b, section 6.2",
            "Bottleneck ResNet, ResNeXt and DenseNet peak near LR 0.1-0.15 and swing beyond it.",
            _fig11,
        ),
        Experiment(
            "mnist-lenet",
            "MNIST LeNet: 1cycle vs Caffe's reference solver",
            "follow-up practice notes (LeNet on MNIST)",
            "1cycle reaches ~99.3% in 12 epochs; the preset inv solver 99.03% after 85 epochs.",
            _mnist,
        ),
        Experiment(
            "fair-comparison",
            "Fair comparison: 1cycle vs tuned baselines at equal budgets",
            "the skeptic's critique: tuned baselines at equal budget",
            "Does 1cycle beat a tuned multistep / warm-up cosine baseline at the same iteration budget?",
            _fair_comparison,
        ),
        Experiment(
            "suggest",
            "Suggestion benchmark: range-test rules scored against 1cycle max_lr sweeps",
            "the LR range test's reading (section 3), scored",
            "A range-test rule's max_lr is within 2x of the swept best and loses at most "
            "max(1 point, 2 SE) of validation accuracy, on every task.",
            _suggest,
        ),
    )


def _suggest(s: _Scale) -> Plan:
    from superconv import suggest_bench

    steps = suggest_bench.plan_steps(small=s.name == "small")
    notes = (
        "Tasks, grids and ramps: superconv.suggest_bench (benchmarks/suggest/README.md). Every "
        "sweep trains the one cycle shape of superconv.suggest.CYCLE (start at max/4, 30% up, "
        "cosine down to max/4e4, momentum 0.95-0.85), scored on validation accuracy.",
        "Sweep points the fair comparison already trained in that shape are reused by the "
        "scorer (benchmarks/suggest/score.py), not rerun here.",
    )
    if s.name == "small":
        notes += ("small = the mnist-demo task only, a tenth of its budget: a smoke test.",)
    return Plan(s.name, steps, notes)


def experiments() -> Mapping[str, Experiment]:
    """The registry: experiment id -> :class:`Experiment` (a read-only mapping, built on call)."""
    return MappingProxyType({e.id: e for e in _entries()})


def __getattr__(name: str) -> Any:
    # EXPERIMENTS is built on first access (PEP 562), not at import time.
    if name == "EXPERIMENTS":
        return experiments()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def experiment_ids() -> tuple[str, ...]:
    """The ids of every registered experiment, in the paper's order."""
    return tuple(experiments())


def get_experiment(exp_id: str) -> Experiment:
    """The experiment ``exp_id``; :class:`UserError` with a did-you-mean if unknown."""
    registry = experiments()
    if exp_id not in registry:
        parts = [i for i in registry if i.startswith(f"{exp_id}-")]
        if parts:  # e.g. "table1": the paper's Table 1 is split into three experiments
            hint = f"; it is split into {', '.join(repr(p) for p in parts)}."
        else:
            hint = did_you_mean(exp_id, registry) or "."
        raise UserError(
            f"unknown experiment {exp_id!r}{hint} Known: {', '.join(registry)} "
            "(superconv reproduce --list shows them)."
        )
    return registry[exp_id]


# ----------------------------------------------------------------------------- planned runs
@dataclass(frozen=True)
class _Job:
    """One run directory of a plan: a step (or sweep trial) at one seed."""

    step: Step  # the Train / RangeTest that runs (a sweep trial is a Train)
    parent: str  # the plan step it belongs to (the sweep's name for a trial)
    seed: int
    path: Path


def _jobs(plan: Plan, seeds: int, root: Path) -> list[_Job]:
    jobs = []
    for step in plan.steps:
        if isinstance(step, Sweep):
            for value, trial in zip(step.values, step.trials()):
                for k in step.seeds_for(value, seeds):
                    jobs.append(_Job(trial, step.name, k, root / trial.name / f"seed{k}"))
        else:
            n = seeds if getattr(step, "seeds", None) is None else min(step.seeds, seeds)
            for k in range(n):
                jobs.append(_Job(step, step.name, k, root / step.name / f"seed{k}"))
    return jobs


def _status(path: Path, step: Step | None = None) -> str:
    """``finished`` / ``diverged`` (done), ``resume`` (started, not ended) or ``new``."""
    from superconv.records import RunDir

    if isinstance(step, Fit):
        return fit_status(path)
    run = RunDir(path)
    try:
        summary = run.read_summary()
    except ValueError:  # a damaged summary.json: rerun the run
        summary = None
    if summary is not None and summary.get("status") in DONE:
        return summary["status"]
    return "resume" if run.config_path.exists() else "new"


def fit_status(path: Path) -> str:
    """A :class:`Fit` run's state from its ``fit.json``: ``finished`` once its training
    phase ended; ``diverged`` (a finding, kept) when every candidate of its check diverged
    or its final 1cycle diverged with no halvings left; else ``resume`` or ``new``."""
    import json

    from superconv.fit import FIT_FILE

    try:
        data = json.loads((path / FIT_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "new"
    except ValueError:  # a damaged fit.json: fit_run refuses it, naming the file
        return "resume"
    phases = data.get("phases") or {}
    if "train" in phases:
        return "finished"
    check = phases.get("check") or {}
    if check.get("done") and check.get("chosen") is None:
        return "diverged"
    if any(str(n).endswith("no halvings left") for n in data.get("notes") or []):
        return "diverged"
    return "resume"


def _check_seeds(seeds: int) -> int:
    from superconv.train import _positive_int

    _positive_int("seeds", seeds)
    return seeds


# ----------------------------------------------------------------------------- wall time
_IMAGE_SHAPES = {  # (channels, height, width) of each data set's images
    "cifar10": (3, 32, 32),
    "cifar100": (3, 32, 32),
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "mnist-demo": (1, 28, 28),
}


def _planned_images(job: _Job) -> tuple[TrainConfig, int, int]:
    """(config, training images, evaluation images) the job will process."""
    from superconv.data import DATASETS

    config = job.step.config
    test = DATASETS[config.dataset].test_size if config.dataset in DATASETS else 10_000
    if isinstance(job.step, RangeTest):
        points = config.iterations // job.step.eval_every
        per_eval = (
            job.step.eval_batches * config.eval_batch_size
            if job.step.eval_batches is not None
            else (config.val_size if job.step.evaluate_on == "val" else test)
        )
        return config, config.iterations * config.batch_size, points * per_eval
    evals = math.ceil(config.iterations / config.eval_every)
    iterations = config.iterations
    if isinstance(job.step, Fit):  # its range test and check, as fit plans them
        from superconv.fit import plan_budget

        budget = plan_budget(config.iterations)
        iterations += budget.range_iterations + budget.check_iterations
    return config, iterations * config.batch_size, evals * (test + config.val_size)


def _measure(config: TrainConfig, device: Any, cache: dict) -> tuple[float, float]:
    """Training and evaluation images/s of ``config``'s model on ``device`` (a few timed steps).

    Random inputs of the data set's shape (no data needed). On a CPU the batch is
    capped at 32 images (throughput per image is flat there); on a GPU the real
    batch is timed.
    """
    import torch
    import torch.nn.functional as F

    from superconv.data import DATASETS
    from superconv.models import build_model
    from superconv.train import make_optimizer

    # The extras' optimizers are timed as the built-in nearest them (a dry run needs no
    # extra installed): schedule-free SGD as SGD, Prodigy (Adam with a step-size estimate)
    # as Adam.
    stand_in = {"schedulefree_sgd": "sgd", "prodigy": "adam"}.get(config.optimizer)
    if stand_in is not None:
        config = config.replace(optimizer=stand_in)
    channels, height, width = _IMAGE_SHAPES.get(config.dataset, (3, 32, 32))
    classes = len(DATASETS[config.dataset].classes) if config.dataset in DATASETS else 10
    cpu = device.type == "cpu"
    batch = min(config.batch_size, 32) if cpu else config.batch_size
    eval_batch = min(config.eval_batch_size, 100) if cpu else config.eval_batch_size
    ghost = config.ghost_batch if config.ghost_batch and batch % config.ghost_batch == 0 else None
    key = (config.model, config.dataset, batch, eval_batch, ghost, config.optimizer, str(device))
    if key in cache:
        return cache[key]
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    dtype = None
    if config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"):
        dtype = torch.bfloat16
    model = build_model(
        config.model,
        classes,
        channels,
        bn_maf=config.bn_maf,
        bn_mode=config.bn_mode,
        ghost_batch=ghost,
        dropout=config.dropout,
        image_size=width,
    ).to(device=device, memory_format=fmt)
    optimizer = make_optimizer(config, model.parameters())
    for group in optimizer.param_groups:
        group["lr"] = 1e-3
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, height, width, generator=gen).to(device, memory_format=fmt)
    y = torch.randint(0, classes, (batch,), generator=gen).to(device)
    xe = torch.randn(eval_batch, channels, height, width, generator=gen).to(
        device, memory_format=fmt
    )

    def autocast():
        import contextlib

        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def train_step():
        with autocast():
            loss = F.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def eval_step():
        with torch.no_grad(), autocast():
            model(xe)

    rates = []
    model.train()
    for step, n in ((train_step, batch), (eval_step, eval_batch)):
        if step is eval_step:
            model.eval()
        for _ in range(2):  # warm-up: allocations, kernel selection (the first two differ)
            step()
        sync()
        repeats = 3 if cpu else 5
        t0 = time.perf_counter()
        for _ in range(repeats):
            step()
        sync()
        rates.append(repeats * n / max(time.perf_counter() - t0, 1e-9))
    cache[key] = (rates[0], rates[1])
    return cache[key]


def _estimate(jobs: Sequence[_Job], device: Any, cache: dict) -> float:
    total = 0.0
    for job in jobs:
        config, train_images, eval_images = _planned_images(job)
        train_rate, eval_rate = _measure(config, device, cache)
        total += train_images / train_rate + eval_images / eval_rate
    return total


def estimate_wall_time(
    exp_id: str, scale: str = "small", device: str = "auto", *, seeds: int = 3
) -> float:
    """Expected seconds to run the whole plan on ``device``: an estimate.

    Measured images/s of each model on this device (a few timed steps on random
    inputs, cached for this call only) times the planned training and evaluation
    images. Start-up and data loading are not counted.
    """
    from superconv.train import resolve_device

    plan = get_experiment(exp_id).plan(scale)
    jobs = _jobs(plan, _check_seeds(seeds), Path("."))
    return _estimate(jobs, resolve_device(device), {})


def _cpu_contention(device: Any, load: float | None = None) -> str:
    """A hint when other processes already load the CPU the runs will use ("" if not).

    With another process on a core, several torch threads per run wait on each other
    (measured here: a ResNet-20 step 6x slower with 2 threads than with 1 on a shared
    2-core machine), so the estimate above and the runs both suffer.
    """
    import torch

    threads = torch.get_num_threads()
    if getattr(device, "type", str(device)) != "cpu" or threads < 2:
        return ""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on every platform
            return ""
    cores = os.cpu_count() or 1
    if load + threads <= cores + 0.5:
        return ""
    return (
        f"the CPU is already busy (load average {load:.1f} on {cores} cores) and each run "
        f"uses {threads} threads: the estimate and the runs may be slow. "
        "Beside other work, --threads 1 (one lane per free core) is usually faster."
    )


# ----------------------------------------------------------------------------- reproduce
def reproduce(
    exp_id: str,
    *,
    seeds: int = 3,
    scale: str = "small",
    out: str | Path = "results",
    data_dir: str | None = None,
    device: str = "auto",
    dry_run: bool = False,
    progress: bool = True,
    threads: int | None = None,
    only: Sequence[str] | None = None,
) -> list[Path]:
    """Run experiment ``exp_id`` at ``scale`` for ``seeds`` seeds; write the report; return the run dirs.

    Layout: ``out/<exp_id>/<scale>/<row>/seed<k>/`` run directories, plus
    ``manifest.json`` (command line, commit, device, seeds, scale, times, tuned
    values and tuning cost) and ``report.md`` with its plots.

    Resumable: a run whose summary says finished (or diverged: a finding, kept)
    is skipped; a started run is resumed from its checkpoint; so a killed call
    continues where it stopped when called again. A run that diverges is
    recorded and the sweep goes on. Tuning steps run first: a :class:`Sweep`
    picks by validation accuracy, a :class:`RangeTest` records ``suggest()``.
    ``dry_run`` prints the plan and the time estimate and runs nothing.

    ``threads``: CPU threads for every run and the estimate (None: torch's
    choice); a background run on a shared machine is fastest with 1.
    ``only``: glob patterns of step names (e.g. ``["maf0.95-*", "maf0.999-*"]``):
    run just those rows, plus the sweeps and range tests they take values from;
    the report lists the others as not run yet.
    """
    import torch

    from superconv.train import check_threads

    if threads is not None:
        check_threads(threads)
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _reproduce(
            exp_id, seeds, scale, out, data_dir, device, dry_run, progress, threads, only
        )
    finally:
        torch.set_num_threads(saved_threads)


def select_steps(plan: Plan, only: Sequence[str] | None) -> tuple[Step, ...]:
    """The plan's steps whose names match a glob in ``only``, with the steps they take values from.

    ``only`` None or empty: all steps. A pattern that matches no step is an error
    naming the steps there are.
    """
    if not only:
        return plan.steps
    names = [s.name for s in plan.steps]
    chosen: set[str] = set()
    for pattern in only:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            hint = did_you_mean(pattern, names) or "."
            raise UserError(
                f"--only {pattern!r} matches no step of this plan{hint} Steps: {', '.join(names)}."
            )
        chosen.update(hits)
    by_name = {s.name: s for s in plan.steps}
    todo = list(chosen)
    while todo:  # add what the chosen rows are tuned from, recursively
        step = by_name[todo.pop()]
        for t in getattr(step, "tuned", ()):
            if t.source not in chosen:
                chosen.add(t.source)
                todo.append(t.source)
    return tuple(s for s in plan.steps if s.name in chosen)


def _reproduce(exp_id, seeds, scale, out, data_dir, device, dry_run, progress, threads, only):
    from superconv import train as train_mod
    from superconv.records import atomic_write_json, environment
    from superconv.report import write_report

    exp = get_experiment(exp_id)
    plan = exp.plan(scale)
    seeds = _check_seeds(seeds)
    root = Path(out) / exp.id / plan.scale
    dev = train_mod.resolve_device(device)
    steps = select_steps(plan, only)
    plan = dataclasses.replace(plan, steps=steps)
    jobs = _jobs(plan, seeds, root)
    status = {job.path: _status(job.path, job.step) for job in jobs}
    todo = [job for job in jobs if status[job.path] not in DONE]
    done = len(jobs) - len(todo)
    resuming = sum(status[j.path] == "resume" for j in todo)
    print(f"{exp.id}: {exp.title} [{plan.scale} scale, {seeds} seed(s)] -> {root}")
    print(
        f"  {len(jobs)} runs: {done} done, {resuming} to resume, {len(todo) - resuming} to start."
    )
    estimate = _estimate(todo, dev, {})
    env = environment(str(dev))
    where = env.get("gpu") or env.get("cpu") or str(dev)
    print(
        f"  Expected wall time on {dev} ({where}): about {format_duration(estimate)}. "
        "This is an estimate: images/s measured here over a few steps x the planned images; "
        "start-up and data loading are not counted."
    )
    busy = _cpu_contention(dev)
    if busy:
        print(f"  Note: {busy}")
    if dry_run:
        for job in jobs:
            print(f"  [{status[job.path]:>8}] {job.path}  {_describe(job.step)}")
        return [job.path for job in jobs]

    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / MANIFEST_FILE
    manifest = _read_manifest(manifest_path)
    invocation = {
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "call": (
            f"reproduce({exp.id!r}, seeds={seeds}, scale={plan.scale!r}, out={str(out)!r}, "
            f"data_dir={data_dir!r}, device={device!r}, threads={threads!r}"
            + (f", only={list(only)!r})" if only else ")")
        ),
        "commit": env["commit"],
        "device": str(dev),
        "device_name": where,
        "seeds": seeds,
        "started": _now(),
        "finished": None,
        "estimated_seconds": round(estimate, 1),
        "id": f"{os.getpid()}-{time.time_ns()}",  # finds this call's entry again at the end
    }
    manifest.update(
        experiment=exp.id, title=exp.title, paper_item=exp.paper_item, scale=plan.scale, seeds=seeds
    )
    manifest.setdefault("invocations", []).append(invocation)
    atomic_write_json(manifest_path, manifest)

    overrides = {"device": device, "data_dir": data_dir, "threads": threads}
    tuned: dict[str, dict[str, float]] = {}
    tuning: dict[str, dict[str, Any]] = {}
    count = 0
    elsewhere: list[Path] = []  # runs another process was running: left to it
    for step in plan.steps:
        step_jobs = [j for j in jobs if j.parent == step.name]
        values = tuned if isinstance(step, Train) else {}
        busy = []  # (job, label) of runs another process holds
        for job in step_jobs:
            count += 1
            label = f"[{count}/{len(jobs)}] {job.path.relative_to(root)}"
            if status[job.path] in DONE:
                _check_same(job, values, overrides)
                print(f"{label}: {status[job.path]} earlier, skipped")
                continue
            with run_claim(job.path) as mine:
                if mine:
                    _run_claimed(job, values, overrides, progress, label)
                else:
                    busy.append((job, label))
                    print(f"{label}: another process is running it, skipped here")
        if isinstance(step, (Sweep, RangeTest)):
            # This call needs every trial's result to pick a value: wait for the others.
            for job, label in busy:
                print(f"{label}: waiting for the other process to end it")
                with run_claim(job.path, wait=True):
                    _run_claimed(job, values, overrides, progress, label)
        else:
            elsewhere += [job.path for job, _ in busy]
        if isinstance(step, Sweep):
            tuned[step.name] = {"best": _sweep_pick(step, step_jobs)}
            tuning[step.name] = _cost(step_jobs)
            print(
                f"  {step.name}: picked {step.param} = {tuned[step.name]['best']:g} (validation accuracy)"
            )
        elif isinstance(step, RangeTest):
            # A test with no suggestion is a finding (the suggestion benchmark records such
            # curves on purpose); only a row tuned from it has to stop, and it says so.
            try:
                tuned[step.name] = _range_pick(step, step_jobs)
            except UserError as exc:
                print(f"  {step.name}: {exc}")
            tuning[step.name] = _cost(step_jobs)
    # Read again and merge: another call (say with other --only rows) may have written
    # the manifest meanwhile; this call adds its rows, values and end time to what is there.
    manifest = _read_manifest(manifest_path)
    manifest["tuned"] = {**manifest.get("tuned", {}), **tuned}
    manifest["tuning"] = {**manifest.get("tuning", {}), **tuning}
    # Append only the new runs: keeping the order already there stops each call from
    # reshuffling the committed manifest (a diff with no content).
    known = manifest.get("runs", [])
    runs = [str(job.path.relative_to(root)) for job in jobs]
    manifest["runs"] = known + [r for r in runs if r not in known]
    invocation["finished"] = _now()
    calls = manifest.setdefault("invocations", [])
    mine = [i for i, c in enumerate(calls) if c.get("id") == invocation["id"]]
    if mine:
        calls[mine[0]] = invocation
    else:
        calls.append(invocation)
    atomic_write_json(manifest_path, manifest)
    report = write_report(root)
    print(f"Report: {report}")
    if elsewhere:
        print(
            f"  {len(elsewhere)} run(s) were left to the other process running them: "
            + ", ".join(str(p.relative_to(root)) for p in elsewhere)
        )
    return [job.path for job in jobs]


@contextlib.contextmanager
def run_claim(path: Path, *, wait: bool = False) -> Iterator[bool]:
    """Claim the run directory ``path`` for this process: yields True if claimed.

    Several ``reproduce`` calls may work on one results folder at once (the README
    splits rows between background processes with ``--only``, and rows share their
    sweeps), so each run is claimed with :func:`superconv.records.claim`, an OS file
    lock on ``.<seedK>.lock`` beside it holding the claimer's pid. A claimed run is
    skipped by the others (``wait=False``) or waited for (``wait=True``). The OS drops
    the lock when its process ends, even on SIGKILL, so a killed run is never left
    locked. The lock file stays, emptied (deleting it would race with another process
    opening it). (``train`` itself locks the run folder with ``RUN/.lock``.)
    """
    from superconv.records import claim

    path.parent.mkdir(parents=True, exist_ok=True)
    with claim(path.parent / f".{path.name}.lock", wait=wait) as mine:
        yield mine


def _run_claimed(job: _Job, values, overrides, progress: bool, label: str) -> None:
    """Run a claimed job unless another process ended it since this call looked."""
    state = _status(job.path, job.step)
    if state in DONE:
        _check_same(job, values, overrides)
        print(f"{label}: {state} by another process, skipped")
        return
    _run(job, values, overrides, progress, label, resume=state == "resume")


def _describe(step: Step) -> str:
    c = step.config
    what = f"{c.model} on {c.dataset}, batch {c.batch_size}, {c.iterations} it"
    if isinstance(step, RangeTest):
        return f"range test {step.start_lr:g} -> {step.end_lr:g} ({what}, evaluated on {step.evaluate_on})"
    if isinstance(step, Fit):
        return f"superconv fit: range test + check + the chosen 1cycle ({what} + tuning)"
    params = ", ".join(f"{k}={v}" for k, v in dict(c.policy_params).items())
    tuned = "".join(f", {t.param} from {t.source}" for t in getattr(step, "tuned", ()))
    optimizer = "" if c.optimizer == "sgd" else f", {c.optimizer}"
    return f"{c.policy}({params}{tuned}){optimizer}, {what}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _read_manifest(path: Path) -> dict[str, Any]:
    import json

    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UserError(
            f"{path} is unreadable ({exc}); delete it (the run directories are kept) and run again."
        ) from exc


def _config_for(job: _Job, values: Mapping[str, Any], overrides: Mapping[str, Any]) -> TrainConfig:
    config = job.step.resolve(values) if isinstance(job.step, Train) else job.step.config
    return config.replace(seed=job.seed, **overrides)


_IGNORED = (
    "data_dir",
    "device",
    "threads",
    "policy_built",
)  # do not change what a finished run means


def _check_same(job: _Job, values, overrides) -> None:
    """Refuse to count a finished run whose config is not the one planned now."""
    import json

    from superconv.records import RunDir

    config = _config_for(job, values, overrides).to_dict()
    if isinstance(job.step, Fit):  # the config fit_run recorded in fit.json's settings
        from superconv.fit import FIT_FILE

        fit = json.loads((job.path / FIT_FILE).read_text(encoding="utf-8"))
        stored = dict(fit.get("settings", {}).get("train_config") or {})
    else:
        stored = json.loads(RunDir(job.path).config_path.read_text(encoding="utf-8"))
    stored.pop("range_test", None)
    planned = json.loads(json.dumps(config))  # JSON round trip: tuples -> lists
    diff = sorted(
        k
        for k in set(stored) | set(planned)
        if k not in _IGNORED and stored.get(k) != planned.get(k)
    )
    if diff:
        raise UserError(
            f"{job.path} holds a finished run of a different plan (differs in: {', '.join(diff)}). "
            "Use another --out folder, or delete that run directory to rerun it."
        )


def _run(job: _Job, values, overrides, progress: bool, label: str, *, resume: bool) -> None:
    from superconv import train as train_mod

    config = _config_for(job, values, overrides)
    verb = "resuming" if resume else "starting"
    if isinstance(job.step, RangeTest):
        print(f"{label}: {verb} range test ({config.iterations} it)")
        result = _run_range_test(job.step, config, job.path, progress)
        print(f"{label}: done ({result['stop_reason']}); suggested max_lr {result['max_lr']}")
        return
    if isinstance(job.step, Fit):
        _run_fit(job.step, config, job.path, progress, label, resume=resume)
        return
    print(f"{label}: {verb} training ({config.iterations} it)")
    t0 = time.perf_counter()
    try:
        result = train_mod.train(config, job.path, resume=resume, progress=progress)
    except DivergenceError as exc:
        print(f"{label}: DIVERGED at iteration {exc.step} (lr {exc.lr:.4g}); recorded, continuing")
        return
    acc = result.summary.get("final_test_acc")
    shown = "n/a" if acc is None else f"{acc:.2f}%"
    print(f"{label}: finished, test acc {shown} ({format_duration(time.perf_counter() - t0)})")


def _run_fit(
    step: Fit, config: TrainConfig, path: Path, progress: bool, label: str, *, resume: bool
) -> None:
    """One seed of a :class:`Fit` row: :func:`superconv.fit.fit_run` into ``path``."""
    from superconv.fit import fit_run

    print(f"{label}: {'resuming' if resume else 'starting'} fit ({config.iterations} it + tuning)")
    t0 = time.perf_counter()
    try:
        result = fit_run(
            config,
            path,
            evaluations=step.evaluations,
            resume=resume,
            progress=progress,
            echo=lambda line: print(f"  {line}"),
        )
    except DivergenceError as exc:  # recorded in fit.json: a finding, as a diverged row
        print(f"{label}: DIVERGED ({exc}); recorded, continuing")
        return
    acc = result.summary.get("final_test_acc")
    shown = "n/a" if acc is None else f"{acc:.2f}%"
    print(
        f"{label}: finished, max_lr {result.max_lr:.4g}, test acc {shown} "
        f"({format_duration(time.perf_counter() - t0)} with tuning)"
    )


def _run_range_test(step: RangeTest, config: TrainConfig, path: Path, progress: bool) -> dict:
    """Run one LR range test into ``path``: config.json, env.json, range_test.json, plot, summary."""
    import torch.nn.functional as F

    from superconv.plots import plot_range_test
    from superconv.range_test import range_test
    from superconv.records import RunDir, environment
    from superconv.suggest import suggest
    from superconv.train import build

    if step.evaluate_on == "val" and not config.val_size:
        raise UserError(
            f"range test {step.name!r} evaluates on 'val' but its config has val_size 0."
        )
    pieces = build(config)
    record = {**config.to_dict(), "range_test": step.record()}
    run = RunDir.open(path, record, environment(pieces.device, config.seed))
    model = pieces.module if getattr(pieces, "module", None) is not None else pieces.model
    t0 = time.perf_counter()
    curve = range_test(
        model,
        pieces.optimizer,
        F.cross_entropy,
        pieces.loader,
        pieces.eval_loaders[step.evaluate_on],
        start_lr=step.start_lr,
        end_lr=step.end_lr,
        num_steps=config.iterations,
        mode=step.mode,
        eval_every=step.eval_every,
        eval_batches=step.eval_batches,
        autocast_dtype=pieces.autocast_dtype,
        device=pieces.device,
        progress=progress,
    )
    seconds = time.perf_counter() - t0  # the test itself: its cost in the report
    try:
        suggestion = suggest(curve).to_dict()
        why_none = None
    except UserError as exc:  # too few usable points (e.g. diverged at once): recorded, not fatal
        suggestion, why_none = None, str(exc)
    run.write_json(
        RANGE_TEST_FILE,
        {
            "curve": curve.to_dict(),
            "suggestion": suggestion,
            "no_suggestion": why_none,
            "evaluate_on": step.evaluate_on,
        },
    )
    from superconv.demo import _ended, _wrap
    from superconv.suggest import suggest_all

    shown = None if suggestion is None else suggestion_from_dict(suggestion)
    marks = {
        name: o.max_lr
        for name, o in suggest_all(curve).items()
        if not isinstance(o, str) and (shown is None or name != shown.rule)
    }
    plot_range_test(
        curve,
        shown,
        path=run.path / "range_test.png",
        title=_wrap(
            f"{step.name}: LR range test, evaluated on the {step.evaluate_on} set ({_ended(curve)})"
        ),
        eval_name=step.evaluate_on,
        marks=marks,
    )
    summary = {
        "status": "finished",
        "kind": "range_test",
        "iterations": len(curve.losses),
        "num_steps": config.iterations,
        "stop_reason": curve.stop_reason,
        "max_lr": None if suggestion is None else suggestion["max_lr"],
        "seed": config.seed,
        "model": config.model,
        "wall_time": seconds,
    }
    run.write_summary(summary)
    return summary


def _sweep_pick(step: Sweep, jobs: Sequence[_Job]) -> float:
    from superconv.records import RunDir

    scores: dict[float, list[float]] = {v: [] for v in step.values}
    by_name = {step.trial(v).name: v for v in step.values}
    for job in jobs:
        summary = RunDir(job.path).read_summary() or {}
        acc = summary.get("final_val_acc")
        if summary.get("status") == "finished" and acc is not None:
            scores[by_name[job.step.name]].append(float(acc))
    return pick_best(scores)


def _range_pick(step: RangeTest, jobs: Sequence[_Job]) -> dict[str, float]:
    import json

    data = json.loads((jobs[0].path / RANGE_TEST_FILE).read_text(encoding="utf-8"))
    if step.rule is not None:
        from superconv.range_test import RangeTestCurve
        from superconv.suggest import suggest

        name, constants = step.rule
        curve = RangeTestCurve.from_dict(data["curve"])
        try:
            return suggestion_values(suggest(curve, name, step.budget, **dict(constants)).to_dict())
        except UserError as exc:
            raise UserError(f"range test {step.name!r}, rule {name!r}: {exc}") from exc
    if data.get("suggestion") is None:
        raise UserError(
            f"range test {step.name!r} gave no suggestion ({data.get('no_suggestion')}); "
            "lower end_lr or lengthen the test."
        )
    return suggestion_values(data["suggestion"])


def _cost(jobs: Sequence[_Job]) -> dict[str, Any]:
    from superconv.report import read_run, tuning_cost

    return tuning_cost([read_run(j.path) for j in jobs])
