"""From a model and a budget to a trained 1cycle: range test -> suggestion -> check -> train.

:func:`fit` (any ``nn.Module`` and ``DataLoader``\\ s) and :func:`fit_run` (a
:class:`~superconv.train.TrainConfig`, what ``superconv fit`` calls) run the
same four phases, each committed to ``fit.json`` as it ends so that an
interrupted fit resumes in its phase:

1. **range test** (``repeats`` seeds) read by :func:`superconv.suggest.suggest`'s
   default rule; by default it costs at most 10% of the training budget;
2. **check** (unless ``verify=False``): successive halving over candidates
   around the suggestion (x4, x2, x1, x1/2). Each rung trains *fresh* short
   1cycles (a 1cycle cannot be extended), the better half by validation score
   goes on to a rung twice as long; range test plus check fit in
   ``tune_budget`` x the training run (planned in iterations, measured in wall
   time and reported);
3. **train** the chosen 1cycle (:data:`superconv.suggest.CYCLE`) for the whole budget;
4. a final **test** evaluation, when there is test data (reported, never used
   for a choice).

The pure core (:func:`plan_budget`, :func:`candidate_lrs`, :func:`rung_lengths`,
:func:`successive_halving`, :func:`verdict`) is numbers in, numbers out, tested
with stub scorers; the two backends only say how one range test, one candidate
and the final run are trained.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from superconv.errors import DivergenceError, RunDirError, UserError

__all__ = [
    "FACTORS",
    "Budget",
    "FitResult",
    "Halving",
    "RangePlan",
    "Trial",
    "candidate_lrs",
    "find_cycle",
    "fit",
    "fit_run",
    "halving_cost",
    "plan_budget",
    "ranking_agreement",
    "rung_lengths",
    "run_scores",
    "successive_halving",
    "verdict",
]

FACTORS = (4.0, 2.0, 1.0, 0.5)  # candidates around the suggestion, largest first
RANGE_CAP = 0.1  # the range test's default share of the training budget
MIN_RANGE_STEPS = 10  # fewer cannot give a suggestion (3 readings after the burn-in)
MIN_RUNG = 10  # a shorter candidate run says nothing about its LR
MAX_HALVINGS = 2  # a final 1cycle that diverges is rerun at max_lr / 2, at most this often
SPREAD_LIMIT = 2.0  # suggestions over K seeds within a factor 2: the benchmark's tolerance
FIT_FILE = "fit.json"

Echo = Callable[[str], None]


# ----------------------------------------------------------------------------- pure core
@dataclass(frozen=True)
class RangePlan:
    """The range test of a fit: its ramp (SGD's exp ramp of the suggestion benchmark by
    default; :meth:`for_optimizer` gives the one the default rule was chosen on)."""

    start_lr: float = 1e-4
    end_lr: float = 10.0
    mode: str = "exp"
    evaluations: int = 10  # validation evaluations over the test

    @classmethod
    def for_optimizer(cls, optimizer: str = "sgd") -> RangePlan:
        """The default test's ramp for a TrainConfig optimizer name
        (:func:`superconv.suggest.default_range_test`: Adam/AdamW take the adaptive one)."""
        from superconv.suggest import default_range_test

        test = default_range_test(optimizer)
        return cls(start_lr=test["start_lr"], end_lr=test["end_lr"], mode=test["mode"])


@dataclass(frozen=True)
class Budget:
    """How a fit spends its budget, in training iterations (see :func:`plan_budget`)."""

    iterations: int  # the training run
    tune_budget: float  # range test + check <= tune_budget x iterations
    range_steps: int  # per range test
    repeats: int
    rung_first: int  # iterations of the first rung; 0 = no check
    candidates: int
    notes: tuple[str, ...] = ()

    @property
    def range_iterations(self) -> int:
        return self.range_steps * self.repeats

    @property
    def check_iterations(self) -> int:
        return halving_cost(self.candidates, self.rung_first) if self.rung_first else 0


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}.")


def rung_lengths(candidates: int, first: int) -> list[int]:
    """Iterations per rung: ``first``, doubled each rung, until one candidate is left.

    >>> rung_lengths(4, 10)
    [10, 20]
    """
    rungs = max(1, math.ceil(math.log2(candidates))) if candidates > 1 else 1
    return [first * 2**r for r in range(rungs)]


def halving_cost(candidates: int, first: int) -> int:
    """Iterations the check trains when no candidate diverges (rung r keeps ceil(n / 2^r)).

    >>> halving_cost(4, 10)  # 4 x 10 + 2 x 20
    80
    """
    alive, total = candidates, 0
    for length in rung_lengths(candidates, first):
        total += alive * length
        alive = math.ceil(alive / 2)
    return total


def plan_budget(
    iterations: int,
    *,
    tune_budget: float = 1.0,
    range_steps: int | None = None,
    repeats: int = 1,
    verify: bool = True,
    candidates: int = len(FACTORS),
) -> Budget:
    """Split a fit's budget: the range tests, then the check.

    The range test's default length is the default rule's (a share of the budget:
    :func:`superconv.suggest.default_range_test`); the ``repeats`` tests share a
    cap of 10% of ``iterations``; ``range_steps`` given and above
    it is allowed, with a notice. The
    check gets what is left of ``tune_budget x iterations``; its first rung is
    the longest that fits (and at most the training run), and the check is
    skipped, with a notice, when that is under :data:`MIN_RUNG` iterations.

    >>> b = plan_budget(1000)
    >>> b.range_steps, b.rung_first, b.check_iterations
    (40, 120, 960)
    """
    _check_int("iterations", iterations, 1)
    _check_int("repeats", repeats, 1)
    _check_int("candidates", candidates, 1)
    if not (
        isinstance(tune_budget, (int, float)) and math.isfinite(tune_budget) and tune_budget > 0
    ):
        raise UserError(f"tune_budget must be a number > 0, got {tune_budget!r}.")
    notes: list[str] = []
    cap = int(RANGE_CAP * iterations)  # all the range tests (repeats x steps) together
    if range_steps is None:
        from superconv.suggest import default_range_test

        # the length the default rule was chosen at (a share of the budget), within the cap
        steps = min(default_range_test(budget=iterations)["num_steps"], cap // repeats)
        if steps < MIN_RANGE_STEPS:
            minimum = math.ceil(MIN_RANGE_STEPS * repeats / RANGE_CAP)
            raise UserError(
                f"a budget of {iterations} iterations is too small for {repeats} range test(s): "
                f"they are capped at {RANGE_CAP:.0%} of the budget and each needs at least "
                f"{MIN_RANGE_STEPS} iterations, so the budget must be at least {minimum} "
                f"iterations (or set the range test's length, at least {MIN_RANGE_STEPS}, to "
                "exceed the cap)."
            )
    else:
        _check_int("range_steps", range_steps, MIN_RANGE_STEPS)
        steps = range_steps
        if steps * repeats > cap:
            notes.append(
                f"the range test ({repeats} x {steps} iterations) exceeds the {RANGE_CAP:.0%} cap "
                f"of the budget ({cap} iterations)"
            )
    first = 0
    if verify:
        left = int(tune_budget * iterations) - steps * repeats
        rungs = len(rung_lengths(candidates, 1))
        per_unit = halving_cost(candidates, 1)
        first = min(max(left, 0) // per_unit, iterations // 2 ** (rungs - 1))
        if first < MIN_RUNG:
            need = steps * repeats + per_unit * MIN_RUNG
            notes.append(
                f"check skipped: it needs at least {per_unit * MIN_RUNG} iterations after the "
                f"range test, and the tuning budget ({tune_budget:g} x {iterations}) leaves "
                f"{max(left, 0)}; raise the budget or the tune budget to at least "
                f"{need / iterations:.2f} x the training run"
            )
            first = 0
    return Budget(iterations, float(tune_budget), steps, repeats, first, candidates, tuple(notes))


def candidate_lrs(max_lr: float, factors: Sequence[float] = FACTORS) -> tuple[float, ...]:
    """The check's candidates: ``max_lr`` times each factor (x4, x2, x1, x1/2 by default)."""
    if not (isinstance(max_lr, (int, float)) and math.isfinite(max_lr) and max_lr > 0):
        raise UserError(f"max_lr must be a finite number > 0, got {max_lr!r}.")
    if not factors or any(not (math.isfinite(f) and f > 0) for f in factors):
        raise UserError(f"factors must be positive numbers, got {list(factors)!r}.")
    return tuple(float(max_lr * f) for f in factors)


@dataclass(frozen=True)
class Trial:
    """One candidate's short 1cycle: its score (higher is better) or ``None`` if it diverged.

    ``steps_run``: iterations actually trained (a diverged run stops early); the
    check is charged these. ``details``: what the backend measured (losses,
    accuracies, seconds, images, the run folder).
    """

    lr: float
    rung: int
    iterations: int
    score: float | None
    steps_run: int
    note: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)
    at_chance: bool = False  # finished, but at chance (collapse.ended_at_chance)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "details": dict(self.details)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trial:
        return cls(**{**d, "details": dict(d.get("details") or {})})


Scorer = Callable[[float, int, int], Trial]  # (lr, iterations, rung) -> Trial


@dataclass(frozen=True)
class Halving:
    """What :func:`successive_halving` did: every trial, who entered each rung, the choice."""

    trials: tuple[Trial, ...]
    rungs: tuple[tuple[float, ...], ...]
    chosen: float | None  # None: every candidate diverged
    notes: tuple[str, ...]

    @property
    def cost(self) -> int:
        """Iterations charged: every trial's ``steps_run``."""
        return sum(t.steps_run for t in self.trials)


def successive_halving(lrs: Sequence[float], first: int, scorer: Scorer) -> Halving:
    """Successive halving over ``lrs``: fresh runs of ``first``, ``2 first``, ... iterations.

    Each rung scores its candidates with ``scorer(lr, iterations, rung)``; a
    diverged one (``score is None``) is dropped and noted, the better half
    (rounded up) of the others enters the next rung. The last rung, or a rung
    with one survivor, picks the best. Ties keep the order of ``lrs``.

    >>> scores = {0.4: 90.0, 0.2: 95.0, 0.1: 93.0, 0.05: 80.0}
    >>> h = successive_halving(list(scores), 10, lambda lr, n, r: Trial(lr, r, n, scores[lr], n))
    >>> h.rungs, h.chosen, h.cost
    (((0.4, 0.2, 0.1, 0.05), (0.2, 0.1)), 0.2, 80)
    """
    _check_int("first", first, 1)
    alive = [float(lr) for lr in lrs]
    if not alive:
        raise UserError("successive halving needs at least one candidate.")
    lengths = rung_lengths(len(alive), first)
    trials: list[Trial] = []
    rungs: list[tuple[float, ...]] = []
    notes: list[str] = []
    for rung, length in enumerate(lengths):
        rungs.append(tuple(alive))
        results = _drop_at_chance([scorer(lr, length, rung) for lr in alive])
        trials += results
        for t in results:
            if t.at_chance and t.score is None:
                notes.append(
                    f"rung {rung}: max_lr {t.lr:.4g} ended at chance after {t.iterations} "
                    "iterations, where another candidate learned, and was dropped"
                )
            elif t.score is None:
                notes.append(
                    f"rung {rung}: max_lr {t.lr:.4g} diverged after {t.steps_run} of "
                    f"{t.iterations} iterations and was dropped"
                    + (f" ({t.note})" if t.note else "")
                )
        ranked = sorted((t for t in results if t.score is not None), key=lambda t: -t.score)
        if not ranked:
            return Halving(tuple(trials), tuple(rungs), None, tuple(notes))
        if rung == len(lengths) - 1 or len(ranked) == 1:
            return Halving(tuple(trials), tuple(rungs), ranked[0].lr, tuple(notes))
        alive = [t.lr for t in ranked[: math.ceil(len(ranked) / 2)]]
        if len(alive) == 1:  # the others diverged: a rung of one compares nothing
            return Halving(tuple(trials), tuple(rungs), alive[0], tuple(notes))
    raise AssertionError("unreachable: the last rung returns")  # pragma: no cover


def edge_note(lrs: Sequence[float], chosen: float | None, factors: Sequence[float]) -> str | None:
    """A note when the check chose its largest or smallest candidate: the best peak for
    the budget may lie beyond what was checked (None: the winner had neighbours on both
    sides, or nothing was chosen).

    >>> edge_note([0.4, 0.2, 0.1, 0.05], 0.2, (4, 2, 1, 0.5)) is None
    True
    >>> edge_note([0.4, 0.2, 0.1, 0.05], 0.4, (4, 2, 1, 0.5))[:47]
    'the check chose its largest candidate (max_lr 0'
    """
    if chosen is None or len(lrs) < 2 or min(lrs) < chosen < max(lrs):
        return None
    up = chosen >= max(lrs)
    shifted = ",".join(f"{f * (4 if up else 0.25):g}" for f in factors)
    # Short runs favour low peaks on batch-norm nets (the suggestion benchmark's t5, t6:
    # the large-LR benefit shows late), so a low winner is weaker evidence than a high one.
    caveat = "" if up else " (or the short runs favour low peaks, as on ResNet-20 in the suggestion benchmark)"
    return (
        f"the check chose its {'largest' if up else 'smallest'} candidate (max_lr {chosen:.4g}): "
        f"the best peak for this budget may lie {'above' if up else 'below'} it{caveat}; to "
        f"check {'higher' if up else 'lower'}, rerun with --factors {shifted} "
        f"(superconv.fit(..., factors=({shifted},)))"
    )


def _drop_at_chance(results: list[Trial]) -> list[Trial]:
    """A candidate that ended at chance is dropped like a diverged one, if another of its
    rung learned (then its LR is to blame, not the rung's length); if all sat at chance,
    they are ranked as they are. The training loop's collapse rule waits 100 iterations,
    longer than a short rung can last (the benchmark's t9: 49 iterations at batch 512)."""
    if all(t.at_chance or t.score is None for t in results):
        return results
    return [replace(t, score=None) if t.at_chance else t for t in results]


def log_median(values: Sequence[float]) -> float:
    """The median on a log scale (LRs are read per decade): for two seeds, their geometric mean.

    >>> round(log_median([0.01, 1.0]), 6), log_median([0.1, 0.2, 3.0])
    (0.1, 0.2)
    """
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]  # exactly one of the values
    return math.sqrt(ordered[mid - 1] * ordered[mid])


def verdict(suggested: Sequence[float], halving: Halving | None = None) -> dict[str, Any]:
    """How far to trust the cycle: checked by training, else the spread over seeds.

    ``suggested``: the suggested ``max_lr`` of each range-test seed. With a
    check that chose: *checked by training*; else with 2 or more seeds:
    *reliable* (max / min within :data:`SPREAD_LIMIT`) or *unreliable (spread
    over 2x)*; with one seed: *unchecked*.

    >>> verdict([0.1, 0.15])["verdict"], verdict([0.1, 0.3])["verdict"], verdict([0.1])["verdict"]
    ('reliable', 'unreliable (spread over 2x)', 'unchecked')
    """
    values = [float(v) for v in suggested if v is not None and math.isfinite(v) and v > 0]
    spread = max(values) / min(values) if len(values) >= 2 else None
    out: dict[str, Any] = {"seeds": len(values), "spread": spread}
    if values:
        out["suggested_max_lr"] = log_median(values)
    if halving is not None and halving.chosen is not None:
        ratio = halving.chosen / out["suggested_max_lr"]
        out["verdict"] = "checked by training"
        out["check"] = (
            f"the check chose max_lr {halving.chosen:.4g} = {ratio:g} x the suggestion "
            f"({len(halving.trials)} short runs, {halving.cost} iterations)"
        )
        out["chosen_factor"] = ratio
    elif spread is not None:
        out["verdict"] = "reliable" if spread <= SPREAD_LIMIT else "unreliable (spread over 2x)"
    else:
        out["verdict"] = "unchecked"
    return out


def ranking_agreement(short: Mapping[float, float], full: Mapping[float, float]) -> dict[str, Any]:
    """How well short-run scores rank LRs as full runs do (the check's premise; pure).

    ``short`` and ``full`` map max_lr to a score (higher is better; a missing LR
    or ``None`` is a diverged run, left out). Returns Kendall's tau over the LRs
    both have, whether the short runs' best is the full runs' best, and the
    regret: the best full score minus the full score of the short runs' pick.
    The hook for measuring the check on real run folders (see :func:`run_scores`).

    >>> r = ranking_agreement({0.1: 90, 0.2: 95, 0.4: 80}, {0.1: 92, 0.2: 94, 0.4: 85})
    >>> r["kendall_tau"], r["same_best"], r["regret"]
    (1.0, True, 0)
    """
    lrs = sorted(lr for lr in short if short[lr] is not None and full.get(lr) is not None)
    if len(lrs) < 2:
        raise UserError(f"ranking_agreement needs 2 LRs scored by both, got {len(lrs)}.")
    pairs = [(a, b) for i, a in enumerate(lrs) for b in lrs[i + 1 :]]
    sign = [
        math.copysign(1, (short[a] - short[b]) * (full[a] - full[b]))
        if (short[a] - short[b]) * (full[a] - full[b]) != 0
        else 0
        for a, b in pairs
    ]
    pick = max(lrs, key=lambda lr: short[lr])
    best = max(full[lr] for lr in lrs)
    return {
        "lrs": lrs,
        "kendall_tau": sum(sign) / len(pairs),
        "same_best": full[pick] == best,
        "short_pick": pick,
        "regret": best - full[pick],
    }


def run_scores(
    run_dirs: Iterable[str | Path], key: str = "final_val_acc"
) -> dict[float, float | None]:
    """max_lr -> ``key`` of finished 1cycle run folders (``None`` for a diverged one).

    Reads ``config.json`` (``policy_params.max_lr``) and ``summary.json`` of
    each folder, e.g. a fit's ``check/rung1-*`` against full-length runs at the
    same LRs, for :func:`ranking_agreement`.
    """
    from superconv.records import RunDir

    out: dict[float, float | None] = {}
    for folder in run_dirs:
        run = RunDir(folder)
        summary = run.read_summary()
        if summary is None:
            raise UserError(f"{run.path} has no summary.json: the run has not ended.")
        lr = float(run.read_config()["policy_params"]["max_lr"])
        out[lr] = summary.get(key) if summary.get("status") == "finished" else None
    return out


def _score(val_loss: float, val_acc: float) -> float | None:
    """Higher is better: validation accuracy where there is one, else minus the loss."""
    if not math.isfinite(val_loss):
        return None
    return float(val_acc) if val_acc is not None and math.isfinite(val_acc) else -float(val_loss)


# ----------------------------------------------------------------------------- the result
@dataclass
class FitResult:
    """What a fit found and trained: the chosen cycle, the check, the verdict and the files."""

    max_lr: float  # the trained cycle's peak (CYCLE.policy_params(max_lr))
    suggestion: Any  # superconv.suggest.Suggestion of the first seed
    budget: Budget
    record: dict[str, Any]  # the content of fit.json
    halving: Halving | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # the final run's
    out: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return self.record["verdict"]["verdict"]

    @property
    def policy_params(self) -> dict[str, Any]:
        from superconv.suggest import CYCLE

        return CYCLE.policy_params(self.max_lr)


# ----------------------------------------------------------------------------- the phases
class _Record:
    """fit.json: read on resume, rewritten atomically after each phase and each trial."""

    def __init__(self, out: Path | None, data: dict[str, Any]):
        self.out, self.data = out, data

    def commit(self) -> None:
        if self.out is not None:
            from superconv.records import atomic_write_json

            atomic_write_json(self.out / FIT_FILE, self.data)

    def phase(self, name: str) -> dict[str, Any] | None:
        return self.data["phases"].get(name)

    def done(self, name: str, content: dict[str, Any]) -> None:
        self.data["phases"][name] = content
        self.commit()


def _open_record(
    out: Path | None, settings: dict[str, Any], resume: bool, resumable: bool = True
) -> _Record:
    import json

    if out is None:
        return _Record(None, {"settings": settings, "phases": {}, "notes": []})
    path = out / FIT_FILE
    if path.is_file():
        if not resume:
            how = f"Resume it (--resume {out}) or choose" if resumable else "Choose"
            raise RunDirError(f"{out} already holds a fit. {how} another output folder.")
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("settings") != json.loads(json.dumps(settings)):
            changed = sorted(
                k
                for k in set(data.get("settings", {})) | set(settings)
                if data.get("settings", {}).get(k) != json.loads(json.dumps(settings.get(k)))
            )
            raise RunDirError(
                f"{out} holds a different fit (differs in: {', '.join(changed)}). Resume it with "
                "its own settings, or choose another output folder."
            )
        return _Record(out, data)
    if resume:
        raise RunDirError(f"nothing to resume in {out}: it has no {FIT_FILE}.")
    if out.exists() and any(out.iterdir()):
        raise RunDirError(
            f"the output folder {out} already exists and is not empty. Choose another, or "
            "remove it."
        )
    record = _Record(out, {"settings": settings, "phases": {}, "notes": []})
    return record


def _phases(
    backend: Any,
    budget: Budget,
    rplan: RangePlan,
    record: _Record,
    echo: Echo,
    seed: int,
    factors: Sequence[float],
    train: bool = True,
) -> FitResult:
    """Run (or, on resume, read from ``fit.json``) each phase in turn; commit each as it ends."""
    from superconv.suggest import CYCLE

    for note in budget.notes:
        if note not in record.data["notes"]:
            record.data["notes"].append(note)
        echo(f"Notice: {note}.")
    readable = _range_phase(backend, budget, rplan, record, echo, seed)
    suggested = log_median([s.max_lr for s in readable])
    halving = None
    if budget.rung_first:
        halving = _check_phase(backend, budget, record, echo, suggested, factors, readable)
    if "train" not in record.data["phases"]:  # a finished run keeps what it was trained with
        chosen = halving.chosen if halving is not None else suggested
        record.data["verdict"] = verdict([s.max_lr for s in readable], halving)
        record.data["max_lr"] = chosen
        record.data["policy_params"] = CYCLE.policy_params(chosen)
        record.commit()
    if not train:
        return FitResult(record.data["max_lr"], readable[0], budget, record.data, halving)
    done = _train_phase(backend, budget, record, echo)
    return FitResult(
        record.data["max_lr"], readable[0], budget, record.data, halving, dict(done), record.out
    )


def _range_phase(backend, budget, rplan, record, echo, seed) -> list[Any]:
    """Phase 1: ``repeats`` range tests; the readable suggestions (curves kept in fit.json)."""
    from superconv.range_test import RangeTestCurve
    from superconv.suggest import Suggestion, suggest

    rt = record.phase("range_test")
    if rt is None:
        echo(
            f"[1/3] LR range test: {rplan.mode} {rplan.start_lr:g} -> {rplan.end_lr:g}, "
            f"{budget.range_steps} iterations x {budget.repeats} seed(s) "
            f"({budget.range_iterations / budget.iterations:.0%} of the training budget)"
        )
        rt = {
            "curves": [],
            "suggestions": [],
            "errors": [],
            "seeds": [],
            "seconds": 0.0,
            "train_images": 0,
            "eval_images": 0,
        }
        for k in range(budget.repeats):
            t0 = time.perf_counter()
            curve, images = backend.range_test(seed + k, budget.range_steps, rplan)
            rt["seconds"] += time.perf_counter() - t0
            rt["train_images"] += images[0]
            rt["eval_images"] += images[1]
            try:
                s = suggest(curve, "default", budget=budget.iterations)
                rt["suggestions"].append(s.to_dict())
                rt["errors"].append(None)
                echo(
                    f"      seed {seed + k}: max_lr {s.max_lr:.4g} ({curve.stop_reason}): {s.reason}"
                )
            except UserError as exc:  # a curve too short to read: kept, and said why
                rt["suggestions"].append(None)
                rt["errors"].append(str(exc))
                echo(f"      seed {seed + k}: no suggestion: {exc}")
            rt["curves"].append(curve.to_dict())
            rt["seeds"].append(seed + k)
        rt["iterations"] = sum(len(c["losses"]) for c in rt["curves"])
        record.done("range_test", rt)
        if record.out is not None:  # the curve as a figure at once (the report redraws it)
            from superconv.plots import plot_range_test

            first = next((s for s in rt["suggestions"] if s is not None), None)
            plot_range_test(
                RangeTestCurve.from_dict(rt["curves"][0]),
                None if first is None else Suggestion.from_dict(first),
                path=record.out / "range_test.png",
            )
    else:
        echo("[1/3] LR range test: done (read from fit.json)")
    readable = [Suggestion.from_dict(s) for s in rt["suggestions"] if s is not None]
    if not readable:
        raise UserError(
            f"the LR range test gave no suggestion: {rt['errors'][0]} The curve is saved in "
            f"{record.out / FIT_FILE if record.out else 'the result'}; give the range test more "
            "iterations (range_steps) or another LR range."
        )
    return readable


def _check_phase(backend, budget, record, echo, suggested, factors, readable) -> Halving:
    """Phase 2: successive halving around ``suggested``; every trial committed as it ends."""
    check = record.phase("check") or {"trials": [], "done": False}
    lrs = candidate_lrs(suggested, factors)
    lengths = rung_lengths(len(lrs), budget.rung_first)
    echo(
        f"[2/3] check: successive halving over max_lr {', '.join(f'{lr:.3g}' for lr in lrs)}; "
        f"rungs of {', '.join(map(str, lengths))} iterations "
        f"(at most {budget.check_iterations} iterations)"
    )
    cached = {(t["rung"], round(t["lr"], 12)): Trial.from_dict(t) for t in check["trials"]}

    def scorer(lr: float, iterations: int, rung: int) -> Trial:
        key = (rung, round(lr, 12))
        if key in cached:  # trained before an interruption: read, not retrained
            return cached[key]
        t0 = time.perf_counter()
        trial = backend.trial(lr, iterations, rung)
        trial = Trial(
            trial.lr,
            trial.rung,
            trial.iterations,
            trial.score,
            trial.steps_run,
            trial.note,
            {**trial.details, "seconds": time.perf_counter() - t0},
        )
        check["trials"].append(trial.to_dict())
        record.done("check", check)
        shown = "diverged" if trial.score is None else f"score {trial.score:.4g}"
        echo(f"      rung {rung}: max_lr {lr:.4g}, {iterations} iterations: {shown}")
        return trial

    halving = successive_halving(lrs, budget.rung_first, scorer)
    edge = edge_note(lrs, halving.chosen, factors)
    check.update(
        done=True,
        candidates=list(lrs),
        rung_lengths=lengths,
        rungs=[list(r) for r in halving.rungs],
        chosen=halving.chosen,
        cost_iterations=halving.cost,
        notes=[*halving.notes, *([edge] if edge else [])],
        seconds=sum(t.details.get("seconds", 0.0) for t in halving.trials),
        train_images=sum(t.details.get("train_images", 0) for t in halving.trials),
        eval_images=sum(t.details.get("eval_images", 0) for t in halving.trials),
    )
    record.done("check", check)
    for note in check["notes"]:
        echo(f"      {note}")
    if halving.chosen is None:
        record.data["verdict"] = verdict([s.max_lr for s in readable], halving)
        record.commit()
        raise DivergenceError(
            f"every candidate of the check diverged (max_lr {', '.join(f'{x:.3g}' for x in lrs)}); "
            f"the range-test curve and the trials are saved in "
            f"{record.out / FIT_FILE if record.out else 'the result'}. The suggestion "
            f"({suggested:.3g}) is too large for this model and budget: lower the range "
            "test's end_lr, or check the data.",
            step=0,
            lr=max(lrs),
        )
    echo(f"      chose max_lr {halving.chosen:.4g}")
    return halving


def _train_phase(backend, budget, record, echo) -> dict[str, Any]:
    """Phase 3 (and the test evaluation): the chosen 1cycle for the whole budget.

    A 1cycle that diverges late (longer at a high LR than any check run) is halved
    and rerun, as the demo does; each attempt is committed first, so resume continues it.
    """
    from superconv.suggest import CYCLE

    done = record.phase("train")
    if done is not None:
        echo("[3/3] training: done (read from fit.json)")
        return done
    attempt = record.data.setdefault("train_attempt", {"n": 0, "max_lr": record.data["max_lr"]})
    max_lr = attempt["max_lr"]
    while True:
        echo(
            f"[3/3] training: 1cycle max_lr {max_lr:.4g} (div {CYCLE.div:g}), "
            f"{budget.iterations} iterations"
        )
        t0 = time.perf_counter()
        try:
            summary = backend.final(max_lr, budget.iterations, attempt["n"])
            break
        except DivergenceError as exc:
            note = f"the 1cycle at max_lr {max_lr:.4g} diverged at iteration {exc.step}"
            if attempt["n"] == MAX_HALVINGS:
                record.data["notes"].append(note + "; no halvings left")
                record.commit()
                raise
            max_lr /= 2
            attempt.update(n=attempt["n"] + 1, max_lr=max_lr)
            record.data["notes"].append(note + f"; rerun at max_lr {max_lr:.4g}")
            record.commit()
            echo(f"      {record.data['notes'][-1]}")
    # a resumed run's own wall_time counts the part before the interruption too
    summary["seconds"] = max(time.perf_counter() - t0, summary.get("wall_time") or 0.0)
    record.data["max_lr"] = max_lr
    record.data["policy_params"] = CYCLE.policy_params(max_lr)
    if attempt["n"]:
        record.data["verdict"]["trained"] = (
            f"the full run diverged at the chosen max_lr and was trained at {max_lr:.4g} "
            f"(halved {attempt['n']} time(s))"
        )
    rt, check = record.phase("range_test"), record.phase("check") or {}
    tuning = rt["seconds"] + check.get("seconds", 0.0)
    # The plan is in iterations (deterministic, so a resumed fit replays it); wall time is
    # measured and stated beside it.
    record.data["tuning_seconds"] = tuning
    record.data["tuning_wall_ratio"] = tuning / summary["seconds"] if summary["seconds"] else None
    if summary["seconds"] and tuning > budget.tune_budget * summary["seconds"]:
        record.data["notes"].append(
            f"tuning took {tuning:.1f} s of wall time, more than {budget.tune_budget:g} x the "
            f"training run's {summary['seconds']:.1f} s (planned in iterations; evaluations and "
            "start-up of the short runs cost extra)"
        )
    record.done("train", summary)
    return summary


# ----------------------------------------------------------------------------- report
def _write_report(result: FitResult, title: str) -> dict[str, Path]:
    """fit.md and its figures in the fit's folder (from fit.json and the run folders only)."""
    from superconv.plots import plot_candidates, plot_curves, plot_range_test, plot_schedule
    from superconv.range_test import RangeTestCurve
    from superconv.records import atomic_write_text, read_csv
    from superconv.schedules import build_policy
    from superconv.suggest import CYCLE

    out, data = result.out, result.record
    assert out is not None
    files: dict[str, Path] = {}
    rt = data["phases"]["range_test"]
    check = data["phases"].get("check")
    curve = RangeTestCurve.from_dict(rt["curves"][0])
    lrs = check["candidates"] if check else []
    files["range_test"] = plot_range_test(
        curve,
        result.suggestion,
        path=out / "range_test.png",
        candidates=lrs,
        show_band=True,
        title=f"LR range test ({title}); candidates dashed",
    )
    if check:
        files["candidates"] = plot_candidates(
            [Trial.from_dict(t) for t in check["trials"]],
            chosen=check["chosen"],
            path=out / "candidates.png",
        )
    iterations = result.budget.iterations
    files["schedule"] = plot_schedule(
        build_policy("one_cycle", iterations, **CYCLE.policy_params(result.max_lr)),
        iterations,
        out / "schedule.png",
        title=f"the chosen 1cycle: max_lr {result.max_lr:.4g}, div {CYCLE.div:g}, "
        f"momentum {CYCLE.momentum[0]} -> {CYCLE.momentum[1]}",
    )
    metrics = out / data["phases"]["train"]["run"] / "metrics.csv"
    rows = read_csv(metrics) if metrics.is_file() else []
    series = {
        name: [{"iteration": r["iteration"], "acc": r.get(key)} for r in rows]
        for name, key in (("validation", "val_acc"), ("test", "test_acc"))
        if any(r.get(key) is not None for r in rows)
    }
    if series:
        files["training"] = plot_curves(
            series, "acc", path=out / "training.png", title="accuracy (%) during training"
        )
    files["markdown"] = atomic_write_text(out / "fit.md", _markdown(result, title, files))
    return files


def _markdown(result: FitResult, title: str, files: Mapping[str, Path]) -> str:
    data, budget = result.record, result.budget
    rt, check, train = (data["phases"].get(k) for k in ("range_test", "check", "train"))
    v = data["verdict"]
    s = result.suggestion
    seeds = ", ".join(f"{x['max_lr']:.4g}" if x else "none" for x in rt["suggestions"])
    lines = [
        f"# superconv fit: {title}",
        "",
        f"- chosen cycle: 1cycle, max_lr {result.max_lr:.4g}, div {data['policy_params']['div']} "
        f"(`one_cycle` parameters `{data['policy_params']}`) for {budget.iterations} iterations",
        f"- verdict: **{v['verdict']}**"
        + (f": {v['check']}" if "check" in v else "")
        + (f"; {v['trained']}" if "trained" in v else "")
        + (f"; spread over {v['seeds']} seeds {v['spread']:.2f}x" if v.get("spread") else ""),
    ]
    for key, label in (("final_val_acc", "validation"), ("final_test_acc", "test")):
        if train.get(key) is not None:
            lines.append(f"- final {label} accuracy: {train[key]:.2f}%")
    lines.append(f"- data: {data['split']}")
    lines += [f"- notice: {n}" for n in data["notes"]]
    lines += [
        "",
        "## Range test",
        "",
        f"{budget.range_steps} iterations x {budget.repeats} seed(s); suggested max_lr per seed: "
        f"{seeds} (rule `{s.rule}`: {s.reason}). Band {s.band[0]:.3g}..{s.band[1]:.3g}.",
        "",
        f"![range test]({files['range_test'].name})",
        "",
    ]
    lines += _markdown_check(check)
    lines += [
        "## The chosen cycle",
        "",
        "![schedule](schedule.png)",
        "",
    ]
    if "training" in files:
        lines += ["## Training", "", "![training](training.png)", ""]
    lines += _markdown_costs(budget, rt, check, train)
    ratio = data.get("tuning_wall_ratio")
    if ratio is not None:
        lines += [
            "",
            f"Tuning (range test + check) took {ratio:.2f} x the training run's wall time "
            f"(tune budget {budget.tune_budget:g}; planned in iterations, so a resumed fit "
            "replays the same plan; evaluations and the start-up of each short run cost extra).",
        ]
    return "\n".join(lines) + "\n"


def _markdown_check(check: Mapping[str, Any] | None) -> list[str]:
    """fit.md's section on the check: its trials by rung, the chosen one marked."""
    if not check:
        return ["## Check", "", "Not run (verify off, or no budget left for it).", ""]
    lines = [
        "## Check: successive halving",
        "",
        "| rung | max_lr | iterations | score (val acc %, or -val loss) | |",
        "|---|---|---|---|---|",
    ]
    for t in check["trials"]:
        score = "diverged" if t["score"] is None else f"{t['score']:.4g}"
        if t.get("at_chance") and t["score"] is None:
            score = "at chance (dropped)"
        mark = (
            "**chosen**"
            if t["lr"] == check["chosen"] and t["rung"] == max(x["rung"] for x in check["trials"])
            else ""
        )
        lines.append(f"| {t['rung']} | {t['lr']:.4g} | {t['iterations']} | {score} | {mark} |")
    lines += ["", *[f"- {n}" for n in check["notes"]], "", "![candidates](candidates.png)", ""]
    return lines


def _markdown_costs(
    budget: Budget,
    rt: Mapping[str, Any],
    check: Mapping[str, Any] | None,
    train: Mapping[str, Any],
) -> list[str]:
    """fit.md's table of iterations, wall time and images per phase."""
    lines = [
        "## Time and images per phase",
        "",
        "| phase | iterations | share of the training run | wall time (s) | training images "
        "| evaluation images |",
        "|---|---|---|---|---|---|",
    ]
    T = budget.iterations
    rows = [("range test", rt.get("iterations", budget.range_iterations), rt)]
    if check:
        rows.append(("check", check["cost_iterations"], check))
    for name, its, phase in rows:
        lines.append(
            f"| {name} | {its:,} | {its / T:.0%} | {phase['seconds']:.1f} | "
            f"{phase['train_images']:,} | {phase['eval_images']:,} |"
        )
    lines.append(
        f"| training | {T:,} | 100% | {train.get('seconds', 0.0):.1f} | "
        f"{train.get('train_images_seen', 0):,} | {train.get('eval_images', 0):,} |"
    )
    return lines


# ----------------------------------------------------------------------------- CLI backend
def _ended_at_chance(run_dir: Path, summary: Mapping[str, Any]) -> bool:
    """A finished short run that sat at chance to its end (the benchmark counts it as
    diverged; the training loop's collapse rule waits longer than such a run lasts)."""
    from superconv.collapse import ended_at_chance
    from superconv.records import RunDir, read_csv

    metrics = RunDir(run_dir).metrics_path
    if not summary.get("num_classes") or not metrics.is_file():
        return False
    return ended_at_chance(read_csv(metrics), num_classes=int(summary["num_classes"])) is not None


class _ConfigBackend:
    """Everything from a TrainConfig: superconv's models and data, ``train.train`` run folders."""

    def __init__(self, config: Any, out: Path, progress: bool, test_images: int, board: Any = None):
        self.config, self.out, self.progress = config, out, progress
        self.val_images, self.test_images = config.val_size, test_images
        self.board = board  # a TensorBoardLogger, or None

    def range_test(self, seed: int, steps: int, rplan: RangePlan):
        import torch.nn.functional as F

        from superconv.range_test import range_test
        from superconv.train import build

        config = self.config.replace(
            seed=seed, iterations=steps, policy="constant", policy_params={"lr": 0.0}
        )
        pieces = build(config)
        curve = range_test(
            pieces.model,
            pieces.optimizer,
            F.cross_entropy,
            pieces.loader,
            pieces.eval_loaders.get("val"),
            start_lr=rplan.start_lr,
            end_lr=rplan.end_lr,
            num_steps=steps,
            mode=rplan.mode,
            eval_every=max(1, steps // rplan.evaluations),
            autocast_dtype=pieces.autocast_dtype,
            device=pieces.device,
            progress=self.progress,
        )
        images = (len(curve.losses) * config.batch_size, len(curve.eval_steps) * self.val_images)
        if self.board is not None:
            self.board.log_range_test(curve, prefix=f"range_test/seed{seed}")
        return curve, images

    def _run(
        self, lr: float, iterations: int, run_dir: Path, board: Any = None, **changes: Any
    ) -> dict[str, Any]:
        from superconv.records import RunDir
        from superconv.suggest import CYCLE
        from superconv.train import train

        config = self.config.replace(
            policy="one_cycle",
            policy_params=CYCLE.policy_params(lr),
            iterations=iterations,
            **changes,
        )
        summary = RunDir(run_dir).read_summary() if run_dir.is_dir() else None
        if summary is not None and summary.get("status") in ("finished", "diverged"):
            return summary  # done before an interruption: read, not retrained
        resume = (run_dir / "config.json").is_file()
        return train(config, run_dir, resume=resume, progress=self.progress, logger=board).summary

    def trial(self, lr: float, iterations: int, rung: int) -> Trial:
        run_dir = self.out / "check" / f"rung{rung}-lr{lr:.4g}"
        # one evaluation (and one checkpoint) at the end of the short run
        changes = {"eval_every": iterations, "checkpoint_every": iterations}
        try:
            summary = self._run(lr, iterations, run_dir, **changes)
        except DivergenceError as exc:
            summary = {"status": "diverged", "iterations": exc.step, "note": str(exc)}
        diverged = summary.get("status") == "diverged"
        # a NaN at step k (0-based) ran k + 1 steps; the collapse rule names the row's
        # iteration, at most the run's length
        steps = min(iterations, int(summary["iterations"]) + (1 if diverged else 0))
        details = {
            "run": str(run_dir.relative_to(self.out)),
            "val_acc": summary.get("final_val_acc"),
            "train_images": steps * self.config.batch_size,
            "eval_images": 0 if diverged else self.val_images + self.test_images,
        }
        if diverged:
            collapsed = "collapse" in summary or "collapsed" in str(summary.get("note", ""))
            what = "collapsed: finite but blown up or at chance" if collapsed else "loss NaN/inf"
            return Trial(lr, rung, iterations, None, steps, what, details)
        val_acc = summary.get("final_val_acc")
        if val_acc is None or not math.isfinite(val_acc):  # NaN outputs at evaluation
            return Trial(lr, rung, iterations, None, steps, "validation NaN", details)
        at_chance = _ended_at_chance(run_dir, summary)  # see _drop_at_chance
        return Trial(lr, rung, iterations, float(val_acc), steps, "", details, at_chance)

    def final(self, lr: float, iterations: int, attempt: int = 0) -> dict[str, Any]:
        name = "train" if attempt == 0 else f"train-retry{attempt}"
        summary = dict(self._run(lr, iterations, self.out / name, board=self.board))
        if summary.get("status") == "diverged":
            raise DivergenceError(
                f"the chosen 1cycle (max_lr {lr:.4g}) diverged at iteration "
                f"{summary['iterations']}; see {self.out / name}.",
                step=int(summary["iterations"]),
                lr=lr,
            )
        evals = math.ceil(iterations / self.config.eval_every)
        summary["train_images_seen"] = iterations * self.config.batch_size
        summary["eval_images"] = evals * (self.val_images + self.test_images)
        summary["run"] = name
        return summary


def fit_run(
    config: Any,
    out: str | Path,
    *,
    epochs: float | None = None,
    tune_budget: float = 1.0,
    verify: bool = True,
    repeats: int = 1,
    range_steps: int | None = None,
    range_plan: RangePlan | None = None,
    factors: Sequence[float] = FACTORS,
    evaluations: int | None = 10,
    resume: bool = False,
    progress: bool = True,
    echo: Echo = print,
    tensorboard: str | Path | None = None,
    logger: Any = None,
) -> FitResult:
    """:func:`fit` for a :class:`~superconv.train.TrainConfig` (what ``superconv fit`` runs).

    ``config.iterations`` is the training budget (or ``epochs`` of the training
    split, rounded up); ``config.val_size`` images held out of the training set
    serve every choice (it must be > 0). The policy fields of ``config`` are
    ignored: the fit trains :data:`~superconv.suggest.CYCLE`. Writes into
    ``out``: ``fit.json`` (after each phase and each trial), ``range_test``
    curves inside it, ``check/rung<r>-lr<v>/`` and ``train/`` run folders
    (resumable), ``fit.md`` and its figures. ``resume=True`` continues an
    interrupted fit in its phase with the settings recorded in ``fit.json``.
    ``evaluations``: metrics rows (and checkpoints) of the training run; ``None``
    keeps ``config.eval_every`` and ``config.checkpoint_every``.
    ``tensorboard`` (a folder) / ``logger``: TensorBoard event files beside the
    records: each range test (``range_test/seed<s>/...``), the training run's
    loss, LR, momentum and metrics rows, and the chosen ``fit/max_lr``.
    """
    out = Path(out)
    _check_fit_run(config)
    if range_plan is None:  # the default test's ramp for this optimizer
        range_plan = RangePlan.for_optimizer(config.optimizer)
    sizes = _split_sizes(config)
    config = _budgeted(config, epochs, evaluations, sizes)
    budget = plan_budget(
        config.iterations,
        tune_budget=tune_budget,
        range_steps=range_steps,
        repeats=repeats,
        verify=verify,
        candidates=len(factors),
    )
    settings = {
        "train_config": config.to_dict(),
        "epochs": epochs,
        "tune_budget": float(tune_budget),
        "verify": verify,
        "repeats": repeats,
        "range_steps": range_steps,
        "range_plan": asdict(range_plan),
        "factors": [float(f) for f in factors],
        "evaluations": evaluations,
        "budget": asdict(budget),
    }
    record = _open_record(out, settings, resume)
    if record.out is not None and not record.data["phases"]:
        _record_start(record, out, config, sizes)
    echo(
        f"superconv fit: {config.model} on {config.dataset}, {budget.iterations} iterations at "
        f"batch {config.batch_size}; {record.data['split']}."
    )
    with _board(tensorboard, logger, config.log_every) as board:
        backend = _ConfigBackend(config, out, progress, sizes[1], board=board)
        with _resume_hint(out, record, budget):
            result = _phases(backend, budget, range_plan, record, echo, config.seed, factors)
        _log_choice(board, result)
    result.files = _write_report(result, f"{config.model} on {config.dataset}")
    return result


@contextlib.contextmanager
def _resume_hint(out: Path, record: Any, budget: Budget) -> Iterator[None]:
    """An interrupt of the fit's phases says which phase it stopped in and how to continue."""
    try:
        yield
    except KeyboardInterrupt as exc:
        raise KeyboardInterrupt(
            f"the fit was interrupted in its {_current_phase(record, budget)} phase ({exc}); "
            f"every finished phase is in {out / FIT_FILE}. Continue it with "
            f"superconv fit --resume {out}"
        ) from exc


def _check_fit_run(config: Any) -> None:
    """Refuse what fit_run cannot do: several processes, no validation split, a bad config."""
    from superconv.distributed import world_from_env

    if world_from_env().world_size > 1:
        raise UserError(
            "fit runs in one process: its range test and check are not distributed yet. Run "
            "it without torchrun, then train the chosen cycle with torchrun superconv train."
        )
    if config.val_size <= 0:
        raise UserError(
            "fit needs a validation split for its choices: set val_size > 0 (images held out "
            "of the training set; the test set is never used for a choice)."
        )
    config.validate()


def _split_sizes(config: Any) -> tuple[int, int]:
    """The data set's training and test images (a folder's counted, not loaded)."""
    from superconv.data import load_dataset

    if config.dataset.startswith("folder:"):  # your own images: counted, not loaded
        from superconv.data.folder import folder_splits

        train_images, test_set = folder_splits(config.dataset, check=False)
        return (len(train_images), len(test_set) if test_set is not None else 0)
    data = load_dataset(config.dataset, config.data_dir)
    return (len(data.train_y), len(data.test_y))


def _budgeted(
    config: Any, epochs: float | None, evaluations: int | None, sizes: tuple[int, int]
) -> Any:
    """``config`` with the iterations of ``epochs`` (if given) and its metrics rows and
    checkpoints every ``iterations / evaluations`` (if given)."""
    num_train = sizes[0] - config.val_size
    if config.train_subset is not None:
        num_train = min(num_train, config.train_subset)
    if epochs is not None:
        if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs > 0):
            raise UserError(f"epochs must be a number > 0, got {epochs!r}.")
        config = config.replace(
            iterations=max(1, math.ceil(epochs * num_train / config.batch_size))
        )
    if evaluations is not None:  # metrics rows and checkpoints (the resume points) alike
        every = max(1, config.iterations // evaluations)
        config = config.replace(eval_every=every, checkpoint_every=every)
    return config


def _record_start(record: Any, out: Path, config: Any, sizes: tuple[int, int]) -> None:
    """A new fit's record: its environment and the split, stated."""
    from superconv.records import environment
    from superconv.train import resolve_device

    out.mkdir(parents=True, exist_ok=True)
    record.data["environment"] = environment(str(resolve_device(config.device)), config.seed)
    record.data["split"] = (
        f"{config.val_size} images held out of the {sizes[0]} training images for "
        f"validation (split seed {config.split_seed}); {sizes[1]} test images are "
        "only reported"
    )
    record.commit()


def _board(tensorboard: Any, logger: Any, every: int = 10) -> Any:
    """The TensorBoard logger of ``tensorboard=`` / ``logger=`` (a context), or a null one."""
    if tensorboard is None and logger is None:
        return contextlib.nullcontext()
    from superconv.integrations.tensorboard import logging_to

    return logging_to(tensorboard, logger, every=every)


def _log_choice(board: Any, result: FitResult) -> None:
    if board is None:
        return
    values = {"max_lr": result.max_lr}
    if result.suggestion is not None:
        values["suggested_max_lr"] = result.suggestion.max_lr
    board.log_row(0, values, prefix="fit")


def _current_phase(record: _Record, budget: Budget) -> str:
    phases = record.data["phases"]
    if "range_test" not in phases:
        return "range test"
    if budget.rung_first and not (phases.get("check") or {}).get("done"):
        return "check"
    return "training" if "train" not in phases else "report"


# ----------------------------------------------------------------------------- API backend
def _optimizer_name(make: Callable[..., Any] | None) -> str:
    """The TrainConfig name of a user's optimizer factory, as far as the ramp cares:
    "adamw"/"adam" for torch's Adam family (a class, or a partial of one), else "sgd"."""
    target = getattr(make, "func", make)  # functools.partial
    name = getattr(target, "__name__", "").lower()
    return name if name in ("adam", "adamw") else "sgd"


def _default_optimizer(params: Iterable[Any]) -> Any:
    import torch

    # lr=0: schedules.apply writes it; 0.9 is the paper's momentum (Table 6), cycled by CYCLE.
    return torch.optim.SGD(params, lr=0.0, momentum=0.9, weight_decay=5e-4)


class _ModuleBackend:
    """A user's ``nn.Module`` and DataLoaders: one short loop, candidates on copies of the model."""

    def __init__(
        self,
        model,
        train_loader,
        val_loader,
        test_loader,
        loss_fn,
        optimizer,
        device,
        seed: int,
        eval_every: int | None,
        *,
        batch_fn=None,
        batch_loss=None,
        accumulation_steps: int = 1,
        precision: str = "fp32",
        logger: Any = None,
    ):
        from superconv import step

        self.model, self.train_loader = model, train_loader
        self.val_loader, self.test_loader = val_loader, test_loader
        self.loss_fn, self.make_optimizer = loss_fn, optimizer
        self.device, self.seed, self.eval_every = device, seed, eval_every
        self.forward = step.make_forward(
            loss_fn, batch_fn=batch_fn, batch_loss=batch_loss, device=device
        )
        self.batch_fn, self.batch_loss = batch_fn, batch_loss
        self.accumulation_steps, self.precision = accumulation_steps, precision
        self.autocast_dtype = step.amp(precision, device)[0]
        self.autocast = step.autocast(device, self.autocast_dtype)
        self.logger = logger
        self.initial = copy.deepcopy(model)  # every candidate starts from these weights
        self.rows: list[dict[str, Any]] = []

    def _scaler(self) -> Any:
        """A fresh GradScaler for fp16 (one per training run), else None."""
        from superconv import step

        return step.amp(self.precision, self.device)[1]

    def _batch_size(self) -> int:
        per_batch = int(getattr(self.train_loader, "batch_size", None) or 1)
        return per_batch * self.accumulation_steps

    def _eval_size(self, loader: Any) -> int:
        with contextlib.suppress(TypeError):
            return len(loader.dataset)
        return 0

    def range_test(self, seed: int, steps: int, rplan: RangePlan):
        import torch

        from superconv.range_test import range_test

        torch.manual_seed(seed)  # the loader's shuffle order
        optimizer = self.make_optimizer(self.model.parameters())
        curve = range_test(
            self.model,
            optimizer,
            self.loss_fn,
            self.train_loader,
            self.val_loader,
            batch_fn=self.batch_fn,
            batch_loss=self.batch_loss,
            start_lr=rplan.start_lr,
            end_lr=rplan.end_lr,
            num_steps=steps,
            mode=rplan.mode,
            eval_every=max(1, steps // rplan.evaluations),
            accumulation_steps=self.accumulation_steps,
            autocast_dtype=self.autocast_dtype,
            scaler=self._scaler(),
            device=self.device,
            progress=False,
        )
        images = (
            len(curve.losses) * self._batch_size(),
            len(curve.eval_steps) * self._eval_size(self.val_loader),
        )
        if self.logger is not None:
            self.logger.log_range_test(curve, prefix=f"range_test/seed{seed}")
        return curve, images

    def _train(
        self, model: Any, lr: float, iterations: int, every: int = 0, on_eval=None
    ) -> int | None:
        """The loop: 1cycle of CYCLE's shape; the first NaN/inf step, or None.

        Losses are read every 10 steps, every ``every`` steps and at the end;
        ``on_eval(done, loss_sum, count)`` is called at each read.
        """
        import torch

        from superconv import step as steps
        from superconv.schedules import apply, build_policy
        from superconv.suggest import CYCLE

        torch.manual_seed(self.seed)
        optimizer = self.make_optimizer(model.parameters())
        policy = build_policy("one_cycle", iterations, **CYCLE.policy_params(lr))
        batches = steps.cycle(self.train_loader, "train_data")
        scaler = self._scaler()
        model.train()
        pending = []
        for step in range(iterations):
            apply(policy, optimizer, step)  # the one writer of lr and momentum
            loss = steps.train_step(
                model,
                optimizer,
                self.forward,
                batches,
                self.accumulation_steps,
                self.autocast,
                scaler,
            )
            pending.append(loss)
            done = step + 1
            if done % 10 == 0 or done == iterations or (every and done % every == 0):
                values = torch.stack(pending).tolist()
                bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
                if bad:
                    return done - len(pending) + bad[0]
                if on_eval is not None:
                    on_eval(done, sum(values), len(values))
                pending = []
        return None

    def _evaluate(self, model: Any, loader: Any) -> tuple[float, float]:
        from superconv import step

        loss, acc = step.evaluate(model, self.forward, iter(loader), self.autocast, self.device)
        return loss, 100.0 * acc

    def trial(self, lr: float, iterations: int, rung: int) -> Trial:
        model = copy.deepcopy(self.initial)
        bad = self._train(model, lr, iterations)
        details = {
            "train_images": (bad + 1 if bad is not None else iterations) * self._batch_size()
        }
        if bad is not None:
            return Trial(lr, rung, iterations, None, bad + 1, "loss NaN/inf", details)
        val_loss, val_acc = self._evaluate(model, self.val_loader)
        details.update(
            val_loss=val_loss, val_acc=val_acc, eval_images=self._eval_size(self.val_loader)
        )
        return Trial(lr, rung, iterations, _score(val_loss, val_acc), iterations, "", details)

    def final(self, lr: float, iterations: int, attempt: int = 0) -> dict[str, Any]:
        self.model.load_state_dict(self.initial.state_dict())  # a diverged attempt's NaNs
        every = self.eval_every or max(1, iterations // 10)
        rows: list[dict[str, Any]] = []
        since = [0.0, 0]
        evals = [0]

        def on_eval(done: int, loss_sum: float, count: int) -> None:
            since[0] += loss_sum
            since[1] += count
            if done % every and done != iterations:
                return
            row: dict[str, Any] = {"iteration": done, "train_loss": since[0] / since[1]}
            for name, loader in (("val", self.val_loader), ("test", self.test_loader)):
                if loader is not None and (name == "val" or done == iterations):
                    row[f"{name}_loss"], row[f"{name}_acc"] = self._evaluate(self.model, loader)
                    evals[0] += self._eval_size(loader)
            rows.append(row)
            if self.logger is not None:
                self.logger.log_row(done, row, prefix="metrics")
            since[:] = [0.0, 0]

        bad = self._train(self.model, lr, iterations, every, on_eval)
        if bad is not None:
            raise DivergenceError(
                f"the chosen 1cycle (max_lr {lr:.4g}) diverged at iteration {bad}.",
                step=bad,
                lr=lr,
            )
        self.rows = rows
        last = rows[-1]
        return {
            "status": "finished",
            "iterations": iterations,
            "final_val_acc": last.get("val_acc"),
            "final_val_loss": last.get("val_loss"),
            "final_test_acc": last.get("test_acc"),
            "final_test_loss": last.get("test_loss"),
            "final_train_loss": last.get("train_loss"),
            "train_images_seen": iterations * self._batch_size(),
            "eval_images": evals[0],
            "run": "train",
            "metrics": rows,
        }


def _split(train_data: Any, fraction: float, seed: int) -> tuple[Any, Any, str]:
    """Hold a validation split out of ``train_data``'s dataset; the same loader settings."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset, random_split

    dataset = getattr(train_data, "dataset", None)
    if dataset is None or isinstance(dataset, IterableDataset):
        raise UserError(
            "without val_data, fit holds a validation split out of train_data, which needs a "
            "DataLoader over a map-style dataset; pass val_data."
        )
    n = len(dataset)
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise UserError(f"train_data has {n} samples: too few to hold out a validation split.")
    train_set, val_set = random_split(
        dataset, [n - n_val, n_val], generator=torch.Generator().manual_seed(seed)
    )
    batch = train_data.batch_size or 1
    same = {"collate_fn": train_data.collate_fn, "num_workers": train_data.num_workers}
    train_loader = DataLoader(train_set, batch_size=batch, shuffle=True, **same)
    val_loader = DataLoader(val_set, batch_size=max(batch, 256), shuffle=False, **same)
    stated = (
        f"{n_val} of the {n} samples of train_data ({fraction:.0%}, random_split seed {seed}) "
        "held out for validation; training on the other "
        f"{n - n_val}"
    )
    return train_loader, val_loader, stated


# long: public API with 26 parameters, each documented in the docstring; the code is ~57 lines
def fit(
    model: Any,
    train_data: Any,
    val_data: Any = None,
    test_data: Any = None,
    *,
    epochs: float | None = None,
    iterations: int | None = None,
    loss_fn: Callable[[Any, Any], Any] | None = None,
    optimizer: Callable[[Iterable[Any]], Any] | None = None,
    tune_budget: float = 1.0,
    verify: bool = True,
    repeats: int = 1,
    range_steps: int | None = None,
    range_plan: RangePlan | None = None,
    factors: Sequence[float] = FACTORS,
    val_fraction: float = 0.1,
    seed: int = 0,
    eval_every: int | None = None,
    device: Any = None,
    out: str | Path | None = None,
    echo: Echo = print,
    batch_fn: Callable[[Any], tuple[Any, Any]] | None = None,
    batch_loss: Callable[[Any, Any], Any] | None = None,
    accumulation_steps: int = 1,
    precision: str = "fp32",
    logger: Any = None,
    tensorboard: str | Path | None = None,
) -> FitResult:
    """Range test -> suggestion -> check -> train a 1cycle on ``model``, in place.

    ``train_data`` (``val_data``, ``test_data``): any
    ``torch.utils.data.DataLoader`` of ``(input, target)`` batches. Without
    ``val_data``, ``val_fraction`` of ``train_data``'s dataset is held out for
    every choice (and the split is stated in ``record["split"]``). The budget
    is ``iterations``, or ``epochs`` passes over the training loader.
    ``loss_fn`` (default cross-entropy) must average over the batch;
    ``optimizer(params)`` makes a fresh optimizer (default SGD, momentum 0.9,
    weight decay 5e-4; the cycle writes its lr and momentum). Candidates of the
    check train on copies of ``model``; ``model`` itself is trained last, from
    its initial weights. ``out``: a folder for ``fit.json``, ``fit.md``, the
    figures and ``train/metrics.csv`` (nothing is written without it; the API's
    runs are not checkpointed, so only the CLI resumes). ``device``: where
    batches go (default: the model's; the model is not moved). ``seed``: the
    range tests use ``seed .. seed + repeats - 1``, every training run ``seed``.
    ``eval_every``: iterations between the final run's validation rows
    (default: 10 rows). ``tune_budget``, ``verify``, ``repeats``,
    ``range_steps``: as ``superconv fit`` (see :func:`plan_budget`).

    Other batches and losses (:mod:`superconv.step`): ``batch_fn(batch) ->
    (inputs, targets)`` for batches that are not pairs; ``batch_loss(model, batch)
    -> loss`` instead of ``loss_fn`` (:func:`superconv.step.model_loss` for models
    that return their own loss, as Hugging Face's do; the choices then rest on the
    validation loss). ``accumulation_steps`` micro-batches make one optimizer step
    (iterations count optimizer steps). ``precision``: ``"fp32"``, ``"bf16"``
    (autocast) or ``"fp16"`` (autocast and a GradScaler). Several param groups keep
    their LR ratios through ``lr_scale`` (:func:`superconv.step.keep_lr_ratios`).
    ``tensorboard``: a folder for TensorBoard event files (the range test's curve,
    its suggestion, the final run's metrics rows), or ``logger``: an open
    :class:`~superconv.integrations.tensorboard.TensorBoardLogger`.

    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(512, 8, generator=g)
    >>> data = DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=32, shuffle=True)
    >>> result = fit(torch.nn.Linear(8, 2), data, iterations=200, echo=lambda s: None)
    >>> result.verdict, result.summary["final_val_acc"] > 80
    ('checked by training', True)
    """
    import torch
    import torch.nn.functional as F

    _check_budget_args(iterations, epochs, val_fraction)
    split = "val_data given by the caller"
    if val_data is None:
        train_data, val_data, split = _split(train_data, val_fraction, seed)
    if epochs is not None:
        iterations = _iterations_of_epochs(epochs, train_data)
    budget = plan_budget(
        iterations,
        tune_budget=tune_budget,
        range_steps=range_steps,
        repeats=repeats,
        verify=verify,
        candidates=len(factors),
    )
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    _check_int("accumulation_steps", accumulation_steps, 1)
    backend = _ModuleBackend(
        model,
        train_data,
        val_data,
        test_data,
        loss_fn or (None if batch_loss is not None else F.cross_entropy),
        optimizer or _default_optimizer,
        torch.device(device),
        seed,
        eval_every,
        batch_fn=batch_fn,
        batch_loss=batch_loss,
        accumulation_steps=accumulation_steps,
        precision=precision,
    )
    range_plan = range_plan or RangePlan.for_optimizer(_optimizer_name(optimizer))
    settings = {
        "model": type(model).__name__,
        "iterations": iterations,
        "epochs": epochs,
        "tune_budget": float(tune_budget),
        "verify": verify,
        "repeats": repeats,
        "range_steps": range_steps,
        "range_plan": asdict(range_plan),
        "factors": [float(f) for f in factors],
        "budget": asdict(budget),
        "seed": seed,
    }
    out_path = Path(out) if out is not None else None
    record = _open_record(out_path, settings, resume=False, resumable=False)
    if out_path is not None:
        out_path.mkdir(parents=True, exist_ok=True)
    record.data["split"] = split
    echo(f"superconv fit: {type(model).__name__}, {iterations} iterations; {split}.")
    with _board(tensorboard, logger) as board:
        backend.logger = board
        result = _phases(backend, budget, range_plan, record, echo, seed, factors)
        _log_choice(board, result)
    if out_path is not None:
        _write_final_run(out_path / "train", backend.rows, result)
        result.files = _write_report(result, type(model).__name__)
    return result


def _check_budget_args(iterations: int | None, epochs: float | None, val_fraction: float) -> None:
    if iterations is None and epochs is None:
        raise UserError("give the training budget: epochs= or iterations=.")
    if iterations is not None and epochs is not None:
        raise UserError("give epochs= or iterations=, not both.")
    if not (0 < val_fraction < 1):
        raise UserError(f"val_fraction must be in (0, 1), got {val_fraction!r}.")


def _iterations_of_epochs(epochs: float, train_data: Any) -> int:
    """The optimizer steps of ``epochs`` passes over the training loader (rounded up)."""
    if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs > 0):
        raise UserError(f"epochs must be a number > 0, got {epochs!r}.")
    try:
        per_epoch = len(train_data)
    except TypeError:
        raise UserError("epochs= needs a train_data with a length; give iterations=.") from None
    return max(1, math.ceil(epochs * per_epoch))


def _write_final_run(folder: Path, rows: list[dict[str, Any]], result: FitResult) -> None:
    """The API's final run as a run folder: metrics.csv and summary.json (no checkpoint)."""
    from superconv.records import RunDir

    run = RunDir(folder)
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_metrics(rows)
    run.write_summary({k: v for k, v in result.summary.items() if k != "metrics"})


def find_cycle(
    model: Any,
    train_data: Any,
    val_data: Any = None,
    *,
    budget: int,
    loss_fn: Callable[[Any, Any], Any] | None = None,
    optimizer: Callable[[Iterable[Any]], Any] | None = None,
    verify: bool = True,
    tune_budget: float = 1.0,
    repeats: int = 1,
    range_steps: int | None = None,
    seed: int = 0,
    echo: Echo = print,
    batch_fn: Callable[[Any], tuple[Any, Any]] | None = None,
    batch_loss: Callable[[Any, Any], Any] | None = None,
    accumulation_steps: int = 1,
    precision: str = "fp32",
) -> FitResult:
    """The cycle :func:`fit` would train for ``budget`` iterations, without training it.

    The same range test and check as :func:`fit`; ``model`` is left as it was
    (the range test restores it, candidates train on copies). Train it yourself
    with ``superconv.schedules.one_cycle(total_steps=budget, **result.policy_params)``
    (or ``build_policy("one_cycle", budget, **result.policy_params)``).
    ``batch_fn``, ``batch_loss``, ``accumulation_steps``, ``precision``: as :func:`fit`.
    """
    import torch
    import torch.nn.functional as F

    split = "val_data given by the caller"
    if val_data is None:
        train_data, val_data, split = _split(train_data, 0.1, seed)
    plan = plan_budget(
        budget, tune_budget=tune_budget, range_steps=range_steps, repeats=repeats, verify=verify
    )
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    _check_int("accumulation_steps", accumulation_steps, 1)
    backend = _ModuleBackend(
        model,
        train_data,
        val_data,
        None,
        loss_fn or (None if batch_loss is not None else F.cross_entropy),
        optimizer or _default_optimizer,
        device,
        seed,
        None,
        batch_fn=batch_fn,
        batch_loss=batch_loss,
        accumulation_steps=accumulation_steps,
        precision=precision,
    )
    record = _Record(None, {"settings": {}, "phases": {}, "notes": [], "split": split})
    rplan = RangePlan.for_optimizer(_optimizer_name(optimizer))
    return _phases(backend, plan, rplan, record, echo, seed, FACTORS, train=False)


class _CallableModule(types.ModuleType):
    """``superconv.fit(model, ...)``: the package attribute is this module, so it calls :func:`fit`."""

    def __call__(self, *args: Any, **kwargs: Any) -> FitResult:
        return fit(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
