"""An experiment as data: the kinds of step a plan runs, the plan, the experiment.

:mod:`superconv.runner` runs these (:func:`superconv.runner.reproduce`),
:mod:`superconv.report` reads the run folders they leave, and
:mod:`superconv.paper` holds the paper's tables and figures written in them. An
:class:`Experiment` gives, per *scale*, a :class:`Plan`: ordered steps, all built
from :class:`~superconv.config.TrainConfig`:

- :class:`Train`: one row of a table / one curve of a figure, trained once per seed,
  with the paper's number and the authors'-log number beside it (:class:`Reference`).
- :class:`RangeTest`: an LR range test (section 3).
- :class:`Sweep`: a tuning step: train one policy at several values of one
  policy parameter on a validation split and keep the best by *validation*
  accuracy (:func:`pick_best`; never the test set); later :class:`Train` steps take
  the value through :class:`Tuned` (which can also take a range test's suggestion).
- :class:`Fit`: ``superconv fit`` as a row.

Nothing here knows the paper or runs anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from superconv.config import TrainConfig
from superconv.errors import UserError, did_you_mean


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
    # A range test read by a rule of this row's own, ``(name, constants)`` for a ``budget``
    # (iterations), instead of the test's own ``rule``. The value is kept under :attr:`key`,
    # so rows reading one test by two rules do not clash: the suggestion benchmark keeps
    # a confirmation row for every default rule superconv has shipped.
    rule: tuple[str, tuple[tuple[str, float], ...]] | None = None
    budget: int | None = None

    @property
    def key(self) -> str:
        """Where the runner keeps this row's value: the source, or source@rule when it has one."""
        return self.source if self.rule is None else f"{self.source}@{rule_label(self.rule)}"

    def reading(self, test: RangeTest) -> tuple[Any, int | None]:
        """(rule, budget) this row reads range test ``test`` by: its own, else the test's."""
        return (self.rule, self.budget) if self.rule is not None else (test.rule, test.budget)


def as_rule(setting: Mapping[str, Any]) -> tuple[str, tuple[tuple[str, float], ...]]:
    """``{"rule": name, **constants}`` (as :data:`superconv.suggest.DEFAULT`) as the
    ``(name, sorted constants)`` a :class:`RangeTest` or :class:`Tuned` reads by."""
    constants = tuple(sorted((k, float(v)) for k, v in setting.items() if k != "rule"))
    return str(setting["rule"]), constants


def rule_label(rule: tuple[str, Sequence[tuple[str, float]]]) -> str:
    """A rule setting as a short name fit for a folder: ``loss_edge-bp0.5-f0.125`` for
    ``("loss_edge", (("budget_power", 0.5), ("fraction", 0.125)))`` (each constant by the
    initials of its words, constants in name order)."""
    name, constants = rule
    parts = [name]
    for key, value in sorted(constants):
        initials = "".join(word[0] for word in key.split("_") if word)
        parts.append(f"{initials}{value:.3g}")
    return "-".join(parts)


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
        """The config with every :class:`Tuned` parameter filled from ``values[key][field]``."""
        if not self.tuned:
            return self.config
        params = dict(self.config.policy_params)
        for t in self.tuned:
            if t.key not in values or t.field not in values[t.key]:
                raise UserError(
                    f"row {self.name!r} takes {t.param} from {t.key!r} ({t.field}), "
                    "which has no result (not run yet, or a range test that gave no suggestion: "
                    "see its range_test.json): run the plan's earlier steps first."
                )
            params[t.param] = values[t.key][t.field]
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
    """One experiment: its id, what it shows, and its plan at each scale (built on demand).

    ``builder`` maps a scale name to the :class:`Plan` (and refuses names it does not
    know); :mod:`superconv.paper` builds its plans from the paper's scales.
    """

    id: str
    title: str
    paper_item: str
    claim: str
    builder: Callable[[str], Plan] = field(repr=False, compare=False)

    def plan(self, scale: str) -> Plan:
        """The steps at ``scale`` (the paper's: ``small``, ``reduced`` or ``full``)."""
        return self.builder(scale)


# ----------------------------------------------------------------------------- a sweep's pick
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
