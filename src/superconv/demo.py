"""The two end-to-end jobs behind the command line: ``lr_find`` and ``demo``.

:func:`lr_find` runs the LR range test (paper section 3, Fig. 2) on the model,
data and optimizer that :func:`superconv.train.build` makes from a
:class:`~superconv.train.TrainConfig`, so the test sees exactly what training
will see, and writes the curve, the suggestion and a plot into a folder.

:func:`demo` answers, in a couple of minutes on a laptop CPU with no data
folder, the question a practitioner asks first (see the skeptic's post in the
project seeds): does 1cycle beat a *tuned* baseline at the same training
budget? It trains Caffe's LeNet on ``mnist-demo`` (the MNIST subset shipped in
the package):

1. an LR range test (exponential, so LeNet's few usable decades are resolved)
   on a validation split held out of the training set; :func:`suggest` reads
   ``max_lr`` from it;
2. a 1cycle run of ``iterations`` iterations at that ``max_lr`` (if it
   diverges, ``max_lr`` is halved and the run repeated; every attempt is
   counted and reported);
3. the baseline: multistep (x0.1 at 50% and 75%) with its LR picked by a sweep
   of full-length runs on the same validation split; the sweep's best run *is*
   the baseline, so both policies train for the same number of iterations.

The test set is only reported, never used for a choice.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from superconv.errors import DivergenceError, RunDirError, UserError
from superconv.records import RunDir, atomic_write_json, atomic_write_text, environment, read_csv
from superconv.timing import WARMUP_STEPS, Pace, format_duration

Echo = Callable[[str], None]


# ----------------------------------------------------------------------------- lr_find
@dataclass
class LRFindResult:
    """What :func:`lr_find` recorded: the curve, its reading and the files written."""

    run_dir: Path
    curve: Any  # superconv.range_test.RangeTestCurve
    suggestion: Any  # superconv.range_test.Suggestion, or None when the curve is too short
    suggestion_error: str | None
    files: dict[str, Path] = field(default_factory=dict)
    others: dict[str, float | str] = field(default_factory=dict)  # rule -> max_lr, or why none
    # Seconds per training step of the test after its warm-up (evaluations left out): what
    # the time of a training run on the same settings is estimated from. None if too short.
    seconds_per_step: float | None = None


def lr_find(
    config: Any,
    out: str | os.PathLike,
    *,
    start_lr: float = 0.0,
    end_lr: float = 3.0,
    num_steps: int = 1000,
    mode: str = "linear",
    eval_every: int | None = None,
    eval_batches: int | None = None,
    progress: bool = True,
    rule: str = "default",
    budget: int | None = None,
    adapt: bool = True,
    tensorboard: str | os.PathLike | None = None,
    logger: Any = None,
) -> LRFindResult:
    """LR range test of ``config``'s model, data and optimizer; files into ``out``.

    The LR grows from ``start_lr`` to ``end_lr`` over ``num_steps`` iterations,
    linearly (the paper: 0 -> 3) or exponentially (``mode="exp"``, needs
    ``start_lr > 0``). With ``config.val_size > 0`` the model is evaluated on
    that held-out part of the *training* set every ``eval_every`` steps (never
    on the test set). :func:`superconv.suggest.suggest` reads the curve by
    ``rule`` (``"default"``: the benchmark's choice, :data:`superconv.suggest.DEFAULT`)
    for a training run of ``budget`` iterations; every other rule's pick is
    recorded beside it and marked on the plot. ``adapt``: a test that breaks down
    in its first fifth restarts below that LR (see :func:`~superconv.range_test.range_test`).
    The policy fields of ``config`` are ignored (the ramp sets the LR); its
    ``momentum`` and ``weight_decay`` are used as they are.

    Writes ``config.json``, ``env.json`` (via :class:`~superconv.records.RunDir`),
    ``range_test.json`` (curve, suggestion and settings) and ``range_test.png``.
    Under ``torchrun`` every process calls this with the DDP model; the curve is
    averaged over ranks and rank 0 alone writes (``files`` is empty elsewhere).

    ``tensorboard``: a folder for TensorBoard event files (``pip install
    'superconv[tensorboard]'``): the curve (``range_test/...``: LR, loss and smoothed
    loss per step, validation per evaluation) and the suggestion, beside
    ``range_test.json``. Or ``logger``: an open
    :class:`~superconv.integrations.tensorboard.TensorBoardLogger`.
    """
    settings = dict(
        start_lr=start_lr, end_lr=end_lr, num_steps=num_steps, mode=mode, eval_every=eval_every,
        eval_batches=eval_batches, progress=progress, rule=rule, budget=budget, adapt=adapt,
    )  # fmt: skip
    from superconv.distributed import world_from_env

    if (tensorboard is None and logger is None) or not world_from_env().is_main:
        return _lr_find(config, out, **settings)
    from superconv.integrations.tensorboard import logging_to

    with logging_to(tensorboard, logger) as board:
        result = _lr_find(config, out, **settings)
        board.log_range_test(result.curve, result.suggestion)
        return result


def _lr_find(
    config: Any,
    out: str | os.PathLike,
    *,
    start_lr: float,
    end_lr: float,
    num_steps: int,
    mode: str,
    eval_every: int | None,
    eval_batches: int | None,
    progress: bool,
    rule: str,
    budget: int | None,
    adapt: bool,
) -> LRFindResult:
    from superconv.suggest import suggest, suggest_all
    from superconv.train import build, open_on_main

    settings = {
        "start_lr": start_lr,
        "end_lr": end_lr,
        "num_steps": num_steps,
        "mode": mode,
        "eval_every": eval_every,
        "eval_batches": eval_batches,
        "rule": rule,
        "budget": budget,
        "adapt": adapt,
    }
    _check_lr_find_settings(config, settings)
    # The ramp writes the LR; a constant policy only satisfies build()'s validation.
    config = config.replace(iterations=num_steps, policy="constant", policy_params={"lr": 0.0})
    pieces = build(config)
    record = {"workflow": "lr_find", "range_test": settings, "train_config": config.to_dict()}
    run = open_on_main(out, record, pieces)
    curve, pace = _timed_range_test(pieces, settings, progress)
    suggestion, error = None, None
    try:
        suggestion = suggest(curve, rule, budget)
    except UserError as exc:  # too short a curve: keep the files, say why there is no reading
        error = str(exc)
    others = suggest_all(curve, budget)
    result = LRFindResult(
        Path(out),
        curve,
        suggestion,
        error,
        others={k: v if isinstance(v, str) else v.max_lr for k, v in others.items()},
        seconds_per_step=pace.seconds_per_step,
    )
    if run is None:
        return result
    result.files["json"] = run.write_json(
        "range_test.json",
        {
            "settings": settings,
            "curve": curve.to_dict(),
            "suggestion": suggestion.to_dict() if suggestion is not None else None,
            "suggestion_error": error,
            "rules": {
                name: o.max_lr if not isinstance(o, str) else {"no_suggestion": o}
                for name, o in others.items()
            },
            "val_images": config.val_size,
            "seconds_per_step": pace.seconds_per_step,
        },
    )
    result.files["plot"] = _plot_lr_find(run, config, settings, curve, suggestion, others)
    return result


def _check_lr_find_settings(config: Any, settings: dict[str, Any]) -> None:
    """Refuse impossible settings before the output folder is made: a folder holding
    only config.json would refuse the corrected retry as "a different run"."""
    from superconv.range_test import check_range_test_args
    from superconv.suggest import check_rule

    check_range_test_args(
        start_lr=settings["start_lr"],
        end_lr=settings["end_lr"],
        num_steps=settings["num_steps"],
        mode=settings["mode"],
        eval_every=settings["eval_every"],
        eval_batches=settings["eval_batches"],
    )
    if settings["eval_every"] is not None and not config.val_size:
        raise UserError(
            "--eval-every needs a validation split to evaluate on: set --val-size > 0 "
            "(images held out of the training set; the test set is never used)."
        )
    check_rule(settings["rule"])  # before any work, as the ramp's settings above
    budget = settings["budget"]
    if budget is not None and (
        isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
    ):
        raise UserError(f"budget must be a positive number of iterations, got {budget!r}.")


def _timed_range_test(pieces: Any, settings: dict[str, Any], progress: bool) -> tuple[Any, Pace]:
    """The range test on ``pieces`` (validation split where there is one), and its pace."""
    import torch.nn.functional as F

    from superconv import distributed
    from superconv.range_test import range_test

    num_steps, eval_every = settings["num_steps"], settings["eval_every"]
    val_name = "val" if pieces.config.val_size else None
    world = pieces.world
    # Seconds per training step, for the time of the run the suggestion is for: every
    # optimizer step of the test (restarts included) after the warm-up, but not the
    # steps whose time holds an evaluation (range_test evaluates after the observers).
    every = (eval_every or max(1, num_steps // 50)) if val_name else None
    pace, steps = Pace(num_steps), itertools.count(1)

    def timing(step: int, *_: Any) -> None:
        pace.tick(next(steps), counted=not (every and step % every == 0 and step > 0))

    curve = range_test(
        pieces.model,
        pieces.optimizer,
        F.cross_entropy,
        pieces.loader,
        pieces.eval_loaders.get(val_name) if val_name else None,
        start_lr=settings["start_lr"],
        end_lr=settings["end_lr"],
        num_steps=num_steps,
        mode=settings["mode"],
        eval_every=eval_every,
        eval_batches=settings["eval_batches"],
        autocast_dtype=pieces.autocast_dtype,
        device=pieces.device,
        progress=progress and world.is_main,
        # every rank sees the same (rank-averaged) curve and stops at the same step
        reduce_mean=distributed.mean_across_ranks if world.distributed else None,
        adapt=settings["adapt"],
        observers=[timing],
    )
    return curve, pace


def _plot_lr_find(
    run: RunDir,
    config: Any,
    settings: dict[str, Any],
    curve: Any,
    suggestion: Any,
    others: dict[str, Any],
) -> Path:
    """range_test.png: the curve, the suggestion and the other rules' readings."""
    from superconv.plots import plot_range_test

    ramp = f"{settings['mode']} {settings['start_lr']:g} -> {settings['end_lr']:g}"
    if curve.notes:  # an adaptive restart: say what ran in the end
        ramp += f", restarted as exp {curve.lrs[0]:.3g} -> {curve.lrs[-1]:.3g}"
    title = (
        f"LR range test: {config.model} on {config.dataset}, {ramp} "
        f"({len(curve.losses)} of {settings['num_steps']} steps; {_ended(curve)})"
    )
    marks = {
        name: o.max_lr
        for name, o in others.items()
        if not isinstance(o, str) and (suggestion is None or name != suggestion.rule)
    }
    return plot_range_test(
        curve, suggestion, path=run.path / "range_test.png", title=_wrap(title), marks=marks
    )


def _ended(curve: Any) -> str:
    """What happened at the end of a range test, in words (:meth:`RangeTestCurve.ending`)."""
    return curve.ending()


def _wrap(text: str, width: int = 80) -> str:
    """Break a long figure title in two at a word boundary (:func:`plots.wrap_title`)."""
    from superconv.plots import wrap_title

    return wrap_title(text, width)


# ----------------------------------------------------------------------------- the demo
@dataclass(frozen=True)
class DemoPlan:
    """The demo's budget and grid (defaults: the full demo, about two minutes on one core).

    Caffe's LeNet example (examples/mnist/lenet_solver.prototxt) is the
    setting: batch 64, momentum 0.9, weight decay 5e-4, base LR 0.01, inputs
    scaled to [0, 1].
    """

    iterations: int = 420  # 3 epochs of the 9,000-image training split at batch 64
    batch_size: int = 64  # Caffe's LeNet solver
    val_size: int = 1000  # held out of the 10,000 training images for every choice
    eval_every: int = 42  # 10 points on the accuracy-vs-iteration curve
    range_steps: int = 300
    range_start_lr: float = 1e-4  # exponential ramp: LeNet (no BN) blows up near 0.2,
    range_end_lr: float = 3.0  # far below the paper's 3.0; the test stops there
    range_eval_every: int = 10
    sweep_lrs: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1)  # half decades around Caffe's 0.01
    max_halvings: int = 3  # 1cycle retries at max_lr / 2 after a divergence

    @property
    def train_images(self) -> int:
        return 10_000 - self.val_size  # mnist-demo has 10,000 training images


QUICK_PLAN = DemoPlan(
    iterations=30,
    batch_size=32,
    eval_every=15,
    range_steps=30,
    range_eval_every=5,
    sweep_lrs=(0.01, 0.03),
    max_halvings=2,
)


@dataclass
class PolicyOutcome:
    """One policy's side of the comparison."""

    name: str  # "1cycle" / "multistep"
    lr: float  # max_lr (1cycle) or the initial lr (multistep)
    runs: list[Path]  # the final run of each seed
    test_accs: list[float]
    val_accs: list[float]
    tuning_iterations: int  # range test / sweep iterations, failed attempts included
    notes: list[str] = field(default_factory=list)

    @property
    def mean_test_acc(self) -> float:
        return statistics.fmean(self.test_accs)


@dataclass
class DemoResult:
    """What :func:`demo` measured; ``summary`` is the printed verdict, ``files`` what it wrote."""

    one_cycle: PolicyOutcome
    multistep: PolicyOutcome
    range_test: LRFindResult
    sweep: list[dict[str, Any]]
    wall_time: float
    expected_time: float
    summary: list[str]
    files: dict[str, Path]


def demo_config(plan: DemoPlan, device: str = "auto", threads: int | None = 1) -> Any:
    """The TrainConfig of every demo run (policy fields set per run)."""
    from superconv.train import TrainConfig

    return TrainConfig(
        model="lenet",
        dataset="mnist-demo",
        normalize="unit",  # Caffe's LeNet: scale 0.00390625, no mean subtraction
        flip=False,  # mirrored digits are other digits
        val_size=plan.val_size,
        iterations=plan.iterations,
        batch_size=plan.batch_size,
        momentum=0.9,
        weight_decay=5e-4,
        eval_every=plan.eval_every,
        checkpoint_every=plan.iterations,
        eval_batch_size=250,  # faster than 1,000 on one CPU thread (measured)
        device=device,
        threads=threads,
        policy="constant",
        policy_params={"lr": 0.01},
    )


def demo(
    out: str | os.PathLike = "superconv-demo",
    *,
    quick: bool = False,
    plan: DemoPlan | None = None,
    seeds: int = 1,
    device: str = "auto",
    threads: int | None = 1,
    progress: bool = True,
    echo: Echo = print,
) -> DemoResult:
    """Range test -> 1cycle against a swept multistep baseline at equal budget; files in ``out``.

    ``quick`` uses :data:`QUICK_PLAN` (seconds; for tests). ``seeds`` repeats the
    two final runs with seeds 0..seeds-1 (the range test and the sweep use seed 0).
    ``threads`` defaults to 1: LeNet at batch 64 gains nothing from more threads
    and loses much when the cores are shared (measured: 35 it/s on one thread,
    2-5 it/s on two busy cores). ``echo`` receives every line of the report.
    """
    import torch

    plan = plan or (QUICK_PLAN if quick else DemoPlan())
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"seeds must be an integer >= 1, got {seeds!r}.")
    out = Path(out)
    _fresh_folder(out)
    saved_threads = torch.get_num_threads()
    t0 = time.perf_counter()
    try:
        result = _demo(out, plan, seeds, device, threads, progress, echo, t0)
    finally:
        torch.set_num_threads(saved_threads)  # build() sets it for the process
    return result


def _fresh_folder(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        what = "is not a folder" if not out.is_dir() else "already exists and is not empty"
        raise RunDirError(
            f"the demo's output folder {out} {what}. Remove it, or choose another with --out."
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(
            f"cannot create the output folder {out}: {exc.strerror}. "
            "Choose a folder you can write to (--out)."
        ) from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunDirError(f"the output folder {out} is not writable. Choose another with --out.")


def _demo(out, plan, seeds, device, threads, progress, echo, t0) -> DemoResult:
    base = demo_config(plan, device, threads)
    expected = _print_plan(plan, seeds, _measure_speed(base), echo)
    found = _demo_range_test(base, plan, out, progress, echo)
    one_cycle = _demo_one_cycle(base, plan, out, found, progress, echo)
    multistep, sweep = _demo_multistep(base, plan, out, progress, echo)
    for seed in range(1, seeds):
        _demo_other_seed(base, seed, one_cycle, multistep, out, progress, echo)
    files = _demo_figures(base, plan, out, found, one_cycle, multistep)
    wall = time.perf_counter() - t0
    range_iters = len(found.curve.losses)
    summary_lines = _verdict(one_cycle, multistep, plan, range_iters, len(plan.sweep_lrs), seeds)
    summary_lines.append(
        f"Wall time: {format_duration(wall)} (expected {format_duration(expected)}). Files: {out}/demo.md"
    )
    summary_lines += _checkpoints_note(out)
    result = DemoResult(one_cycle, multistep, found, sweep, wall, expected, summary_lines, files)
    _write_demo_records(result, plan, seeds, base, out)
    echo("")
    for line in summary_lines:
        echo(line)
    return result


def _print_plan(plan: DemoPlan, seeds: int, speed: float, echo: Echo) -> float:
    """Say what the demo will train and how long it should take; the expected seconds."""
    planned = plan.range_steps + (1 + len(plan.sweep_lrs)) * plan.iterations
    planned += 2 * (seeds - 1) * plan.iterations
    expected = _expected_seconds(plan, seeds, speed)
    echo(
        f"superconv demo: LeNet on mnist-demo ({plan.train_images:,} training images, "
        f"{plan.val_size:,} held out for validation, 2,000 test images), batch {plan.batch_size}."
    )
    echo(
        f"Plan: LR range test ({plan.range_steps} iterations) -> 1cycle ({plan.iterations} "
        f"iterations) vs multistep ({plan.iterations} iterations, LR swept over "
        f"{', '.join(f'{lr:g}' for lr in plan.sweep_lrs)}); {seeds} seed(s)."
    )
    echo(
        f"Expected time: about {format_duration(expected)} ({planned:,} training iterations at "
        f"{speed:.0f} it/s measured just now, plus evaluations)."
    )
    return expected


def _demo_range_test(
    base: Any, plan: DemoPlan, out: Path, progress: bool, echo: Echo
) -> LRFindResult:
    """Step 1: the LR range test on the validation split, read by plateau_edge."""
    echo(f"\n[1/3] LR range test: exponential {plan.range_start_lr:g} -> {plan.range_end_lr:g}")
    found = lr_find(
        base,
        out / "range-test",
        start_lr=plan.range_start_lr,
        end_lr=plan.range_end_lr,
        num_steps=plan.range_steps,
        mode="exp",
        eval_every=plan.range_eval_every,
        # The demo's own recipe: superconv 0.1's plateau-edge reading of a 300-step exp
        # test, then torch's 1cycle shape (start at max/25). The library's default rule,
        # read from its own short linear test, errs low on LeNet: with it this demo's 1cycle
        # reached 96.45% against the sweep's 98.15% (2026-12-03; docs/choosing-max-lr.md).
        # `superconv fit` adds the check by training.
        rule="plateau_edge",
        progress=progress,
    )
    if found.suggestion is None:
        raise UserError(f"the LR range test gave no suggestion: {found.suggestion_error}")
    echo(
        f"      {len(found.curve.losses)} iterations ({found.curve.stop_reason}); suggested "
        f"max_lr {found.suggestion.max_lr:.3g}: {found.suggestion.reasons['max_lr']}."
    )
    return found


def _demo_one_cycle(
    base: Any, plan: DemoPlan, out: Path, found: LRFindResult, progress: bool, echo: Echo
) -> PolicyOutcome:
    """Step 2: 1cycle at the suggested max_lr, halved after a divergence."""
    echo(f"\n[2/3] 1cycle, {plan.iterations} iterations")
    max_lr = found.suggestion.max_lr
    spent, notes = len(found.curve.losses), []
    for attempt in range(plan.max_halvings + 1):
        config = base.replace(policy="one_cycle", policy_params={"max_lr": max_lr})
        name = f"one_cycle-max_lr{max_lr:.3g}-seed0"
        try:
            first = _train(config, out / "runs" / name, progress)
            break
        except DivergenceError as exc:
            spent += exc.step + 1
            note = (
                f"1cycle at max_lr {max_lr:.3g} diverged at iteration {exc.step} "
                f"(lr {exc.lr:.3g}); retried at max_lr {max_lr / 2:.3g}"
            )
            echo(f"      {note}")
            notes.append(note)
            if attempt == plan.max_halvings:
                raise UserError(
                    f"1cycle diverged at every max_lr tried down to {max_lr:.3g}; "
                    f"see the run folders in {out / 'runs'}."
                ) from exc
            max_lr /= 2
    echo(f"      max_lr {max_lr:.3g}: {_accs(first)}")
    return PolicyOutcome(
        name="1cycle",
        lr=max_lr,
        runs=[out / "runs" / name],
        test_accs=[first["final_test_acc"]],
        val_accs=[first["final_val_acc"]],
        tuning_iterations=spent,  # the range test and any diverged attempts
        notes=notes,
    )


def _demo_multistep(
    base: Any, plan: DemoPlan, out: Path, progress: bool, echo: Echo
) -> tuple[PolicyOutcome, list[dict[str, Any]]]:
    """Step 3: the baseline, multistep with its LR chosen on the validation split; and
    the sweep's entries."""
    echo("\n[3/3] multistep (x0.1 at 50% and 75%), LR sweep on the validation split")
    sweep = []
    for lr in plan.sweep_lrs:
        config = base.replace(policy="multistep", policy_params={"lr": lr})
        entry: dict[str, Any] = {"lr": lr, "run": out / "runs" / f"multistep-lr{lr:g}-seed0"}
        try:
            summary = _train(config, entry["run"], progress)
            entry.update(
                summary=summary, val_acc=summary["final_val_acc"], iterations=plan.iterations
            )
            echo(f"      lr {lr:g}: {_accs(summary)}")
        except DivergenceError as exc:
            entry.update(summary=None, val_acc=None, iterations=exc.step + 1)
            echo(f"      lr {lr:g}: diverged at iteration {exc.step}")
        sweep.append(entry)
    usable = [e for e in sweep if e["val_acc"] is not None and math.isfinite(e["val_acc"])]
    if not usable:
        raise UserError("every LR of the multistep sweep diverged; no baseline to compare with.")
    best = max(usable, key=lambda e: e["val_acc"])
    echo(f"      picked lr {best['lr']:g} (best validation accuracy, {best['val_acc']:.2f}%)")
    multistep = PolicyOutcome(
        name="multistep",
        lr=best["lr"],
        runs=[best["run"]],
        test_accs=[best["summary"]["final_test_acc"]],
        val_accs=[best["val_acc"]],
        # the other sweep runs: the best one is the baseline's own run
        tuning_iterations=sum(e["iterations"] for e in sweep) - plan.iterations,
    )
    return multistep, sweep


def _demo_other_seed(
    base: Any,
    seed: int,
    one_cycle: PolicyOutcome,
    multistep: PolicyOutcome,
    out: Path,
    progress: bool,
    echo: Echo,
) -> None:
    """Both policies' final runs again on ``seed``, appended to their outcomes."""
    echo(f"\n      seed {seed}:")
    for outcome, policy, params in (
        (one_cycle, "one_cycle", {"max_lr": one_cycle.lr}),
        (multistep, "multistep", {"lr": multistep.lr}),
    ):
        config = base.replace(policy=policy, policy_params=params, seed=seed)
        tag = f"max_lr{one_cycle.lr:.3g}" if policy == "one_cycle" else f"lr{multistep.lr:g}"
        run = out / "runs" / f"{policy}-{tag}-seed{seed}"
        summary = _train(config, run, progress)
        outcome.runs.append(run)
        outcome.test_accs.append(summary["final_test_acc"])
        outcome.val_accs.append(summary["final_val_acc"])
        echo(f"      {outcome.name}: {_accs(summary)}")


def _demo_figures(
    base: Any,
    plan: DemoPlan,
    out: Path,
    found: LRFindResult,
    one_cycle: PolicyOutcome,
    multistep: PolicyOutcome,
) -> dict[str, Path]:
    """The two schedules and the test-accuracy curves; with the range test's plot."""
    from superconv.plots import plot_curves, plot_schedule
    from superconv.train import make_policy

    max_lr, lr = one_cycle.lr, multistep.lr
    files: dict[str, Path] = {"range_test_plot": found.files["plot"]}
    files["schedule_one_cycle"] = plot_schedule(
        make_policy(base.replace(policy="one_cycle", policy_params={"max_lr": max_lr})),
        plan.iterations,
        out / "schedule_one_cycle.png",
        title=f"1cycle: max_lr {max_lr:.3g} (from the range test), momentum 0.95 -> 0.85 -> 0.95",
    )
    files["schedule_multistep"] = plot_schedule(
        make_policy(base.replace(policy="multistep", policy_params={"lr": lr})),
        plan.iterations,
        out / "schedule_multistep.png",
        title=f"multistep: lr {lr:g} (picked by the sweep), x0.1 at 50% and 75%",
    )
    curves = {
        f"1cycle, max_lr {max_lr:.3g}": _rows(one_cycle.runs),
        f"multistep, lr {lr:g}": _rows(multistep.runs),
    }
    files["accuracy_plot"] = plot_curves(
        curves,
        "test_acc",
        path=out / "accuracy.png",
        title="test accuracy (%) during training: reported only, never used for a choice",
    )
    return files


def _checkpoints_note(out: Path) -> list[str]:
    """Where the disk space went: the finished runs' weights (no line if none)."""
    checkpoints = sorted((out / "runs").glob("*/checkpoint.pt"))
    if not checkpoints:
        return []
    size = sum(c.stat().st_size for c in checkpoints) / 1e6
    return [
        f"The {len(checkpoints)} runs' final checkpoints ({size:.0f} MB) are in "
        f"{out}/runs/*/checkpoint.pt: delete them if you do not need the weights."
    ]


def _write_demo_records(
    result: DemoResult, plan: DemoPlan, seeds: int, base: Any, out: Path
) -> None:
    """demo.json and demo.md (their paths into ``result.files``)."""
    from superconv.train import resolve_device

    files = result.files
    env = environment(str(resolve_device(base.device)), 0)
    files["json"] = atomic_write_json(out / "demo.json", _as_record(result, plan, seeds, base, env))
    files["markdown"] = atomic_write_text(
        out / "demo.md", _markdown(result, plan, seeds, base, env, out)
    )


def _train(config: Any, run_dir: Path, progress: bool) -> dict[str, Any]:
    from superconv.train import train

    return train(config, run_dir, progress=progress).summary


def _accs(summary: dict[str, Any]) -> str:
    return (
        f"validation {summary['final_val_acc']:.2f}%, test {summary['final_test_acc']:.2f}% "
        f"({format_duration(summary['wall_time'])})"
    )


def _rows(runs: Sequence[Path]) -> list[dict[str, Any]]:
    return [row for run in runs for row in read_csv(Path(run) / "metrics.csv")]


def _measure_speed(config: Any, steps: int = 12) -> float:
    """Training iterations per second of ``config`` on this machine, right now."""
    import torch
    import torch.nn.functional as F

    from superconv.train import build

    pieces = build(config)
    model, optimizer = pieces.model, pieces.optimizer
    for group in optimizer.param_groups:
        group["lr"] = 0.0  # a throwaway model: only the time matters
    elapsed = 0.0
    for step in range(steps + WARMUP_STEPS):
        start = time.perf_counter()
        x, y = pieces.loader.batch(step)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if pieces.device.type == "cuda":
            torch.cuda.synchronize()
        if step >= WARMUP_STEPS:  # the first steps allocate and pick kernels
            elapsed += time.perf_counter() - start
    return steps / max(elapsed, 1e-9)


def _expected_seconds(plan: DemoPlan, seeds: int, speed: float) -> float:
    runs = 1 + len(plan.sweep_lrs) + 2 * (seeds - 1)
    iterations = plan.range_steps + runs * plan.iterations
    # An evaluation forwards val + test images (3,000); a forward pass costs about a
    # third of a training step, counted in batches of the training size.
    evals = runs * (plan.iterations // plan.eval_every) * 3000
    evals += (plan.range_steps // plan.range_eval_every) * plan.val_size
    eval_iterations = evals / plan.batch_size / 3
    overhead = 1.5 * (runs + 1)  # loading the data and writing files, per run
    return (iterations + eval_iterations) / speed + overhead


def _spread(accs: Sequence[float]) -> str:
    if len(accs) == 1:
        return f"{accs[0]:.2f}%"
    return (
        f"{statistics.fmean(accs):.2f}% (mean of {len(accs)} seeds, "
        f"{min(accs):.2f}..{max(accs):.2f})"
    )


def _verdict(one, multi, plan, range_iters, n_sweep, seeds) -> list[str]:
    lines = [
        f"1cycle: {_spread(one.test_accs)} test accuracy in {plan.iterations} iterations "
        + (
            f"(max_lr {one.lr:.3g}: the range test's suggestion "
            f"{one.lr * 2 ** len(one.notes):.3g} halved after {len(one.notes)} divergence(s); "
            if one.notes
            else f"(max_lr {one.lr:.3g} suggested by the LR range test; "
        )
        + f"range test: {range_iters} iterations)",
        f"multistep (lr {multi.lr:g} picked by a sweep on the validation split): "
        f"{_spread(multi.test_accs)} test accuracy in {plan.iterations} iterations "
        f"(sweep: {n_sweep}x{plan.iterations} iterations, its best run is the baseline)",
    ]
    gap = one.mean_test_acc - multi.mean_test_acc
    leader = "1cycle" if gap > 0 else "multistep"
    if gap == 0:
        lines.append("Both policies reach the same test accuracy.")
    else:
        lines.append(f"{leader} is ahead by {abs(gap):.2f} points of test accuracy.")
    if seeds == 1:
        lines.append(
            "One seed each: a gap of a few tenths of a point can be seed noise "
            "(--seeds 3 shows the spread)."
        )
    else:
        overlap = min(one.test_accs) <= max(multi.test_accs) and min(multi.test_accs) <= max(
            one.test_accs
        )
        lines.append(
            f"Over {seeds} seeds the ranges "
            + ("overlap: the gap is within seed noise." if overlap else "do not overlap.")
        )
    lines.append(
        f"Tuning cost, iterations trained besides the final run: 1cycle "
        f"{one.tuning_iterations:,} (range test {range_iters}"
        + (f", diverged attempts {one.tuning_iterations - range_iters}" if one.notes else "")
        + f"), multistep {multi.tuning_iterations:,} (the other {n_sweep - 1} sweep runs)."
    )
    return lines


def _as_record(
    result: DemoResult, plan: DemoPlan, seeds: int, base: Any, env: dict[str, Any]
) -> dict[str, Any]:
    def side(o: PolicyOutcome) -> dict[str, Any]:
        return {
            "lr": o.lr,
            "test_accs": o.test_accs,
            "val_accs": o.val_accs,
            "mean_test_acc": o.mean_test_acc,
            "runs": [str(r) for r in o.runs],
            "tuning_iterations": o.tuning_iterations,
            "notes": o.notes,
        }

    return {
        "plan": {**plan.__dict__, "sweep_lrs": list(plan.sweep_lrs)},
        "seeds": seeds,
        "config": base.to_dict(),
        "range_test": {
            "iterations": len(result.range_test.curve.losses),
            "stop_reason": result.range_test.curve.stop_reason,
            "suggestion": result.range_test.suggestion.to_dict(),
        },
        "one_cycle": side(result.one_cycle),
        "multistep": side(result.multistep),
        "sweep": [
            {
                "lr": e["lr"],
                "val_acc": e["val_acc"],
                "iterations": e["iterations"],
                "run": str(e["run"]),
            }
            for e in result.sweep
        ],
        "wall_time": result.wall_time,
        "expected_time": result.expected_time,
        "summary": result.summary,
        "environment": env,
    }


def _markdown(
    result: DemoResult, plan: DemoPlan, seeds: int, base: Any, env: dict[str, Any], out: Path
) -> str:
    one, multi = result.one_cycle, result.multistep
    s = result.range_test.suggestion
    lines = [
        "# superconv demo: 1cycle vs a tuned multistep baseline at equal budget",
        "",
        "Caffe's LeNet on `mnist-demo` (the MNIST subset shipped with superconv): "
        f"{plan.train_images:,} training images, {plan.val_size:,} more held out of the training "
        f"set for every choice, 2,000 test images that are only reported. Batch {plan.batch_size}, "
        f"SGD momentum {base.momentum}, weight decay {base.weight_decay:g} (Caffe's LeNet solver), "
        f"{plan.iterations} iterations per run ({plan.iterations * plan.batch_size / plan.train_images:.1f} epochs).",
        "",
        "## Result",
        "",
        *[f"- {line}" for line in result.summary[:-1]],  # the last line points here
        "",
        "| policy | LR | chosen by | test accuracy (%) | validation accuracy (%) | iterations | tuning iterations |",
        "|---|---|---|---|---|---|---|",
        f"| 1cycle | max_lr {one.lr:.3g} | LR range test | {', '.join(f'{a:.2f}' for a in one.test_accs)} "
        f"| {', '.join(f'{a:.2f}' for a in one.val_accs)} | {plan.iterations} | {one.tuning_iterations:,} |",
        f"| multistep | lr {multi.lr:g} | sweep on validation | {', '.join(f'{a:.2f}' for a in multi.test_accs)} "
        f"| {', '.join(f'{a:.2f}' for a in multi.val_accs)} | {plan.iterations} | {multi.tuning_iterations:,} |",
        "",
        f"Seeds: {seeds} (the range test and the sweep use seed 0).",
        "",
        "## LR range test",
        "",
        f"Exponential {plan.range_start_lr:g} -> {plan.range_end_lr:g} over {plan.range_steps} "
        f"iterations, validation every {plan.range_eval_every}: ran "
        f"{len(result.range_test.curve.losses)} iterations ({result.range_test.curve.stop_reason}).",
        "",
        *[f"- `{key}`: {reason}" for key, reason in s.reasons.items()],
        "",
        f"![range test]({_relative(result.files['range_test_plot'], out)})",
        "",
        *(
            ["## 1cycle attempts", "", *[f"- {note}" for note in one.notes], ""]
            if one.notes
            else []
        ),
        "## Multistep sweep (x0.1 at 50% and 75% of the run)",
        "",
        "| lr | validation accuracy (%) | | run |",
        "|---|---|---|---|",
        _sweep_rows(result, out),
        "",
        "## Figures",
        "",
        "![test accuracy](accuracy.png)",
        "",
        "![1cycle schedule](schedule_one_cycle.png)",
        "",
        "![multistep schedule](schedule_multistep.png)",
        "",
        "## Machine",
        "",
        f"Wall time {format_duration(result.wall_time)} (expected {format_duration(result.expected_time)}); "
        f"{env['cpu']}, {base.threads or 'all'} thread(s), torch {env['torch']}, "
        f"python {env['python']}, commit {env['commit']}.",
        "",
    ]
    return "\n".join(lines)


def _relative(path: Path, out: Path) -> str:
    """``path`` relative to the demo's folder (as it is, if outside it)."""
    with contextlib.suppress(ValueError):
        return str(Path(path).relative_to(out))
    return str(path)


def _sweep_rows(result: DemoResult, out: Path) -> str:
    """demo.md's table rows of the multistep sweep: LR, validation accuracy, the pick, run."""
    return "\n".join(
        f"| {e['lr']:g} | "
        + (
            f"{e['val_acc']:.2f}"
            if e["val_acc"] is not None
            else f"diverged at {e['iterations'] - 1}"
        )
        + f" | {'**picked**' if e['lr'] == result.multistep.lr else ''} | "
        f"`{_relative(e['run'], out)}` |"
        for e in result.sweep
    )
