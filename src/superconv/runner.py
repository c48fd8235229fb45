"""Run an experiment's plan: :func:`reproduce` (manifest, resume, skip-committed, sweeps,
dry runs, ``--only``), knowing nothing of the paper.

It takes an :class:`~superconv.plan.Experiment` (the paper's come from
:mod:`superconv.paper`; the suggestion benchmark is one of them too) and runs its plan
at one scale: each step once per seed into ``out/<id>/<scale>/<row>/seed<k>/``, tuning
steps first (a :class:`~superconv.plan.Sweep` picks by validation accuracy, a
:class:`~superconv.plan.RangeTest` records ``suggest()``), then the rows that take
their values. ``manifest.json`` records each call, the tuned values and what tuning
cost; :func:`superconv.report.write_report` writes the report at the end.

Resumable: a finished (or diverged: a finding, kept) run is skipped, a started one
resumed from its checkpoint; several calls may share a results folder, each run
claimed by one of them (:func:`run_claim`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from superconv.config import TrainConfig
from superconv.errors import DivergenceError, UserError, did_you_mean
from superconv.plan import Experiment, Fit, Plan, RangeTest, Step, Sweep, Train, Tuned, pick_best
from superconv.runs import DONE, MANIFEST_FILE, RANGE_TEST_FILE
from superconv.timing import format_duration


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
    from superconv.config import _positive_int

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
    from superconv.data import DATASETS

    # The extras' optimizers are timed as the built-in nearest them (a dry run needs no
    # extra installed): schedule-free SGD as SGD, Prodigy (Adam with a step-size estimate)
    # as Adam.
    stand_in = {"schedulefree_sgd": "sgd", "prodigy": "adam"}.get(config.optimizer)
    if stand_in is not None:
        config = config.replace(optimizer=stand_in)
    classes = len(DATASETS[config.dataset].classes) if config.dataset in DATASETS else 10
    cpu = device.type == "cpu"
    batch = min(config.batch_size, 32) if cpu else config.batch_size
    eval_batch = min(config.eval_batch_size, 100) if cpu else config.eval_batch_size
    ghost = config.ghost_batch if config.ghost_batch and batch % config.ghost_batch == 0 else None
    key = (config.model, config.dataset, batch, eval_batch, ghost, config.optimizer, str(device))
    if key in cache:
        return cache[key]
    rates = _time_steps(config, device, batch, eval_batch, ghost, classes)
    cache[key] = rates
    return rates


def _time_steps(
    config: TrainConfig, device: Any, batch: int, eval_batch: int, ghost: int | None, classes: int
) -> tuple[float, float]:
    """Training and evaluation images/s of ``config``'s model: a few timed steps each."""
    import torch
    import torch.nn.functional as F

    from superconv.models import build_model
    from superconv.train import make_optimizer

    channels, height, width = _IMAGE_SHAPES.get(config.dataset, (3, 32, 32))
    cpu = device.type == "cpu"
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
    return rates[0], rates[1]


def _estimate(jobs: Sequence[_Job], device: Any, cache: dict) -> float:
    total = 0.0
    for job in jobs:
        config, train_images, eval_images = _planned_images(job)
        train_rate, eval_rate = _measure(config, device, cache)
        total += train_images / train_rate + eval_images / eval_rate
    return total


def estimate_wall_time(
    experiment: Experiment, scale: str = "small", device: str = "auto", *, seeds: int = 3
) -> float:
    """Expected seconds to run the whole plan of ``experiment`` on ``device``: an estimate.

    Measured images/s of each model on this device (a few timed steps on random
    inputs, cached for this call only) times the planned training and evaluation
    images. Start-up and data loading are not counted.
    """
    from superconv.config import resolve_device

    plan = experiment.plan(scale)
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
    experiment: Experiment,
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
    """Run ``experiment`` at ``scale`` for ``seeds`` seeds; write the report; return the run dirs.

    Layout: ``out/<experiment.id>/<scale>/<row>/seed<k>/`` run directories, plus
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

    from superconv.config import check_threads

    if threads is not None:
        check_threads(threads)
    call = _Call(seeds, scale, out, data_dir, device, progress, threads, only)
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _reproduce(experiment, call, dry_run)
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
            raise UserError(_no_step(plan, pattern, names))
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


def _no_step(plan: Plan, pattern: str, names: list[str]) -> str:
    """Why ``--only pattern`` selects nothing; a sweep's trial names the sweep to run."""
    trials = {j.path.parent.name: j.parent for j in _jobs(plan, 1, Path())}
    parents = sorted({p for t, p in trials.items() if fnmatch.fnmatchcase(t, pattern)})
    if parents:  # a grid point of a sweep: --only takes steps, a sweep is one
        return (
            f"--only {pattern!r} names runs inside the sweep(s) {', '.join(parents)}; --only "
            "selects whole steps. Run the sweep (its points train in order; two processes "
            "given the same step split its runs between them)."
        )
    hint = did_you_mean(pattern, names) or "."
    return f"--only {pattern!r} matches no step of this plan{hint} Steps: {', '.join(names)}."


@dataclass(frozen=True)
class _Call:
    """What one :func:`reproduce` call asked for (besides the experiment and ``dry_run``)."""

    seeds: int
    scale: str
    out: str | Path
    data_dir: str | None
    device: str
    progress: bool
    threads: int | None
    only: Sequence[str] | None

    def overrides(self) -> dict[str, Any]:
        """The config fields every run takes from the call (none changes what a run means)."""
        return {"device": self.device, "data_dir": self.data_dir, "threads": self.threads}


@dataclass(frozen=True)
class _Work:
    """A call's plan made concrete: its steps, runs and their state when the call began."""

    plan: Plan
    root: Path
    jobs: list[_Job]
    status: dict[Path, str]
    device: Any  # the torch.device the runs use

    @property
    def todo(self) -> list[_Job]:
        return [job for job in self.jobs if self.status[job.path] not in DONE]


def _reproduce(experiment: Experiment, call: _Call, dry_run: bool) -> list[Path]:
    from superconv.report import write_report

    work = _plan_work(experiment, call)
    estimate, env = _announce(experiment, call, work)
    if dry_run:
        for job in work.jobs:
            print(f"  [{work.status[job.path]:>8}] {job.path}  {_describe(job.step)}")
        return [job.path for job in work.jobs]
    work.root.mkdir(parents=True, exist_ok=True)
    invocation = _start_manifest(experiment, call, work, estimate, env)
    tuned, tuning, elsewhere = _run_steps(work, call)
    _finish_manifest(work, invocation, tuned, tuning)
    print(f"Report: {write_report(work.root)}")
    if elsewhere:
        print(
            f"  {len(elsewhere)} run(s) were left to the other process running them: "
            + ", ".join(str(p.relative_to(work.root)) for p in elsewhere)
        )
    return [job.path for job in work.jobs]


def _plan_work(experiment: Experiment, call: _Call) -> _Work:
    """The plan at the call's scale, cut to its ``--only`` steps, its runs and their state."""
    from superconv.config import resolve_device

    plan = experiment.plan(call.scale)
    seeds = _check_seeds(call.seeds)
    root = Path(call.out) / experiment.id / plan.scale
    dev = resolve_device(call.device)
    plan = dataclasses.replace(plan, steps=select_steps(plan, call.only))
    jobs = _jobs(plan, seeds, root)
    status = {job.path: _status(job.path, job.step) for job in jobs}
    return _Work(plan, root, jobs, status, dev)


def _announce(experiment: Experiment, call: _Call, work: _Work) -> tuple[float, dict[str, Any]]:
    """Print what the call will do and how long it should take: (estimate, environment)."""
    from superconv.records import environment

    todo = work.todo
    done = len(work.jobs) - len(todo)
    resuming = sum(work.status[j.path] == "resume" for j in todo)
    print(
        f"{experiment.id}: {experiment.title} [{work.plan.scale} scale, {call.seeds} seed(s)] "
        f"-> {work.root}"
    )
    print(
        f"  {len(work.jobs)} runs: {done} done, {resuming} to resume, "
        f"{len(todo) - resuming} to start."
    )
    estimate = _estimate(todo, work.device, {})
    env = environment(str(work.device))
    where = env.get("gpu") or env.get("cpu") or str(work.device)
    print(
        f"  Expected wall time on {work.device} ({where}): about {format_duration(estimate)}. "
        "This is an estimate: images/s measured here over a few steps x the planned images; "
        "start-up and data loading are not counted."
    )
    busy = _cpu_contention(work.device)
    if busy:
        print(f"  Note: {busy}")
    return estimate, env


def _start_manifest(
    experiment: Experiment, call: _Call, work: _Work, estimate: float, env: dict[str, Any]
) -> dict[str, Any]:
    """Record this call in the results folder's manifest; return its entry (ended later)."""
    from superconv.records import atomic_write_json, command_line

    where = env.get("gpu") or env.get("cpu") or str(work.device)
    path = work.root / MANIFEST_FILE
    manifest = _read_manifest(path)
    only = call.only
    invocation = {
        "command": command_line(),
        "call": (
            f"reproduce({experiment.id!r}, seeds={call.seeds}, scale={work.plan.scale!r}, "
            f"out={str(call.out)!r}, data_dir={call.data_dir!r}, device={call.device!r}, "
            f"threads={call.threads!r}" + (f", only={list(only)!r})" if only else ")")
        ),
        "commit": env["commit"],
        "device": str(work.device),
        "device_name": where,
        "seeds": call.seeds,
        "started": _now(),
        "finished": None,
        "estimated_seconds": round(estimate, 1),
        "id": f"{os.getpid()}-{time.time_ns()}",  # finds this call's entry again at the end
    }
    manifest.update(
        experiment=experiment.id,
        title=experiment.title,
        paper_item=experiment.paper_item,
        scale=work.plan.scale,
        seeds=call.seeds,
    )
    manifest.setdefault("invocations", []).append(invocation)
    atomic_write_json(path, manifest)
    return invocation


def _run_steps(
    work: _Work, call: _Call
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, Any]], list[Path]]:
    """Run the plan's steps in order: (tuned values, tuning cost, runs left to others)."""
    tuned: dict[str, dict[str, float]] = {}
    tuning: dict[str, dict[str, Any]] = {}
    elsewhere: list[Path] = []  # runs another process was running: left to it
    count = 0
    readers = [t for s in work.plan.steps for t in getattr(s, "tuned", ())]
    for step in work.plan.steps:
        step_jobs = [j for j in work.jobs if j.parent == step.name]
        values = tuned if isinstance(step, Train) else {}
        busy = []  # (job, label) of runs another process holds
        for job in step_jobs:
            count += 1
            label = f"[{count}/{len(work.jobs)}] {job.path.relative_to(work.root)}"
            if not _run_or_skip(job, work.status[job.path], values, call, label):
                busy.append((job, label))
        if isinstance(step, (Sweep, RangeTest)):
            # This call needs every trial's result to pick a value: wait for the others.
            for job, label in busy:
                print(f"{label}: waiting for the other process to end it")
                with run_claim(job.path, wait=True):
                    _run_claimed(job, values, call.overrides(), call.progress, label)
        else:
            elsewhere += [job.path for job, _ in busy]
        _pick(step, step_jobs, tuned, tuning, readers)
    return tuned, tuning, elsewhere


def _run_or_skip(job: _Job, status: str, values, call: _Call, label: str) -> bool:
    """Skip a run that ended before, else run it if no other process holds it.

    False: another process is running it (left to it here)."""
    if status in DONE:
        _check_same(job, values, call.overrides())
        print(f"{label}: {status} earlier, skipped")
        return True
    with run_claim(job.path) as mine:
        if mine:
            _run_claimed(job, values, call.overrides(), call.progress, label)
            return True
    print(f"{label}: another process is running it, skipped here")
    return False


def _pick(
    step: Step, jobs: Sequence[_Job], tuned: dict, tuning: dict, readers: Sequence[Tuned] = ()
) -> None:
    """After a tuning step: record the value it picked in ``tuned`` and its cost in ``tuning``.

    ``readers``: the plan's :class:`Tuned` fields; a range test read by the own rule of a
    reader that takes from it is also recorded under that reader's key."""
    if isinstance(step, Sweep):
        tuned[step.name] = {"best": _sweep_pick(step, jobs)}
        tuning[step.name] = _cost(jobs)
        print(
            f"  {step.name}: picked {step.param} = {tuned[step.name]['best']:g} (validation accuracy)"
        )
    elif isinstance(step, RangeTest):
        # A test with no suggestion is a finding (the suggestion benchmark records such
        # curves on purpose); only a row tuned from it has to stop, and it says so.
        readings = {step.name: (step.rule, step.budget)}
        readings.update({t.key: t.reading(step) for t in readers if t.source == step.name})
        for key, (rule, budget) in readings.items():
            try:
                tuned[key] = _range_pick(step, jobs, rule, budget)
            except UserError as exc:
                print(f"  {key}: {exc}")
        tuning[step.name] = _cost(jobs)


def _finish_manifest(work: _Work, invocation: dict[str, Any], tuned: dict, tuning: dict) -> None:
    """Merge this call's tuned values, runs and end time into the manifest."""
    from superconv.records import atomic_write_json

    path = work.root / MANIFEST_FILE
    # Read again and merge: another call (say with other --only rows) may have written
    # the manifest meanwhile; this call adds its rows, values and end time to what is there.
    manifest = _read_manifest(path)
    manifest["tuned"] = {**manifest.get("tuned", {}), **tuned}
    manifest["tuning"] = {**manifest.get("tuning", {}), **tuning}
    # Append only the new runs: keeping the order already there stops each call from
    # reshuffling the committed manifest (a diff with no content).
    known = manifest.get("runs", [])
    runs = [str(job.path.relative_to(work.root)) for job in work.jobs]
    manifest["runs"] = known + [r for r in runs if r not in known]
    invocation["finished"] = _now()
    calls = manifest.setdefault("invocations", [])
    mine = [i for i, c in enumerate(calls) if c.get("id") == invocation["id"]]
    if mine:
        calls[mine[0]] = invocation
    else:
        calls.append(invocation)
    atomic_write_json(path, manifest)


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

    from superconv.plots import plot_range_test, wrap_title
    from superconv.range_test import range_test
    from superconv.records import RunDir, environment
    from superconv.suggest import Suggestion, suggest, suggest_all
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
    shown = None if suggestion is None else Suggestion.from_dict(suggestion)
    marks = {
        name: o.max_lr
        for name, o in suggest_all(curve).items()
        if not isinstance(o, str) and (shown is None or name != shown.rule)
    }
    plot_range_test(
        curve,
        shown,
        path=run.path / "range_test.png",
        title=wrap_title(
            f"{step.name}: LR range test, evaluated on the {step.evaluate_on} set ({curve.ending()})"
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


def _range_pick(
    step: RangeTest, jobs: Sequence[_Job], rule: Any = None, budget: int | None = None
) -> dict[str, float]:
    """Seed 0's values read by ``rule`` for ``budget`` (None: the recorded suggestion)."""
    import json

    from superconv.suggest import range_test_values

    data = json.loads((jobs[0].path / RANGE_TEST_FILE).read_text(encoding="utf-8"))
    try:
        values = range_test_values(data, rule, budget)
    except UserError as exc:
        raise UserError(f"range test {step.name!r}, rule {rule[0]!r}: {exc}") from exc
    if values is None:
        raise UserError(
            f"range test {step.name!r} gave no suggestion ({data.get('no_suggestion')}); "
            "lower end_lr or lengthen the test."
        )
    return values


def _cost(jobs: Sequence[_Job]) -> dict[str, Any]:
    from superconv.runs import read_run, tuning_cost

    return tuning_cost([read_run(j.path) for j in jobs])
