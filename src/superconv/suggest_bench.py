"""The suggestion benchmark: tasks whose best 1cycle peak is known from a sweep.

Every rule that turns a range-test curve into a ``max_lr`` is a claim, and this
module is where it is scored. Each :class:`Task` is a model, data set, batch
and budget with

- a 1cycle ``max_lr`` sweep on a factor-2 grid, all in the one cycle shape of
  :data:`superconv.suggest.CYCLE`, scored on validation accuracy (held out of
  training; the test accuracy is recorded too, never used);
- LR range tests (exp and linear ramps, three seeds, two lengths given as
  fractions of the budget), each evaluating at most 2,000 validation images,
  stored with per-step train losses so that any rule can be scored offline.

The runs are planned as one experiment, ``suggest``, and run by
:func:`superconv.runner.reproduce` (resumable, skips what is committed,
one lock per run): ``superconv reproduce suggest --scale reduced --only 't1-*'``.
Sweep points that earlier experiments already trained in the same shape (the
fair comparison's ResNet-20 runs) are *reused*, not rerun: each task names the
run folders it may take them from, and :func:`sweep_points` checks that each
one's recorded schedule and config match the task's before counting it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from superconv.config import TrainConfig
from superconv.errors import UserError
from superconv.plan import as_rule, rule_label
from superconv.suggest import CYCLE, RAMPS, RANGE_EVAL_IMAGES

__all__ = [
    "CHANCE_MARGIN",
    "RANGE_FRACTIONS",
    "RangeRamp",
    "SweepPoint",
    "Task",
    "range_test_runs",
    "sweep_points",
    "tasks",
]

# A run "diverged" when its status says so or its final validation accuracy is at
# most chance + 5 points: a batch-norm net can collapse to chance without a NaN
# (the fair comparison's sweep-multistep-lr0.8 did).
CHANCE_MARGIN = 5.0
# Range-test lengths as fractions of the task's training budget (with a floor in
# steps, so a short budget still gets a readable curve): the benchmark records
# both, to choose the default length from evidence. `fit` caps its range test at
# 10% of the budget by default.
RANGE_FRACTIONS = ((0.04, 30), (0.12, 100))


@dataclass(frozen=True)
class RangeRamp:
    """One ramp of a task's range tests: ``mode`` from ``start_lr`` to ``end_lr``."""

    mode: str
    start_lr: float
    end_lr: float


SGD_RAMPS = tuple(RangeRamp(mode, *lrs) for mode, lrs in RAMPS["sgd"].items())
ADAM_RAMPS = tuple(RangeRamp(mode, *lrs) for mode, lrs in RAMPS["adaptive"].items())


@dataclass(frozen=True)
class Task:
    """One benchmark task: a training config (max_lr left to the sweep) and its sweep grid.

    ``config`` is the 1cycle run at ``CYCLE``'s shape without ``max_lr``.
    ``grid``: the max_lr values this benchmark trains (1 seed, or the count in
    ``seeds``: 2 at the best point and its neighbours). ``reuse``: globs, relative
    to the results folder, of run folders trained elsewhere in the same shape.
    ``classes``: for the chance level. ``short_extra``: reused grid points the
    first-rung runs of fit's check are trained at too (:attr:`short_grid`).
    """

    name: str
    title: str
    config: TrainConfig
    grid: tuple[float, ...]
    seeds: tuple[tuple[float, int | tuple[int, ...]], ...] = ()
    reuse: tuple[str, ...] = ()
    ramps: tuple[RangeRamp, ...] = SGD_RAMPS
    classes: int = 10
    note: str = ""
    short_extra: tuple[float, ...] = ()

    @property
    def short_grid(self) -> tuple[float, ...]:
        """The max_lr values of the first-rung runs: the grid and ``short_extra``."""
        return tuple(sorted(set(self.grid) | set(self.short_extra)))

    @property
    def budget(self) -> int:
        """The training budget in iterations."""
        return self.config.iterations

    @property
    def chance(self) -> float:
        return 100.0 / self.classes

    def trial_config(self, max_lr: float) -> TrainConfig:
        return self.config.replace(policy_params=CYCLE.policy_params(max_lr))

    def range_lengths(self) -> tuple[int, ...]:
        """The two range-test lengths in steps (fractions of the budget, with floors)."""
        return tuple(max(floor, math.ceil(f * self.budget)) for f, floor in RANGE_FRACTIONS)

    @property
    def check_steps(self) -> int:
        """The first rung of ``superconv fit``'s check at this budget (its default split);
        0 when the budget is too small for a check."""
        from superconv.fit import MIN_RANGE_STEPS, RANGE_CAP, plan_budget

        # fit's split when these runs were recorded: a range test of 10% of the budget (at
        # most 300 steps). Its default test is shorter now, so its first rung is up to a
        # few percent longer; frozen here so that the recorded runs keep their identity.
        steps = min(300, int(RANGE_CAP * self.budget))
        if steps < MIN_RANGE_STEPS:
            return 0
        return plan_budget(self.budget, range_steps=steps).rung_first

    def check_config(self, max_lr: float) -> TrainConfig:
        """A fresh 1cycle of the first rung's length at ``max_lr``: what the check trains."""
        return self.trial_config(max_lr).replace(**_cadence(self.check_steps, 4))

    def range_config(self, steps: int) -> TrainConfig:
        """The range test's config: the task's model, data, batch and optimizer for ``steps``."""
        return self.config.replace(
            iterations=steps,
            eval_every=steps,
            checkpoint_every=steps,
            policy="constant",
            policy_params={"lr": 0.0},
        )


def _cadence(iterations: int, evals: int) -> dict[str, int]:
    every = max(1, math.ceil(iterations / evals))
    return {"iterations": iterations, "eval_every": every, "checkpoint_every": every}


def _lenet(dataset: str, iterations: int, **kw: Any) -> TrainConfig:
    # Caffe's LeNet solver (as the mnist-lenet experiment): batch 64, momentum 0.9,
    # weight decay 5e-4, pixels / 256, no augmentation.
    base = TrainConfig(
        model="lenet",
        dataset=dataset,
        batch_size=64,
        momentum=0.9,
        weight_decay=5e-4,
        flip=False,
        normalize="unit",
        eval_batch_size=1000,
        policy="one_cycle",
        policy_params={},
        val_size=5_000 if dataset == "mnist" else 1_000,
    )
    return base.replace(**{**_cadence(iterations, 6), **kw})


def _cifar(model: str, iterations: int, evals: int = 6, **kw: Any) -> TrainConfig:
    # The fair comparison's setting (superconv.paper.project.fair_comparison): flip + pad-4 crop,
    # momentum 0.9 (cycled 0.95-0.85), weight decay 1e-4, 5,000 validation images.
    base = TrainConfig(
        model=model,
        batch_size=128,
        momentum=0.9,
        weight_decay=1e-4,
        crop_pad=4,
        val_size=5_000,
        eval_batch_size=1000,
        policy="one_cycle",
        policy_params={},
    )
    return base.replace(**{**_cadence(iterations, evals), **kw})


def _epochs(epochs: float, images: int, batch: int) -> int:
    return math.ceil(epochs * images / batch)


FAIR = "fair-comparison/reduced"


def tasks() -> tuple[Task, ...]:
    # long: the benchmark's table of nine tasks, one entry each: data, not logic.
    """The benchmark's tasks (the issue's table), in order; built on call."""
    mnist_train = 60_000 - 5_000
    cifar_train = 50_000 - 5_000
    five = _epochs(5, cifar_train, 128)  # 1,758: the fair comparison's 5-epoch budget
    fifteen = _epochs(15, cifar_train, 128)  # 5,274
    lenet_grid = (0.0125, 0.025, 0.05, 0.1, 0.2, 0.4)
    # Second seeds at the best point and its neighbours, set once the first pass had run
    # (results/suggest/score.md, 2026-12-03): LeNet's best was 0.1 on t1-t3 (0.2 diverged).
    lenet_seeds = ((0.05, 2), (0.1, 2), (0.2, 2))
    return (
        Task(
            "t1-lenet-2ep",
            "LeNet, MNIST, batch 64, 2 epochs (short, no BN)",
            _lenet("mnist", _epochs(2, mnist_train, 64)),
            lenet_grid,
            lenet_seeds,
        ),
        Task(
            "t2-lenet-12ep",
            "LeNet, MNIST, batch 64, 12 epochs",
            _lenet("mnist", _epochs(12, mnist_train, 64)),
            lenet_grid,
            lenet_seeds,
            note="mnist-lenet's sweep used div 25 (start at max/25): another shape, not reused.",
        ),
        Task(
            "t3-lenet-demo",
            "LeNet, mnist-demo, batch 64, ~5 epochs (what CI can rerun)",
            _lenet("mnist-demo", _epochs(5, 9_000, 64)),
            lenet_grid + (0.8,),
            lenet_seeds,
        ),
        Task(
            "t4-lenet-adamw-2ep",
            "LeNet + AdamW, MNIST, batch 64, 2 epochs (an adaptive optimizer)",
            _lenet("mnist", _epochs(2, mnist_train, 64), optimizer="adamw", weight_decay=1e-2),
            (2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2),
            ((1e-3, 2), (2e-3, 2), (4e-3, 2)),  # best 0.002 in the first pass
            ramps=ADAM_RAMPS,
            note="AdamW's decoupled weight decay 1e-2 (torch's default); beta1 cycles 0.95-0.85.",
        ),
        Task(
            "t5-resnet20-5ep",
            "ResNet-20, CIFAR-10, batch 128, 5 epochs",
            _cifar("resnet20", five, evals=12),
            (0.05, 0.1, 0.4),
            # 0.2 (the best) has 3 seeds in the fair comparison, 0.1 and 0.4 only its seed 0:
            # their seed 1 is trained here
            ((0.1, (1,)), (0.4, (1,))),
            reuse=(
                f"{FAIR}/sweep-onecycle-max_lr*/seed*",
                f"{FAIR}/onecycle_swept-5ep/seed*",
                f"{FAIR}/onecycle-5ep/seed*",
            ),
            note="the fair comparison's 1cycle sweep (0.1-1.6) and rows are reused; 0.05 and "
            "second seeds at 0.1 and 0.4 added.",
            # the check's first rung at the reused points too: without 0.2, the best, the
            # short runs' ranking was scored on 0.05/0.1/0.4 alone (score.md, 2026-12-03)
            short_extra=(0.2, 0.8, 1.6),
        ),
        Task(
            "t6-resnet20-15ep",
            "ResNet-20, CIFAR-10, batch 128, 15 epochs",
            _cifar("resnet20", fifteen, evals=12),
            (0.1, 0.4, 0.8),
            # the best (0.4) and its upper neighbour: a second seed, set once the first pass
            # had run (0.2 has 3 seeds in the fair comparison)
            ((0.4, 2), (0.8, 2)),
            reuse=(f"{FAIR}/onecycle_swept-15ep/seed*", f"{FAIR}/onecycle-15ep/seed*"),
            note="0.2 and 1.59 (3 seeds each) are the fair comparison's 15-epoch 1cycle rows.",
            short_extra=(0.2,),
        ),
        Task(
            "t7-resnet8-3ep",
            "ResNet-8, CIFAR-10, batch 128, 3 epochs (shallow)",
            _cifar("resnet8", _epochs(3, cifar_train, 128)),
            # 3.2 and 6.4 added once the first pass left the top unbracketed (1.6 scored
            # within a point of the best, 0.4)
            (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4),
            ((0.2, 2), (0.4, 2), (0.8, 2)),
        ),
        Task(
            "t8-resnet20-10k",
            "ResNet-20, CIFAR-10 10k images, batch 128, 1,758 iterations (limited data)",
            _cifar("resnet20", five, evals=12, train_subset=10_000),
            (0.05, 0.1, 0.4, 0.8),
            ((0.4, 2), (0.8, 2)),  # as t6: the best and its upper neighbour (0.2 has 3)
            reuse=(f"{FAIR}/onecycle_swept-5ep-10k/seed*", f"{FAIR}/onecycle-5ep-10k/seed*"),
            note="0.2 and 1.59 (3 seeds each) are the fair comparison's 10k rows.",
            short_extra=(0.2,),
        ),
        Task(
            "t9-resnet20-b512",
            "ResNet-20, CIFAR-10, batch 512, 5 epochs (larger batch)",
            _cifar("resnet20", _epochs(5, cifar_train, 512), batch_size=512),
            (0.1, 0.2, 0.4, 0.8, 1.6, 3.2),
            ((0.2, 2), (0.4, 2), (0.8, 2)),  # the best (0.4) and its neighbours
        ),
    )


def get_task(name: str) -> Task:
    by_name = {t.name: t for t in tasks()}
    if name not in by_name:
        raise UserError(f"no benchmark task {name!r}; tasks: {', '.join(by_name)}.")
    return by_name[name]


# ----------------------------------------------------------------------------- the plan
def plan_steps(small: bool = False) -> tuple[Any, ...]:
    """The runner's steps: per task, its sweep and its range tests (exp/linear x 2 lengths).

    ``small``: only the mnist-demo task, at a tenth of its grid's cost (the CI-sized plan).
    """
    from superconv.plan import RangeTest, Sweep, Train, Tuned

    steps: list[Any] = []
    chosen = [t for t in tasks() if not small or t.name.startswith("t3-")]
    for task in chosen:
        if small:
            task = _shrunk(task)
        steps.append(
            Sweep(
                f"{task.name}-sweep",
                task.config.replace(policy_params=CYCLE.policy_params(task.grid[0])),
                "max_lr",
                task.grid,
                seeds=1,
                seeds_by_value=task.seeds,
                note=task.title,
            )
        )
        # fit's check, measured: every grid point trained as a first-rung run (does the
        # short run rank the LRs as the full budget does? the fit issue's item 5)
        if task.check_steps:
            steps.append(
                Sweep(
                    f"{task.name}-short",
                    task.check_config(task.short_grid[0]),
                    "max_lr",
                    task.short_grid,
                    seeds=1,
                    note=f"{task.title}: first rung of fit's check ({task.check_steps} it)",
                )
            )
        eval_batches = max(1, RANGE_EVAL_IMAGES // task.config.eval_batch_size)
        for ramp in task.ramps:
            for length in task.range_lengths():
                steps.append(
                    RangeTest(
                        f"{task.name}-rt-{ramp.mode}-{length}",
                        task.range_config(length),
                        start_lr=ramp.start_lr,
                        end_lr=ramp.end_lr,
                        mode=ramp.mode,
                        evaluate_on="val",
                        eval_points=min(20, length // 3),
                        eval_batches=eval_batches,
                        note=f"{task.title}: {ramp.mode} ramp over {length} steps",
                    )
                )
        confirm = confirm_source(task)
        if confirm is not None:
            # Train at each confirmed rule's suggestion, read from seed 0's test of the
            # default ramp and length: 2 seeds per task (the confirmation).
            for rule in confirmed_rules():
                steps.append(
                    Train(
                        confirm_name(task, rule),
                        task.config.replace(policy_params=CYCLE.policy_params(task.grid[0])),
                        tuned=(Tuned("max_lr", confirm, "max_lr", rule, task.budget),),
                        seeds=2,
                        note=f"{task.title}: 1cycle at rule {rule_label(rule)}'s suggestion",
                    )
                )
    return tuple(steps)


# Default rules superconv shipped before the current one (superconv.suggest.DEFAULT): their
# confirmation rows stay in the plan, so what was measured of each stays reproducible.
PAST_DEFAULTS: tuple[Mapping[str, Any], ...] = (
    {"rule": "loss_edge", "fraction": 0.125, "budget_power": 0.5},  # 2026-12-02 to 12-03
)


# Rules the scorer's procedure chooses on all tasks (results/suggest/score.md, "Chosen on
# all tasks, within the cap") that the library has not adopted yet. A choice that moves
# with new runs is trained first, as the default was (2 seeds per task at its suggestion
# from the same seed-0 range test), and replaces superconv.suggest.DEFAULT only if its
# confirmation rows meet every target on at least as many tasks as the default's do, with
# no more accuracy lost in total: a criterion set before its rows ran, so that one seed's
# noise cannot flip the default back and forth.
CANDIDATE_DEFAULTS: tuple[Mapping[str, Any], ...] = (
    # 2026-12-04: with second seeds on t2, t5, t6, t8 and t9 the choice moved from
    # budget_power 1/4 to no budget term (in-sample 15 against 13 of 27 curves met).
    # Judged 2026-12-04 on all 9 tasks: every target on 4 (the default: 4), 5.25 points
    # lost in total (the default: 3.83): it fails, the default stays. Kept here so that
    # its rows stay planned and its verdict stays in score.md.
    {"rule": "loss_edge", "fraction": 1 / 6},
)


def confirmed_rules() -> list[tuple[str, tuple[tuple[str, float], ...]]]:
    """Every rule the benchmark confirms by training: the past defaults, the current one,
    then the candidates (:data:`CANDIDATE_DEFAULTS`)."""
    from superconv.suggest import DEFAULT

    rules = [as_rule(d) for d in (*PAST_DEFAULTS, DEFAULT, *CANDIDATE_DEFAULTS)]
    return list(dict.fromkeys(rules))


def confirmation_order() -> list[tuple[str, tuple[tuple[str, float], ...]]]:
    """:func:`confirmed_rules` as reports list them: the current default, the candidates,
    then the past defaults, newest first."""
    from superconv.suggest import DEFAULT

    rules = [as_rule(DEFAULT), *(as_rule(d) for d in CANDIDATE_DEFAULTS)]
    rules += [as_rule(d) for d in reversed(PAST_DEFAULTS)]
    return list(dict.fromkeys(rules))


def confirm_name(task: Task, rule: tuple[str, tuple[tuple[str, float], ...]]) -> str:
    """The confirmation row of ``task`` for ``rule``: ``<task>-confirm-<rule label>``."""
    return f"{task.name}-confirm-{rule_label(rule)}"


def _default_length(task: Task) -> int | None:
    """The range-test length (steps) of :data:`superconv.suggest.DEFAULT_TEST` for ``task``."""
    from superconv.suggest import DEFAULT_TEST

    if DEFAULT_TEST is None:
        return None
    return max(int(DEFAULT_TEST["min_steps"]), math.ceil(DEFAULT_TEST["fraction"] * task.budget))


def confirm_source(task: Task) -> str | None:
    """The range-test step whose seed-0 curve the confirmation rows read (None: no default yet)."""
    from superconv.suggest import DEFAULT_TEST

    length = _default_length(task)
    if length is None or length not in task.range_lengths():
        return None
    return f"{task.name}-rt-{DEFAULT_TEST['mode']}-{length}"


def _shrunk(task: Task) -> Task:
    config = task.config.replace(**_cadence(max(20, task.budget // 10), 2))
    return Task(
        task.name, task.title + " (small: a tenth)", config, task.grid[1:4], ramps=task.ramps
    )


# ----------------------------------------------------------------------------- reading results
@dataclass(frozen=True)
class SweepPoint:
    """One finished (or diverged) training run of a task's sweep."""

    max_lr: float
    seed: int
    val_acc: float | None
    test_acc: float | None
    diverged: bool
    path: str


_RUNTIME_KEYS = ("data_dir", "device", "threads", "seed", "policy_params", "policy_built")


def _same_shape(task: Task, config: Mapping[str, Any]) -> float | None:
    """``max_lr`` of a recorded run if it is ``task``'s run in the same cycle shape, else None."""
    params = config.get("policy_params") or {}
    if config.get("policy") != "one_cycle" or "max_lr" not in params:
        return None
    max_lr = float(params["max_lr"])
    planned = json.loads(json.dumps(task.trial_config(max_lr).to_dict()))
    for key in set(planned) | set(config):
        if key not in _RUNTIME_KEYS and planned.get(key) != config.get(key):
            return None
    built = config.get("policy_built")
    if built is not None and not CYCLE.matches(built):
        return None
    return max_lr


def sweep_points(task: Task, results: str | Path) -> list[SweepPoint]:
    """Every run of ``task``'s sweep under ``results``: its own and the reused ones, checked.

    A reused run counts only when its config is the task's (same model, data,
    batch, budget, optimizer, augmentation, evaluation cadence) and its recorded
    schedule has the benchmark's cycle shape; duplicates of one (max_lr, seed)
    are counted once (a sweep's seed 0 and a row's seed 0 can be the same run).
    """
    root = Path(results)
    own = root / "suggest" / "reduced"
    patterns = [f"{task.name}-sweep-max_lr*/seed*"]
    folders = [p for pat in patterns for p in sorted(own.glob(pat))]
    folders += [p for pat in task.reuse for p in sorted(root.glob(pat))]
    points: dict[tuple[float, int], SweepPoint] = {}
    for folder in folders:
        point = _read_point(task, folder, root)
        if point is not None:
            points.setdefault((round(point.max_lr, 12), point.seed), point)
    return sorted(points.values(), key=lambda p: (p.max_lr, p.seed))


def check_ranking(task: Task, grid: Grid, results: str | Path) -> dict[str, Any] | None:
    """How the first rung of fit's check ranks the grid against the full budget.

    Reads the ended ``<task>-short-max_lr*`` runs (a diverged or collapsed one
    scores as chance, as in the full grid) and compares them with the full
    budget's means (:func:`superconv.fit.ranking_agreement`); adds whether the
    short runs' pick is within 2x of the full budget's best. None: fewer than 2.
    """
    from superconv.fit import ranking_agreement

    short = short_scores(task, results)
    full = {round(lr, 12): m for lr, m in zip(grid.lrs, grid.means)}
    if len([lr for lr in short if lr in full]) < 2:
        return None
    out = ranking_agreement(short, full)
    out["within_2x"] = 0.5 <= out["short_pick"] / grid.best_lr <= 2.0
    out["short"] = short
    out["steps"] = task.check_steps
    return out


def short_scores(task: Task, results: str | Path) -> dict[float, float]:
    """max_lr -> validation accuracy of the task's ended first-rung runs (seed 0); a
    diverged or collapsed one scores as chance, as in the full grid."""
    root = Path(results) / "suggest" / "reduced"
    short: dict[float, float] = {}
    for folder in sorted(root.glob(f"{task.name}-short-max_lr*/seed0")):
        # a first-rung run is shorter than the task: its max_lr read as recorded
        p = _read_point(task, folder, root, max_lr_of=_recorded_max_lr)
        if p is not None:
            short[round(p.max_lr, 12)] = task.chance if p.diverged else float(p.val_acc)
    return dict(sorted(short.items()))


def confirm_points(task: Task, results: str | Path, rule: Any = None) -> list[SweepPoint]:
    """The ended confirmation runs of ``task``: trained at ``rule``'s suggestion (None:
    the current default's)."""
    from superconv.suggest import DEFAULT

    root = Path(results)
    name = confirm_name(task, rule or as_rule(DEFAULT))
    folders = sorted((root / "suggest" / "reduced").glob(f"{name}/seed*"))
    return [p for p in (_read_point(task, f, root) for f in folders) if p is not None]


def _recorded_max_lr(task: Task, config: Mapping[str, Any]) -> float | None:
    return float(config["policy_params"]["max_lr"])


def _read_point(
    task: Task, folder: Path, root: Path, max_lr_of: Any = None
) -> SweepPoint | None:
    """An ended run as a point; ``max_lr_of(task, config)`` (default: the run's max_lr if
    it is the task's config in the benchmark's cycle, else None) reads its peak LR."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not ended (no summary) or unreadable: not a point yet
    if summary.get("status") not in ("finished", "diverged"):
        return None
    max_lr = (max_lr_of or _same_shape)(task, config)
    if max_lr is None:
        return None
    val, test = summary.get("final_val_acc"), summary.get("final_test_acc")
    diverged = (
        summary.get("status") == "diverged"
        or val is None
        or float(val) <= task.chance + CHANCE_MARGIN
    )
    return SweepPoint(
        max_lr,
        int(config.get("seed", 0)),
        None if val is None else float(val),
        None if test is None else float(test),
        diverged,
        str(folder.relative_to(root)),
    )


def range_test_runs(task: Task, results: str | Path) -> list[dict[str, Any]]:
    """The task's recorded range tests: ``{"mode", "steps", "seed", "curve", "path"}`` each."""
    from superconv.runs import RANGE_TEST_FILE

    root = Path(results)
    out = []
    for folder in sorted((root / "suggest" / "reduced").glob(f"{task.name}-rt-*/seed*")):
        try:
            data = json.loads((folder / RANGE_TEST_FILE).read_text(encoding="utf-8"))
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        record = config.get("range_test", {})
        out.append(
            {
                "mode": record.get("mode", data["curve"].get("mode")),
                "steps": int(record.get("num_steps", data["curve"].get("num_steps", 0))),
                "seed": int(config.get("seed", 0)),
                "curve": data["curve"],
                "path": str(folder.relative_to(root)),
            }
        )
    return out


def best_point(points: Sequence[SweepPoint]) -> tuple[float, float] | None:
    """(max_lr, mean validation accuracy) of the best grid value; diverged runs score as chance."""
    by_lr: dict[float, list[float]] = {}
    for p in points:
        by_lr.setdefault(p.max_lr, []).append(p.val_acc if not p.diverged else math.nan)
    means = {lr: _mean_or_nan(v) for lr, v in by_lr.items()}
    finite = {lr: m for lr, m in means.items() if math.isfinite(m)}
    if not finite:
        return None
    lr = max(finite, key=finite.get)
    return lr, finite[lr]


def _mean_or_nan(values: Sequence[float]) -> float:
    return math.nan if any(not math.isfinite(v) for v in values) else sum(values) / len(values)


# ----------------------------------------------------------------------------- scoring
# Rule settings the scorer tries: the peers' rules as they ship, superconv's with a
# small grid of constants (the leave-one-task-out choice picks among them).
FRACTIONS = (1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 6, 1 / 8, 1 / 12, 1 / 16)
BUDGET_POWERS = (0.0, 0.25, 0.5)


@dataclass(frozen=True)
class Setting:
    """One way to suggest: a rule, its constants, and which range test (ramp, length) it reads."""

    rule: str
    params: tuple[tuple[str, float], ...] = ()
    mode: str = "exp"
    length: int = 1  # index into RANGE_FRACTIONS: 0 short, 1 long
    # range tests on this many seeds, the median suggestion kept (fit --repeats K)
    repeats: int = 1

    @property
    def cost(self) -> float:
        """The range tests' length as a share of the training budget (floors aside)."""
        return self.repeats * RANGE_FRACTIONS[self.length][0]

    @property
    def label(self) -> str:
        consts = ", ".join(f"{k}={v:.3g}" for k, v in self.params)
        frac = RANGE_FRACTIONS[self.length][0]
        rule = f"{self.rule}({consts})" if consts else self.rule
        times = f" x{self.repeats} (median)" if self.repeats > 1 else ""
        return f"{rule} on {self.mode} {frac:.0%}{times}"


def settings() -> list[Setting]:
    """Every setting the scorer tries (rules x constants x ramps x lengths)."""
    from superconv.suggest import RULES

    out = []
    for mode in ("exp", "linear"):
        for length in range(len(RANGE_FRACTIONS)):
            for rule in RULES:
                if rule in ("loss_edge", "val_loss_edge"):
                    for f in FRACTIONS:
                        for p in BUDGET_POWERS:
                            params = (("fraction", f),) + ((("budget_power", p),) if p else ())
                            out.append(Setting(rule, params, mode, length))
                elif rule == "plateau_edge":
                    for f in FRACTIONS:
                        params = (("fraction", f),) if f != 1.0 else ()
                        out.append(Setting(rule, params, mode, length))
                else:
                    out.append(Setting(rule, (), mode, length))
    # the same on 3 repeats, the median kept: 3 short tests against one 3x longer
    return out + [replace(s, repeats=REPEATS) for s in out]


REPEATS = 3  # the benchmark's range tests per (ramp, length): 3 seeds


@dataclass(frozen=True)
class Grid:
    """A task's sweep, summarised: mean validation accuracy per max_lr (diverged = chance)."""

    lrs: tuple[float, ...]
    means: tuple[float, ...]
    counts: tuple[int, ...]
    diverged: tuple[bool, ...]
    best_lr: float
    best: float
    se: float  # standard error at the best point (pooled over multi-seed points)
    test_at_best: float

    def accuracy_at(self, lr: float) -> float | None:
        """Validation accuracy interpolated in log LR; None outside the grid."""
        return interpolate_log(self.lrs, self.means, lr)

    def diverges_at(self, lr: float) -> bool:
        """Whether the first grid point at or above ``lr`` (above the grid: the top one) diverged."""
        for v, bad in zip(self.lrs, self.diverged):
            if v >= lr * (1 - 1e-9):
                return bad
        return self.diverged[-1]


def interpolate_log(lrs: Sequence[float], values: Sequence[float], lr: float) -> float | None:
    """``values`` (at ascending ``lrs``) interpolated linearly in log LR; None outside.

    >>> interpolate_log([0.1, 0.4], [80.0, 90.0], 0.2)
    85.0
    """
    x = [math.log(v) for v in lrs]
    t = math.log(lr)
    if t < x[0] - 1e-9 or t > x[-1] + 1e-9:
        return None
    for i in range(len(x) - 1):
        if x[i] <= t <= x[i + 1]:
            w = (t - x[i]) / (x[i + 1] - x[i]) if x[i + 1] > x[i] else 0.0
            return values[i] + w * (values[i + 1] - values[i])
    return values[-1]


def grid_of(task: Task, points: Sequence[SweepPoint]) -> Grid | None:
    """The sweep's summary; None when nothing has finished yet."""
    by_lr: dict[float, list[SweepPoint]] = {}
    for p in points:
        by_lr.setdefault(round(p.max_lr, 12), []).append(p)
    if not by_lr:
        return None
    lrs = tuple(sorted(by_lr))
    accs = {lr: [task.chance if p.diverged else p.val_acc for p in by_lr[lr]] for lr in lrs}
    means = tuple(sum(a) / len(a) for a in (accs[lr] for lr in lrs))
    diverged = tuple(all(p.diverged for p in by_lr[lr]) for lr in lrs)
    best_i = max(range(len(lrs)), key=lambda i: means[i])
    # pooled within-point variance over the points with >= 2 seeds that trained, within
    # 2x of the best: the seed noise where it matters (far past the best, runs that half
    # break down, as t8's 1.59, would inflate the tolerance to 10 points)
    ss = dof = 0.0
    best_lr = lrs[best_i]
    for lr in lrs:
        a = accs[lr]
        near = best_lr / 2 * (1 - 1e-9) <= lr <= best_lr * 2 * (1 + 1e-9)
        if near and len(a) >= 2 and not any(p.diverged for p in by_lr[lr]):
            m = sum(a) / len(a)
            ss += sum((v - m) ** 2 for v in a)
            dof += len(a) - 1
    se = math.sqrt(ss / dof / len(accs[lrs[best_i]])) if dof else math.nan
    tests = [p.test_acc for p in by_lr[lrs[best_i]] if p.test_acc is not None]
    return Grid(
        lrs,
        means,
        tuple(len(by_lr[lr]) for lr in lrs),
        diverged,
        lrs[best_i],
        means[best_i],
        se,
        sum(tests) / len(tests) if tests else math.nan,
    )


@dataclass(frozen=True)
class Score:
    """One suggestion on one range test of one task, scored against the task's sweep."""

    task: str
    setting: Setting
    seed: int
    max_lr: float | None  # None: no suggestion
    lost: float | None  # validation points lost at the suggestion; None outside the grid
    ratio: float | None
    diverged: bool
    met: bool  # every target: lost <= max(1, 2 SE), within 2x, a suggestion, no divergence
    why: str = ""
    # after ``superconv fit``'s check (candidates max_lr x fit.FACTORS, the best kept),
    # if its short runs rank the candidates as the full budget does: points lost, and
    # whether that is within the tolerance. None: no candidate inside the grid.
    checked_lost: float | None = None
    checked_met: bool = False


def tolerance(grid: Grid) -> float:
    """The accuracy a suggestion may lose: max(1 point, 2 standard errors)."""
    return max(1.0, 2 * grid.se) if math.isfinite(grid.se) else 1.0


def within_tolerance(grid: Grid, lost: float | None) -> bool:
    """Whether ``lost`` points (None: outside the grid) meet the accuracy target."""
    return lost is not None and lost <= tolerance(grid) + 1e-9


def score_curve(task: Task, grid: Grid, setting: Setting, run: Mapping[str, Any]) -> Score:
    """Score one setting on one recorded range test (pure: reads the stored curve only)."""
    from superconv.range_test import RangeTestCurve
    from superconv.suggest import suggest_each

    curve = run.get("parsed") or RangeTestCurve.from_dict(run["curve"])
    (s,) = suggest_each(curve, [(setting.rule, dict(setting.params))], task.budget)
    return _score(task, grid, setting, run, s)


def _score(task: Task, grid: Grid, setting: Setting, run: Mapping[str, Any], s: Any) -> Score:
    if isinstance(s, str):  # the rule could not read this curve: no suggestion
        return Score(task.name, setting, run["seed"], None, None, None, False, False, s)
    acc = grid.accuracy_at(s.max_lr)
    ratio = s.max_lr / grid.best_lr
    diverged = grid.diverges_at(s.max_lr)
    lost = None if acc is None else grid.best - acc
    met = (
        within_tolerance(grid, lost) and 0.5 <= ratio <= 2.0 and not diverged
    )
    checked = checked_lost(grid, s.max_lr)
    return Score(
        task.name,
        setting,
        run["seed"],
        s.max_lr,
        lost,
        ratio,
        diverged,
        met,
        checked_lost=checked,
        checked_met=within_tolerance(grid, checked),
    )


def checked_lost(grid: Grid, max_lr: float) -> float | None:
    """Points lost after ``fit``'s check: the best candidate ``max_lr x fit.FACTORS`` kept.

    Assumes the check's short runs rank the candidates as the full budget does (the
    ``fit`` issue measures how often they do). Each candidate's accuracy is interpolated
    as for the suggestion (a diverged grid point counts as chance); candidates outside
    the grid are not counted; None if none is inside.
    """
    from superconv.fit import FACTORS

    accs = [grid.accuracy_at(max_lr * factor) for factor in FACTORS]
    inside = [a for a in accs if a is not None]
    return grid.best - max(inside) if inside else None


# ----------------------------------------------------------------------------- fit's check
# Candidate sets for fit's check, compared offline by :func:`replay_check`; the first is
# superconv.fit.FACTORS. Four candidates each, so every set costs the same successive
# halving (4 first-rung runs, then 2 of twice the length): only where they sit differs.
CHECK_FACTOR_SETS: tuple[tuple[float, ...], ...] = (
    (4.0, 2.0, 1.0, 0.5),
    (2.0, 1.0, 0.5, 0.25),
    (8.0, 4.0, 2.0, 1.0),
    (1.0, 0.5, 0.25, 0.125),
    (8.0, 2.0, 0.5, 0.125),
)


def looks_both_ways(factors: Sequence[float]) -> bool:
    """Whether a candidate set has candidates above *and* below the suggestion.

    fit's default is chosen among these only: the default rule's held-out suggestions
    err both ways (0.2x to 2.9x the swept best), and a check that looks one way cannot
    recover from an error the other way, whatever the replay of one set of tasks says.
    """
    return max(factors) > 1.0 > min(factors)


@dataclass(frozen=True)
class Replay:
    """fit's check on one suggestion, replayed on a task's recorded first-rung runs."""

    task: str
    factors: tuple[float, ...]
    seed: int
    suggested: float
    pick: float | None  # None: no candidate scored, or every one diverged
    lost: float | None  # full-budget validation points lost at the pick; None: outside
    ratio: float | None
    met: bool  # lost <= max(1 point, 2 SE) and within 2x of the swept best
    acc_met: bool  # lost <= max(1 point, 2 SE)


def replay_check(
    task: str,
    grid: Grid,
    short: Mapping[float, float],
    suggested: float,
    factors: Sequence[float],
    seed: int = 0,
    chance: float | None = None,
) -> Replay:
    """fit's check around ``suggested``, replayed on recorded first-rung runs (pure).

    Each candidate ``suggested x factor`` is scored by the first-rung runs' validation
    accuracy, interpolated in log LR between the recorded grid points (a candidate
    outside them has no recorded score and is left out, except above a top point that
    diverged, where it diverges too and scores ``chance``); the best is picked and
    scored by the full-budget grid. A simplification, said in the report: the real
    check trains the best half again at twice the length before it picks; the grid
    records the first rung only.
    """
    lrs = sorted(short)
    vals = [short[lr] for lr in lrs]
    top_diverged = chance is not None and bool(vals) and vals[-1] <= chance + 1e-9
    scored = []
    for f in factors:
        lr = suggested * f
        acc = interpolate_log(lrs, vals, lr) if len(lrs) >= 2 else None
        if acc is None and top_diverged and lr > lrs[-1]:
            acc = chance
        if acc is not None:
            scored.append((acc, lr))
    if not scored or (chance is not None and max(scored)[0] <= chance + 1e-9):
        return Replay(task, tuple(factors), seed, suggested, None, None, None, False, False)
    pick = max(scored)[1]
    acc = grid.accuracy_at(pick)
    lost = None if acc is None else grid.best - acc
    ratio = pick / grid.best_lr
    ok = within_tolerance(grid, lost)
    return Replay(
        task, tuple(factors), seed, suggested, pick, lost, ratio, ok and 0.5 <= ratio <= 2.0, ok
    )


def replay_all(
    data: Mapping[str, Any], scores: Sequence[Score], setting: Setting
) -> list[Replay]:
    """Every candidate set on every suggestion of ``setting`` on tasks with first-rung runs."""
    out = []
    for name, entry in data.items():
        short = short_scores(entry["task"], entry["results"])
        if len(short) < 2:
            continue
        for s in scores:
            if s.task == name and s.setting == setting and s.max_lr is not None:
                for factors in CHECK_FACTOR_SETS:
                    out.append(
                        replay_check(
                            name, entry["grid"], short, s.max_lr, factors, s.seed,
                            chance=entry["task"].chance,
                        )  # fmt: skip
                    )
    return out


def summarise_replays(replays: Sequence[Replay]) -> dict[str, float]:
    """Share meeting both targets, the accuracy target; mean loss; median ratio; none inside."""
    n = len(replays)
    lost = [r.lost for r in replays if r.lost is not None]
    ratios = [math.log2(r.ratio) for r in replays if r.ratio]
    return {
        "n": n,
        "met": sum(r.met for r in replays) / n if n else math.nan,
        "acc_met": sum(r.acc_met for r in replays) / n if n else math.nan,
        "mean_lost": _finite_mean(lost) if lost else math.nan,
        "median_ratio": 2 ** _median(ratios) if ratios else math.nan,
        "outside": sum(r.lost is None for r in replays),
    }


def _replay_key(summary: Mapping[str, float]) -> tuple:
    # fit's own target is accuracy (the fit issue: its mean within max(1 point, 2 SE) of
    # the swept 1cycle), so the accuracy target ranks first, then the mean loss; "within
    # 2x" is the suggestion's target, here only the last tie-break.
    lost = summary["mean_lost"] if math.isfinite(summary["mean_lost"]) else math.inf
    return (-summary["acc_met"], lost, -summary["met"])


def choose_factors(
    replays: Sequence[Replay], exclude: str | None = None, both_ways: bool = True
) -> tuple[float, ...] | None:
    """The candidate set with the best replayed check over every task but ``exclude``
    (most curves meeting the accuracy target, then least lost, then most within 2x);
    ties go to the earlier set in :data:`CHECK_FACTOR_SETS` (fit's own first). With
    ``both_ways`` (fit's choice), only sets that :func:`looks_both_ways`."""
    kept = [r for r in replays if r.task != exclude]
    sets = [f for f in CHECK_FACTOR_SETS if looks_both_ways(f) or not both_ways]
    if not kept or not sets:
        return None
    return min(
        sets,
        key=lambda f: _replay_key(summarise_replays([r for r in kept if r.factors == f])),
    )


def factors_left_out(
    replays: Sequence[Replay], both_ways: bool = True
) -> dict[str, tuple[tuple[float, ...], dict[str, float]]]:
    """Per task: the candidate set chosen on the other tasks, and its held-out replay."""
    out = {}
    for name in sorted({r.task for r in replays}):
        factors = choose_factors(replays, exclude=name, both_ways=both_ways)
        if factors is not None:
            held = [r for r in replays if r.task == name and r.factors == factors]
            out[name] = (factors, summarise_replays(held))
    return out


def collect(results: str | Path, names: Sequence[str] | None = None) -> dict[str, Any]:
    """Per task: its grid and its range-test runs, read from ``results`` (tasks not ready are left out)."""
    data = {}
    for task in tasks():
        if names and task.name not in names:
            continue
        grid = grid_of(task, sweep_points(task, results))
        runs = range_test_runs(task, results)
        if grid is not None and runs:
            data[task.name] = {"task": task, "grid": grid, "runs": runs, "results": results}
    return data


def score_all(data: Mapping[str, Any], chosen: Sequence[Setting] | None = None) -> list[Score]:
    """Every setting on every matching range test of every task in ``data``.

    Each stored curve is parsed and read once, and every setting for its ramp and
    length applied to that reading (:func:`superconv.suggest.suggest_each`).
    """
    from superconv.range_test import RangeTestCurve
    from superconv.suggest import suggest_each

    chosen = list(chosen or settings())
    single = list(dict.fromkeys(replace(s, repeats=1) for s in chosen))
    out = []
    for entry in data.values():
        task, grid = entry["task"], entry["grid"]
        lengths = task.range_lengths()
        per_setting: dict[Setting, list[tuple[Mapping[str, Any], Any]]] = {}
        for run in entry["runs"]:
            mine = [
                s for s in single if run["mode"] == s.mode and run["steps"] == lengths[s.length]
            ]
            if not mine:
                continue
            curve = RangeTestCurve.from_dict(run["curve"])
            picks = suggest_each(curve, [(s.rule, dict(s.params)) for s in mine], task.budget)
            for s, p in zip(mine, picks):
                per_setting.setdefault(s, []).append((run, p))
        for setting in chosen:
            found = per_setting.get(replace(setting, repeats=1), [])
            if setting.repeats == 1:
                out += [_score(task, grid, setting, run, p) for run, p in found]
            elif len(found) >= setting.repeats:
                out.append(_score_median(task, grid, setting, found[: setting.repeats]))
    return out


def _score_median(task: Task, grid: Grid, setting: Setting, found: Sequence[tuple]) -> Score:
    """One score for the median suggestion of ``setting.repeats`` range tests (seed -1).

    A test with no suggestion is left out of the median (fit does the same and says
    so); with none from any, no suggestion.
    """
    lrs = sorted(p.max_lr for _, p in found if not isinstance(p, str))
    run = {"seed": -1}
    if not lrs:
        return _score(task, grid, setting, run, next(p for _, p in found))
    mid = len(lrs) // 2
    median = lrs[mid] if len(lrs) % 2 else math.sqrt(lrs[mid - 1] * lrs[mid])
    return _score(task, grid, setting, run, SimpleNamespace(max_lr=median))


def summarise(scores: Sequence[Score]) -> dict[str, float]:
    """Aggregate scores: targets met, mean and worst loss, ratios, divergences, no-suggestions."""
    n = len(scores)
    lost = [s.lost if s.lost is not None else math.inf for s in scores if s.max_lr is not None]
    ratios = [abs(math.log2(s.ratio)) for s in scores if s.ratio]
    return {
        "n": n,
        "met": sum(s.met for s in scores) / n if n else math.nan,
        "mean_lost": _finite_mean(lost),
        "worst_lost": max(lost) if lost else math.inf,
        "outside_grid": sum(s.max_lr is not None and s.lost is None for s in scores),
        "within_2x": sum(r <= 1 for r in ratios) / n if n else math.nan,
        "median_log2_ratio": float(_median([math.log2(s.ratio) for s in scores if s.ratio])),
        "checked_met": sum(s.checked_met for s in scores) / n if n else math.nan,
        "diverged": sum(s.diverged for s in scores),
        "no_suggestion": sum(s.max_lr is None for s in scores),
        "seed_spread": _seed_spread(scores),
    }


def _seed_spread(scores: Sequence[Score]) -> float:
    """Mean over tasks of the standard deviation of log2(suggestion) across seeds."""
    by_task: dict[str, list[float]] = {}
    for s in scores:
        if s.max_lr:
            by_task.setdefault(s.task, []).append(math.log2(s.max_lr))
    spreads = []
    for vals in by_task.values():
        if len(vals) >= 2:
            m = sum(vals) / len(vals)
            spreads.append(math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)))
    return sum(spreads) / len(spreads) if spreads else math.nan


def _finite_mean(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _median(values: Sequence[float]) -> float:
    vals = sorted(values)
    if not vals:
        return math.nan
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def _rank_key(summary: Mapping[str, float]) -> tuple:
    # The hard targets first: the share of curves with no suggestion or a
    # divergence (a default must give a usable LR on every task); then most targets met;
    # then the most met after fit's check; then outside the grid; then accuracy lost.
    n = max(1, summary["n"])
    hard = (summary["diverged"] + summary["no_suggestion"]) / n
    lost = summary["mean_lost"] if math.isfinite(summary["mean_lost"]) else math.inf
    return (hard, -summary["met"], -summary["checked_met"], summary["outside_grid"] / n, lost)


def choose(
    scores: Sequence[Score], exclude: str | None = None, max_cost: float | None = None
) -> Setting | None:
    """The setting with the best summary over every task but ``exclude``.

    ``max_cost``: only settings whose range tests cost at most this share of the
    budget (``fit`` caps its range tests at :data:`superconv.fit.RANGE_CAP`).
    """
    by_setting: dict[Setting, list[Score]] = {}
    for s in scores:
        if s.task != exclude and (max_cost is None or s.setting.cost <= max_cost + 1e-9):
            by_setting.setdefault(s.setting, []).append(s)
    if not by_setting:
        return None
    return min(by_setting, key=lambda k: _rank_key(summarise(by_setting[k])))


def leave_one_task_out(
    scores: Sequence[Score], max_cost: float | None = None
) -> dict[str, tuple[Setting, dict[str, float]]]:
    """Per task: the setting chosen on the other tasks, and its score on this (held-out) task."""
    out = {}
    for name in sorted({s.task for s in scores}):
        setting = choose(scores, exclude=name, max_cost=max_cost)
        if setting is None:
            continue
        held = [s for s in scores if s.task == name and s.setting == setting]
        out[name] = (setting, summarise(held))
    return out
