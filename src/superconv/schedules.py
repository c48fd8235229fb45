"""Hyper-parameter schedules as pure values of the step (Smith & Topin 2017).

A schedule is a small frozen dataclass mapping an iteration index ``step``
(0-based) to a value; it holds no counter, so resuming is recomputing at the
saved step. A *policy* maps hyper-parameter names (``HYPER_PARAMETERS``) to
schedules, and :func:`apply` is the one function that writes a policy's values
into ``optimizer.param_groups`` (momentum goes to ``betas[0]`` for Adam-style
optimizers).

- CLR (Section 2 of the paper; Smith 2017): :class:`Triangular` with the
  ``triangular``, ``triangular2`` and ``exp_range`` modes of torch's
  ``CyclicLR``. The paper's runs are one cycle 0.1 -> 3.0 -> 0.1 with stepsize
  half the run: :func:`paper_clr`, :func:`clr`.
- 1cycle (the follow-up practice): :class:`OneCycle`, equal to torch's
  ``OneCycleLR`` in both phase modes (three-phase ends with the
  "annihilation" far below the starting LR).
- Cyclical momentum moving inversely to the LR: :func:`momentum_schedule`.
- Baselines: :class:`PiecewiseConstant` (:func:`paper_piecewise`),
  :class:`StepDecay`, :class:`Cosine`, :class:`WarmupCosine`, :class:`SGDR`,
  :class:`Constant`, :class:`Inv`; ramps for the LR range test:
  :class:`LinearRamp`, :class:`ExpRamp`.
- Schedules of current practice, each equal to torch's or transformers' version:
  :class:`LinearDecay`, :class:`Polynomial` (torch ``PolynomialLR``),
  :class:`InverseSqrt` (warm-up, then 1/sqrt), :class:`WSD` (warm-up, stable,
  decay) and :class:`WarmupCosine` (cosine with warm-up and a floor ``min_lr``).
  :mod:`superconv.scaling` carries a found LR to another batch size.
- :class:`PolicyScheduler`: a ``torch.optim.lr_scheduler.LRScheduler`` adapter.

Finite schedules (those with ``total_steps``) hold their last value, the one at
step ``total_steps - 1``, for every later step. Impossible parameters raise
:class:`~superconv.errors.UserError`, a ``ValueError`` naming the parameter.

Example::

    >>> import torch
    >>> from superconv.schedules import apply, one_cycle
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    >>> policy = one_cycle(max_lr=1.0, total_steps=100)
    >>> {name: round(value, 9) for name, value in apply(policy, opt, 0).items()}
    {'lr': 0.04, 'momentum': 0.95}
"""

from __future__ import annotations

import bisect
import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol

import torch
from torch.optim.lr_scheduler import LRScheduler

from superconv.errors import UserError, did_you_mean

HYPER_PARAMETERS = ("lr", "momentum", "weight_decay")

# The paper's CLR range for ResNet-56 on CIFAR-10 (Table 1: 0.1-3 gives 92.4%).
PAPER_MIN_LR = 0.1
PAPER_MAX_LR = 3.0
# The follow-up practice's cyclical momentum: 0.95 at the LR's low, 0.85 at its peak.
CYCLICAL_MOMENTUM = (0.95, 0.85)

_CLR_MODES = ("triangular", "triangular2", "exp_range")
_ONE_CYCLE_ANNEALS = ("cos", "linear")


class Schedule(Protocol):
    """Anything mapping an iteration index ``step >= 0`` to a hyper-parameter value."""

    def __call__(self, step: int) -> float: ...


Policy = Mapping[str, Schedule]


# --- validation ---------------------------------------------------------------


def _set(obj: object, name: str, value: object) -> None:
    """Store a normalised field on a frozen dataclass (only from ``__post_init__``)."""
    object.__setattr__(obj, name, value)


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise UserError(f"{name} must be finite, got {value!r}")
    return float(value)


def _nonnegative(name: str, value: object) -> float:
    value = _finite(name, value)
    if value < 0:
        raise UserError(f"{name} must be >= 0, got {value!r}")
    return value


def _positive(name: str, value: object) -> float:
    value = _finite(name, value)
    if value <= 0:
        raise UserError(f"{name} must be > 0, got {value!r}")
    return value


def _integer(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _momentum(name: str, value: object) -> float:
    value = _finite(name, value)
    if not 0.0 <= value < 1.0:
        raise UserError(f"{name} must be in [0, 1), got {value!r}")
    return value


def _ordered(low_name: str, low: float, high_name: str, high: float) -> None:
    if low > high:
        raise UserError(f"{low_name} ({low!r}) must be <= {high_name} ({high!r})")


def _choice(name: str, value: object, options: Sequence[str]) -> str:
    if value not in options:
        raise UserError(f"{name} must be one of {', '.join(map(repr, options))}; got {value!r}")
    return str(value)


def _check_step(step: int) -> None:
    if step < 0:
        raise UserError(f"step must be >= 0, got {step!r}")


def _held(step: int, total_steps: int | None) -> int:
    """Past the end of a finite schedule hold its last value (that of step total_steps - 1)."""
    _check_step(step)
    return step if total_steps is None else min(step, total_steps - 1)


# --- annealing pieces (fastai's combine_scheds idea) ----------------------------


def _anneal_cos(start: float, end: float, pct: float) -> float:
    # torch OneCycleLR._annealing_cos, same operation order so values agree bit for bit.
    cos_out = math.cos(math.pi * pct) + 1
    return end + (start - end) / 2.0 * cos_out


def _anneal_linear(start: float, end: float, pct: float) -> float:
    # torch OneCycleLR._annealing_linear.
    return (end - start) * pct + start


def _anneal_exp(start: float, end: float, pct: float) -> float:
    # Geometric interpolation: equal ratios per step (the LR range test's exponential ramp).
    return start * (end / start) ** pct


_ANNEALS: Mapping[str, Callable[[float, float, float], float]] = MappingProxyType(
    {"cos": _anneal_cos, "linear": _anneal_linear, "exp": _anneal_exp}
)


def _anneal_phases(step: int, phases: Sequence[tuple[float, float, float, str]]) -> float:
    """Value at ``step`` of consecutive annealing phases ``(end_step, start, end, anneal)``.

    torch ``OneCycleLR``'s rule: the first phase starts at step 0, each later one
    where the previous ends; a step belongs to the first phase whose ``end_step``
    it does not exceed, and the last phase takes every step after that. A
    zero-length phase (where torch divides by zero) takes its end value, which
    keeps the schedule continuous with the next phase.
    """
    start_step = 0.0
    last = len(phases) - 1
    for i, (end_step, start, end, anneal) in enumerate(phases):
        if step <= end_step or i == last:
            length = end_step - start_step
            pct = (step - start_step) / length if length != 0 else 1.0
            return _ANNEALS[anneal](start, end, pct)
        start_step = end_step
    raise AssertionError("unreachable: the last phase takes every step")


# --- CLR (triangular policies, as torch's CyclicLR) -----------------------------


def _clr_position(step: int, stepsize: float, mode: str, gamma: float) -> tuple[float, float]:
    """Return (fraction of the way up the current triangle, amplitude scale) at ``step``.

    Arithmetic follows torch ``CyclicLR.get_lr`` with equal up and down
    half-cycles: ``cycle = floor(1 + t / (2 * stepsize))``.
    """
    total_size = stepsize + stepsize
    step_ratio = stepsize / total_size
    cycle = math.floor(1 + step / total_size)
    x = 1.0 + step / total_size - cycle
    if x <= step_ratio:
        scale_factor = x / step_ratio
    else:
        scale_factor = (x - 1) / (step_ratio - 1)
    if mode == "triangular":
        amplitude = 1.0
    elif mode == "triangular2":  # halve the amplitude every cycle
        amplitude = 1 / (2.0 ** (cycle - 1))
    else:  # exp_range: amplitude gamma**t, scaled per iteration
        amplitude = gamma**step
    return scale_factor, amplitude


def _check_clr_shape(obj: Any) -> None:
    _set(obj, "stepsize", _positive("stepsize", obj.stepsize))
    _choice("mode", obj.mode, _CLR_MODES)
    _set(obj, "gamma", _positive("gamma", obj.gamma))
    if obj.total_steps is not None:
        _set(obj, "total_steps", _integer("total_steps", obj.total_steps, 1))


@dataclass(frozen=True)
class Triangular:
    """Cyclical LR (CLR) between ``min_lr`` and ``max_lr``, equal to torch's ``CyclicLR``.

    The LR rises linearly from ``min_lr`` to ``max_lr`` over ``stepsize``
    iterations and falls back over the next ``stepsize``. ``triangular2``
    halves the amplitude each cycle, ``exp_range`` scales it by ``gamma**step``.
    With ``total_steps`` set the schedule ends there and holds its last value;
    with ``None`` it cycles forever.

    >>> Triangular(0.1, 3.0, stepsize=5000)(5000)
    3.0
    """

    min_lr: float
    max_lr: float
    stepsize: float
    mode: str = "triangular"
    gamma: float = 1.0
    total_steps: int | None = None

    def __post_init__(self) -> None:
        _set(self, "min_lr", _nonnegative("min_lr", self.min_lr))
        _set(self, "max_lr", _nonnegative("max_lr", self.max_lr))
        _ordered("min_lr", self.min_lr, "max_lr", self.max_lr)
        _check_clr_shape(self)

    def __call__(self, step: int) -> float:
        t = _held(step, self.total_steps)
        scale_factor, amplitude = _clr_position(t, self.stepsize, self.mode, self.gamma)
        base_height = (self.max_lr - self.min_lr) * scale_factor
        return self.min_lr + base_height * amplitude


@dataclass(frozen=True)
class TriangularMomentum:
    """Momentum cycling inversely to a :class:`Triangular` LR (torch ``CyclicLR``'s cycle_momentum).

    ``max_momentum`` where the LR is at ``min_lr``, ``base_momentum`` where it
    peaks. Build it with :func:`momentum_schedule`.
    """

    stepsize: float
    max_momentum: float = CYCLICAL_MOMENTUM[0]
    base_momentum: float = CYCLICAL_MOMENTUM[1]
    mode: str = "triangular"
    gamma: float = 1.0
    total_steps: int | None = None

    def __post_init__(self) -> None:
        _set(self, "max_momentum", _momentum("max_momentum", self.max_momentum))
        _set(self, "base_momentum", _momentum("base_momentum", self.base_momentum))
        _check_clr_shape(self)

    def __call__(self, step: int) -> float:
        t = _held(step, self.total_steps)
        scale_factor, amplitude = _clr_position(t, self.stepsize, self.mode, self.gamma)
        base_height = (self.max_momentum - self.base_momentum) * scale_factor
        return self.max_momentum - base_height * amplitude


# --- 1cycle (as torch's OneCycleLR) --------------------------------------------


def _check_cycle_shape(obj: Any) -> None:
    _set(obj, "total_steps", _integer("total_steps", obj.total_steps, 1))
    pct_start = _finite("pct_start", obj.pct_start)
    if not 0.0 < pct_start < 1.0:
        raise UserError(f"pct_start must be in (0, 1), got {obj.pct_start!r}")
    if obj.three_phase and pct_start >= 0.5:
        # The annihilation phase needs room after the rise and the equally long fall.
        raise UserError(f"pct_start must be < 0.5 with three_phase=True, got {pct_start!r}")
    _set(obj, "pct_start", pct_start)
    _set(obj, "three_phase", bool(obj.three_phase))
    _choice("anneal", obj.anneal, _ONE_CYCLE_ANNEALS)


def _one_cycle_value(cycle: Any, step: int, start: float, peak: float, end: float) -> float:
    """Value of a 1cycle shape going start -> peak -> (start ->) end.

    Phase end steps are torch ``OneCycleLR``'s: ``pct_start*T - 1``, then
    ``T - 1`` (two-phase), or ``2*pct_start*T - 2`` and ``T - 1`` (three-phase).
    """
    t = _held(step, cycle.total_steps)
    total, pct, anneal = cycle.total_steps, cycle.pct_start, cycle.anneal
    rise_end = float(pct * total) - 1
    if cycle.three_phase:
        phases = [
            (rise_end, start, peak, anneal),
            (float(2 * pct * total) - 2, peak, start, anneal),
            (total - 1, start, end, anneal),  # the annihilation
        ]
    else:
        phases = [(rise_end, start, peak, anneal), (total - 1, peak, end, anneal)]
    return _anneal_phases(t, phases)


@dataclass(frozen=True)
class OneCycle:
    """1cycle LR with torch ``OneCycleLR``'s conventions.

    Starts at ``max_lr / div``, rises to ``max_lr`` over ``pct_start`` of the
    steps, then either anneals to ``max_lr / (div * final_div)`` (two-phase) or
    falls back to ``max_lr / div`` over an equally long phase and then anneals
    to ``max_lr / (div * final_div)`` (three-phase, the "annihilation").
    ``anneal`` is ``"cos"`` or ``"linear"``. Steps from ``total_steps - 1`` on
    hold the final value (torch raises instead).

    >>> OneCycle(max_lr=1.0, total_steps=100)(29)
    1.0
    """

    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    div: float = 25.0
    final_div: float = 1e4
    three_phase: bool = False
    anneal: str = "cos"

    def __post_init__(self) -> None:
        _set(self, "max_lr", _nonnegative("max_lr", self.max_lr))
        _set(self, "div", _positive("div", self.div))
        _set(self, "final_div", _positive("final_div", self.final_div))
        _check_cycle_shape(self)

    @property
    def initial_lr(self) -> float:
        """The LR at step 0, ``max_lr / div``."""
        return self.max_lr / self.div

    @property
    def final_lr(self) -> float:
        """The LR at the last step, ``max_lr / div / final_div``."""
        return self.initial_lr / self.final_div

    def __call__(self, step: int) -> float:
        return _one_cycle_value(self, step, self.initial_lr, self.max_lr, self.final_lr)


@dataclass(frozen=True)
class OneCycleMomentum:
    """Momentum mirroring a :class:`OneCycle` (torch ``OneCycleLR``'s cycle_momentum).

    ``max_momentum`` at step 0, ``base_momentum`` at the LR peak, back to
    ``max_momentum`` at the end (three-phase: held at ``max_momentum`` during the
    annihilation). Build it with :func:`momentum_schedule`.
    """

    total_steps: int
    pct_start: float = 0.3
    three_phase: bool = False
    anneal: str = "cos"
    max_momentum: float = CYCLICAL_MOMENTUM[0]
    base_momentum: float = CYCLICAL_MOMENTUM[1]

    def __post_init__(self) -> None:
        _set(self, "max_momentum", _momentum("max_momentum", self.max_momentum))
        _set(self, "base_momentum", _momentum("base_momentum", self.base_momentum))
        _check_cycle_shape(self)

    def __call__(self, step: int) -> float:
        m = self.max_momentum
        return _one_cycle_value(self, step, m, self.base_momentum, m)


def momentum_schedule(
    schedule: Triangular | OneCycle,
    max_momentum: float = CYCLICAL_MOMENTUM[0],
    base_momentum: float = CYCLICAL_MOMENTUM[1],
) -> TriangularMomentum | OneCycleMomentum:
    """Cyclical momentum moving inversely to a cyclical LR schedule.

    ``max_momentum`` where the LR is lowest, ``base_momentum`` at its peak
    (follow-up practice: 0.95 -> 0.85 -> 0.95).

    >>> momentum_schedule(OneCycle(max_lr=1.0, total_steps=100))(29)
    0.85
    """
    if isinstance(schedule, OneCycle):
        return OneCycleMomentum(
            schedule.total_steps,
            schedule.pct_start,
            schedule.three_phase,
            schedule.anneal,
            max_momentum,
            base_momentum,
        )
    if isinstance(schedule, Triangular):
        return TriangularMomentum(
            schedule.stepsize,
            max_momentum,
            base_momentum,
            schedule.mode,
            schedule.gamma,
            schedule.total_steps,
        )
    raise UserError(
        f"cyclical momentum mirrors a Triangular or OneCycle schedule, not {type(schedule).__name__}"
    )


# --- baselines and ramps ----------------------------------------------------------


@dataclass(frozen=True)
class PiecewiseConstant:
    """``values[i]`` for ``boundaries[i-1] <= step < boundaries[i]``.

    Boundaries must not decrease; equal boundaries give an empty segment.

    >>> PiecewiseConstant((0.35, 0.035, 0.0035), (50_000, 70_000))(50_000)
    0.035
    """

    values: tuple[float, ...]
    boundaries: tuple[int, ...]

    def __post_init__(self) -> None:
        values = tuple(
            _nonnegative(f"values[{i}]", v) for i, v in enumerate(_sequence("values", self.values))
        )
        boundaries = tuple(
            _integer(f"boundaries[{i}]", b, 0)
            for i, b in enumerate(_sequence("boundaries", self.boundaries))
        )
        if len(values) != len(boundaries) + 1:
            raise UserError(
                f"values needs one entry more than boundaries; got {len(values)} values "
                f"and {len(boundaries)} boundaries"
            )
        for i in range(1, len(boundaries)):
            if boundaries[i] < boundaries[i - 1]:
                raise UserError(f"boundaries must not decrease, got {boundaries!r}")
        _set(self, "values", values)
        _set(self, "boundaries", boundaries)

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.values[bisect.bisect_right(self.boundaries, step)]


def _sequence(name: str, value: object) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise UserError(f"{name} must be a sequence, got {value!r}")
    return value


@dataclass(frozen=True)
class StepDecay:
    """``lr * gamma ** (step // step_size)`` (torch's ``StepLR``, per iteration)."""

    lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _set(self, "lr", _nonnegative("lr", self.lr))
        _set(self, "step_size", _integer("step_size", self.step_size, 1))
        _set(self, "gamma", _nonnegative("gamma", self.gamma))

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.lr * self.gamma ** (step // self.step_size)


def _ramp_steps(obj: Any) -> None:
    _set(obj, "total_steps", _integer("total_steps", obj.total_steps, 1))


@dataclass(frozen=True)
class Cosine:
    """Cosine annealing from ``max_lr`` at step 0 to ``min_lr`` at step ``total_steps - 1``."""

    max_lr: float
    total_steps: int
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "max_lr", _nonnegative("max_lr", self.max_lr))
        _set(self, "min_lr", _nonnegative("min_lr", self.min_lr))
        _ordered("min_lr", self.min_lr, "max_lr", self.max_lr)
        _ramp_steps(self)

    def __call__(self, step: int) -> float:
        t = _held(step, self.total_steps)
        return _anneal_phases(t, [(self.total_steps - 1, self.max_lr, self.min_lr, "cos")])


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up from ``start_lr`` to ``max_lr`` at step ``warmup_steps``, then cosine.

    The cosine reaches ``min_lr`` at step ``total_steps - 1``; ``warmup_steps=0``
    is plain :class:`Cosine`. The "cosine with warm-up and a floor" of current
    practice: transformers' ``get_cosine_with_min_lr_schedule_with_warmup``
    (``num_training_steps = total_steps - 1``, ``min_lr``, ``start_lr = 0``).
    """

    max_lr: float
    total_steps: int
    warmup_steps: int
    start_lr: float = 0.0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "max_lr", _nonnegative("max_lr", self.max_lr))
        _set(self, "start_lr", _nonnegative("start_lr", self.start_lr))
        _set(self, "min_lr", _nonnegative("min_lr", self.min_lr))
        _ordered("start_lr", self.start_lr, "max_lr", self.max_lr)
        _ordered("min_lr", self.min_lr, "max_lr", self.max_lr)
        _ramp_steps(self)
        _set(self, "warmup_steps", _integer("warmup_steps", self.warmup_steps, 0))
        if self.warmup_steps >= self.total_steps:
            raise UserError(
                f"warmup_steps ({self.warmup_steps}) must be < total_steps ({self.total_steps})"
            )

    def __call__(self, step: int) -> float:
        t = _held(step, self.total_steps)
        phases = [
            (self.warmup_steps, self.start_lr, self.max_lr, "linear"),
            (self.total_steps - 1, self.max_lr, self.min_lr, "cos"),
        ]
        return _anneal_phases(t, phases)


@dataclass(frozen=True)
class SGDR:
    """Cosine annealing with warm restarts (Loshchilov & Hutter; torch's
    ``CosineAnnealingWarmRestarts`` per iteration).

    Cycle ``i`` lasts ``t0 * t_mult**i`` steps; each restarts at ``max_lr`` and
    anneals towards ``min_lr``.
    """

    max_lr: float
    t0: int
    t_mult: int = 1
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "max_lr", _nonnegative("max_lr", self.max_lr))
        _set(self, "min_lr", _nonnegative("min_lr", self.min_lr))
        _ordered("min_lr", self.min_lr, "max_lr", self.max_lr)
        _set(self, "t0", _integer("t0", self.t0, 1))
        _set(self, "t_mult", _integer("t_mult", self.t_mult, 1))

    def __call__(self, step: int) -> float:
        _check_step(step)
        t_cur, t_i = step % self.t0, self.t0
        if self.t_mult > 1:  # geometric cycle lengths: O(log step) iterations
            t_cur = step
            while t_cur >= t_i:
                t_cur -= t_i
                t_i *= self.t_mult
        return _anneal_cos(self.max_lr, self.min_lr, t_cur / t_i)


@dataclass(frozen=True)
class Constant:
    """The same ``value`` at every step."""

    value: float

    def __post_init__(self) -> None:
        _set(self, "value", _nonnegative("value", self.value))

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.value


@dataclass(frozen=True)
class Inv:
    """Caffe's "inv" policy ``base_lr * (1 + gamma * step) ** -power``.

    Defaults are Caffe's LeNet solver (gamma 1e-4, power 0.75), the MNIST
    baseline of the follow-up practice.
    """

    base_lr: float
    gamma: float = 1e-4
    power: float = 0.75

    def __post_init__(self) -> None:
        _set(self, "base_lr", _nonnegative("base_lr", self.base_lr))
        _set(self, "gamma", _nonnegative("gamma", self.gamma))
        _set(self, "power", _finite("power", self.power))

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.base_lr * (1 + self.gamma * step) ** (-self.power)


@dataclass(frozen=True)
class LinearRamp:
    """Linear from ``start`` at step 0 to ``end`` at step ``total_steps - 1`` (LR range test)."""

    start: float
    end: float
    total_steps: int

    def __post_init__(self) -> None:
        _set(self, "start", _nonnegative("start", self.start))
        _set(self, "end", _nonnegative("end", self.end))
        _ramp_steps(self)

    def __call__(self, step: int) -> float:
        t = _held(step, self.total_steps)
        return _anneal_phases(t, [(self.total_steps - 1, self.start, self.end, "linear")])


@dataclass(frozen=True)
class ExpRamp:
    """Geometric from ``start`` at step 0 to ``end`` at step ``total_steps - 1`` (LR range test)."""

    start: float
    end: float
    total_steps: int

    def __post_init__(self) -> None:
        _set(self, "start", _positive("start", self.start))
        _set(self, "end", _positive("end", self.end))
        _ramp_steps(self)

    def __call__(self, step: int) -> float:
        t = _held(step, self.total_steps)
        return _anneal_phases(t, [(self.total_steps - 1, self.start, self.end, "exp")])


# --- schedules of current practice ------------------------------------------------
#
# Same convention as the rest of this module: the end value is reached at step
# ``total_steps - 1`` (the last update of a ``total_steps``-step run uses it). torch's
# and transformers' versions reach it one step later, at ``num_training_steps``, a
# step no update uses; so ours equals theirs with ``num_training_steps = total_steps - 1``.

_WSD_DECAYS = ("linear", "cos", "1-sqrt")


def _warmup_steps(obj: Any, room: int) -> None:
    """``warmup_steps`` an integer >= 0 that leaves ``room`` steps after it (or raise)."""
    _set(obj, "warmup_steps", _integer("warmup_steps", obj.warmup_steps, 0))
    if obj.warmup_steps > room:
        raise UserError(
            f"warmup_steps ({obj.warmup_steps}) must be < total_steps ({obj.total_steps})"
        )


def _warming(obj: Any, t: int) -> float:
    """Linear warm-up: ``start_lr`` at step 0 to ``max_lr`` at step ``warmup_steps``."""
    return _anneal_linear(obj.start_lr, obj.max_lr, t / obj.warmup_steps)


def _check_warmup_lrs(obj: Any) -> None:
    _set(obj, "max_lr", _nonnegative("max_lr", obj.max_lr))
    _set(obj, "start_lr", _nonnegative("start_lr", obj.start_lr))
    _ordered("start_lr", obj.start_lr, "max_lr", obj.max_lr)


@dataclass(frozen=True)
class LinearDecay:
    """Linear warm-up to ``max_lr`` at step ``warmup_steps``, then linear decay to ``min_lr``.

    The decay ends at step ``total_steps - 1``. Equals transformers'
    ``get_linear_schedule_with_warmup`` (``num_training_steps = total_steps - 1``,
    ``start_lr = min_lr = 0``) and, without warm-up, torch's ``LinearLR``
    (``total_iters = total_steps - 1``).

    >>> LinearDecay(max_lr=1.0, total_steps=11, warmup_steps=2)(6)
    0.5
    """

    max_lr: float
    total_steps: int
    warmup_steps: int = 0
    start_lr: float = 0.0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _check_warmup_lrs(self)
        _set(self, "min_lr", _nonnegative("min_lr", self.min_lr))
        _ordered("min_lr", self.min_lr, "max_lr", self.max_lr)
        _ramp_steps(self)
        _warmup_steps(self, self.total_steps - 1)

    def __call__(self, step: int) -> float:
        t = _held(step, self.total_steps)
        phases = [
            (self.warmup_steps, self.start_lr, self.max_lr, "linear"),
            (self.total_steps - 1, self.max_lr, self.min_lr, "linear"),
        ]
        return _anneal_phases(t, phases)


@dataclass(frozen=True)
class Polynomial:
    """Polynomial decay ``min_lr + (max_lr - min_lr) * (1 - pct) ** power`` after a warm-up.

    ``pct`` goes from 0 at step ``warmup_steps`` to 1 at step ``total_steps - 1``.
    Equals torch's ``PolynomialLR`` (``total_iters = total_steps - 1``, no warm-up,
    ``min_lr = 0``) and transformers' ``get_polynomial_decay_schedule_with_warmup``
    (``num_training_steps = total_steps - 1``, ``lr_end = min_lr``). ``power=1`` is
    :class:`LinearDecay`; BERT and fairseq use it, DeepLab ``power=0.9``.

    >>> Polynomial(max_lr=1.0, total_steps=11, power=2.0)(5)
    0.25
    """

    max_lr: float
    total_steps: int
    power: float = 1.0
    warmup_steps: int = 0
    start_lr: float = 0.0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _check_warmup_lrs(self)
        _set(self, "min_lr", _nonnegative("min_lr", self.min_lr))
        _ordered("min_lr", self.min_lr, "max_lr", self.max_lr)
        _set(self, "power", _positive("power", self.power))
        _ramp_steps(self)
        _warmup_steps(self, self.total_steps - 1)

    def __call__(self, step: int) -> float:
        t = _held(step, self.total_steps)
        if t < self.warmup_steps:
            return _warming(self, t)
        length = self.total_steps - 1 - self.warmup_steps
        pct = (t - self.warmup_steps) / length if length else 1.0
        # transformers' operation order: lr_range * pct_remaining ** power + lr_end
        return (self.max_lr - self.min_lr) * (1 - pct) ** self.power + self.min_lr


@dataclass(frozen=True)
class InverseSqrt:
    """Linear warm-up to ``max_lr`` at step ``warmup_steps``, then ``max_lr / sqrt(t / timescale)``.

    The Transformer's schedule (Vaswani et al. 2017), as transformers'
    ``get_inverse_sqrt_schedule`` (from big_vision): after the warm-up,
    ``max_lr / sqrt((step + timescale - warmup_steps) / timescale)``; ``timescale``
    defaults to ``warmup_steps`` (so ``max_lr * sqrt(warmup_steps / step)``), or
    10,000 without warm-up. It never ends: no ``total_steps``.

    >>> InverseSqrt(max_lr=1.0, warmup_steps=100)(400)
    0.5
    """

    max_lr: float
    warmup_steps: int
    timescale: int | None = None
    start_lr: float = 0.0

    def __post_init__(self) -> None:
        _check_warmup_lrs(self)
        _set(self, "warmup_steps", _integer("warmup_steps", self.warmup_steps, 0))
        if self.timescale is None:
            _set(self, "timescale", self.warmup_steps or 10_000)
        _set(self, "timescale", _integer("timescale", self.timescale, 1))

    def __call__(self, step: int) -> float:
        _check_step(step)
        if step < self.warmup_steps:
            return _warming(self, step)
        shift = self.timescale - self.warmup_steps
        return self.max_lr * (1.0 / math.sqrt((step + shift) / self.timescale))


@dataclass(frozen=True)
class WSD:
    """Warm-up, stable, decay ("trapezoidal"; MiniCPM, Hu et al. 2024; Hägele et al. 2024).

    Linear warm-up from ``start_lr`` to ``max_lr`` at step ``warmup_steps``; ``max_lr``
    until the decay starts ``decay_steps`` before the end; then ``decay``
    (``"linear"``, ``"cos"`` or ``"1-sqrt"``: ``1 - sqrt(pct)``, the cool-down
    Hägele et al. found best) down to ``min_lr`` at step ``total_steps - 1``. Equals
    transformers' ``get_wsd_schedule`` with ``num_stable_steps = total_steps - 1 -
    warmup_steps - decay_steps``, ``min_lr_ratio = min_lr / max_lr`` and ``start_lr = min_lr``
    (its warm-up starts at the floor).

    >>> WSD(max_lr=1.0, total_steps=101, warmup_steps=10, decay_steps=20, decay="linear")(90)
    0.5
    """

    max_lr: float
    total_steps: int
    warmup_steps: int
    decay_steps: int
    decay: str = "1-sqrt"
    start_lr: float = 0.0
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        _check_warmup_lrs(self)
        _set(self, "min_lr", _nonnegative("min_lr", self.min_lr))
        _ordered("min_lr", self.min_lr, "max_lr", self.max_lr)
        _ramp_steps(self)
        _set(self, "decay_steps", _integer("decay_steps", self.decay_steps, 1))
        _warmup_steps(self, self.total_steps - 1)
        _choice("decay", self.decay, _WSD_DECAYS)
        if self.warmup_steps + self.decay_steps > self.total_steps - 1:
            raise UserError(
                f"warmup_steps + decay_steps ({self.warmup_steps} + {self.decay_steps}) must be "
                f"< total_steps ({self.total_steps})"
            )

    @property
    def decay_start(self) -> int:
        """The last step at ``max_lr``: the decay runs from here to ``total_steps - 1``."""
        return self.total_steps - 1 - self.decay_steps

    def __call__(self, step: int) -> float:
        t = _held(step, self.total_steps)
        if t < self.warmup_steps:
            return _warming(self, t)
        if t <= self.decay_start:
            return self.max_lr
        pct = (t - self.decay_start) / self.decay_steps
        if self.decay == "linear":
            factor = 1.0 - pct
        elif self.decay == "cos":
            factor = 0.5 * (1.0 + math.cos(math.pi * pct))
        else:  # "1-sqrt"
            factor = 1.0 - math.sqrt(pct)
        return self.min_lr + (self.max_lr - self.min_lr) * factor


# --- the paper's schedules and policies ------------------------------------------


def paper_clr(
    total_steps: int, min_lr: float = PAPER_MIN_LR, max_lr: float = PAPER_MAX_LR
) -> Triangular:
    """The paper's CLR: one triangular cycle ``min_lr -> max_lr -> min_lr`` over the run.

    stepsize = half the run (paper: 0.1 -> 3.0, stepsize 5,000 of 10,000 iterations).
    """
    total_steps = _integer("total_steps", total_steps, 1)
    return Triangular(min_lr, max_lr, stepsize=total_steps / 2, total_steps=total_steps)


def paper_piecewise(total_steps: int = 80_000, lr: float = 0.35) -> PiecewiseConstant:
    """The paper's PC-LR baseline: ``lr``, x0.1 at 50k and 70k of 80k iterations.

    Other run lengths keep the proportions (boundaries at 5/8 and 7/8 of the run).
    """
    total_steps = _integer("total_steps", total_steps, 1)
    return PiecewiseConstant(
        (lr, lr * 0.1, lr * 0.01), (total_steps * 5 // 8, total_steps * 7 // 8)
    )


def _momentum_part(lr: Schedule, momentum: object) -> Schedule | None:
    """A ``(max_momentum, base_momentum)`` cycle, a constant, or ``None``/``False`` (none).

    ``False`` means none too, because TOML configs have no null.
    """
    if momentum is None or momentum is False:
        return None
    if isinstance(momentum, numbers.Real) and not isinstance(momentum, bool):
        return Constant(_momentum("momentum", momentum))
    pair = _sequence("momentum", momentum)
    if len(pair) != 2:
        raise UserError(f"momentum must be (max_momentum, base_momentum), got {momentum!r}")
    return momentum_schedule(lr, *pair)  # type: ignore[arg-type]


def _policy(
    lr: Schedule, momentum: object = None, weight_decay: object = None
) -> dict[str, Schedule]:
    policy: dict[str, Schedule] = {"lr": lr}
    momentum_part = _momentum_part(lr, momentum)
    if momentum_part is not None:
        policy["momentum"] = momentum_part
    if weight_decay is not None:
        policy["weight_decay"] = Constant(_nonnegative("weight_decay", weight_decay))
    return policy


def one_cycle(
    max_lr: float,
    total_steps: int,
    pct_start: float = 0.3,
    div: float = 25.0,
    final_div: float = 1e4,
    three_phase: bool = False,
    anneal: str = "cos",
    momentum: tuple[float, float] | float | None = CYCLICAL_MOMENTUM,
    **torch_names: Any,
) -> dict[str, Schedule]:
    """1cycle policy: :class:`OneCycle` LR plus, by default, momentum 0.95 -> 0.85 -> 0.95.

    ``momentum`` is ``(max_momentum, base_momentum)``, a constant, or ``None``
    (leave the optimizer's momentum alone; ``False`` also means none).
    torch ``OneCycleLR``'s names are accepted too: ``div_factor``,
    ``final_div_factor``, ``anneal_strategy``, ``max_momentum`` / ``base_momentum``
    and ``cycle_momentum``.

    >>> one_cycle(1.0, 100, div_factor=10, max_momentum=0.9)["lr"].div
    10.0
    """
    if torch_names:
        mine = {"div": div, "final_div": final_div, "anneal": anneal, "momentum": momentum}
        given = {k: v for k, v in mine.items() if v is not _ONE_CYCLE_DEFAULTS[k]}
        mapped = one_cycle_aliases({**given, **torch_names})
        div = mapped.get("div", div)
        final_div = mapped.get("final_div", final_div)
        anneal = mapped.get("anneal", anneal)
        momentum = mapped.get("momentum", momentum)
    lr = OneCycle(max_lr, total_steps, pct_start, div, final_div, three_phase, anneal)
    return _policy(lr, momentum)


_ONE_CYCLE_DEFAULTS = {"div": 25.0, "final_div": 1e4, "anneal": "cos", "momentum": CYCLICAL_MOMENTUM}
_TORCH_ONE_CYCLE_NAMES = {
    "div_factor": "div",
    "final_div_factor": "final_div",
    "anneal_strategy": "anneal",
}


def one_cycle_aliases(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with torch ``OneCycleLR``'s names turned into :func:`one_cycle`'s.

    An unknown name gets a did-you-mean over both vocabularies, not a bare TypeError.
    """
    out = dict(params)
    known = {"max_lr", "total_steps", "pct_start", "div", "final_div", "three_phase", "anneal",
             "momentum", "weight_decay", *_TORCH_ONE_CYCLE_NAMES, "max_momentum",
             "base_momentum", "cycle_momentum"}  # fmt: skip
    for key in out:
        if key not in known:
            raise UserError(
                f"unknown parameter {key!r} for policy 'one_cycle'{did_you_mean(key, sorted(known))} "
                f"(accepted: {', '.join(sorted(known))})"
            )
    for theirs, ours in _TORCH_ONE_CYCLE_NAMES.items():
        if theirs in out:
            if ours in out:
                raise UserError(f"give {ours!r} or torch's {theirs!r}, not both")
            out[ours] = out.pop(theirs)
    if "max_momentum" in out or "base_momentum" in out:
        if "momentum" in out:
            raise UserError("give momentum=(max, base) or max_momentum/base_momentum, not both")
        out["momentum"] = (
            out.pop("max_momentum", CYCLICAL_MOMENTUM[0]),
            out.pop("base_momentum", CYCLICAL_MOMENTUM[1]),
        )
    if "cycle_momentum" in out:
        if not out.pop("cycle_momentum"):
            out["momentum"] = None
    return out


def clr(
    min_lr: float,
    max_lr: float,
    total_steps: int,
    momentum: tuple[float, float] | float | None = None,
) -> dict[str, Schedule]:
    """The paper's CLR policy: one triangular cycle with stepsize ``total_steps / 2``.

    ``momentum`` as in :func:`one_cycle`, but ``None`` by default: the paper kept
    momentum constant (0.9 best, Table 6), so the optimizer's own value stays.
    ``momentum=(0.95, 0.85)`` cycles it inversely, as the follow-up practice does.
    """
    return _policy(paper_clr(total_steps, min_lr, max_lr), momentum)


def _constant_lr(lr: float) -> Constant:
    return Constant(lr)


def multistep(
    lr: float, total_steps: int, milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1
) -> PiecewiseConstant:
    """``lr``, times ``gamma`` at each milestone, given as fractions of the run.

    The common tuned baseline (x0.1 at 50% and 75%), as the skeptic's comparison uses.

    >>> multistep(0.1, 100)(75)
    0.001...
    """
    total_steps = _integer("total_steps", total_steps, 1)
    fractions = _sequence("milestones", milestones)
    for i, f in enumerate(fractions):
        if not (isinstance(f, numbers.Real) and 0.0 < f < 1.0):
            raise UserError(f"milestones[{i}] must be a fraction in (0, 1), got {f!r}")
    gamma = _nonnegative("gamma", gamma)
    values = tuple(lr * gamma**i for i in range(len(fractions) + 1))
    return PiecewiseConstant(values, tuple(int(f * total_steps) for f in fractions))


def _piecewise_values(values: Sequence[float], boundaries: Sequence[int]) -> PiecewiseConstant:
    return PiecewiseConstant(tuple(values), tuple(boundaries))


_POLICY_BUILDERS: Mapping[str, Callable[..., Schedule]] = MappingProxyType(
    {
        "clr": paper_clr,
        # Smith's CLR in general (torch's CyclicLR): stepsize, several cycles, modes.
        "cyclic": Triangular,
        "one_cycle": OneCycle,
        "piecewise": paper_piecewise,
        "multistep": multistep,
        "piecewise_values": _piecewise_values,
        "step": StepDecay,
        "cosine": Cosine,
        "warmup_cosine": WarmupCosine,
        "sgdr": SGDR,
        "constant": _constant_lr,
        "inv": Inv,
        # Schedules of current practice (transformers / torch conventions, see above).
        "linear_decay": LinearDecay,
        "poly": Polynomial,
        "inv_sqrt": InverseSqrt,
        "wsd": WSD,
    }
)
POLICY_NAMES: tuple[str, ...] = tuple(_POLICY_BUILDERS)  # what build_policy accepts


def build_policy(name: str, total_steps: int, **params: Any) -> dict[str, Schedule]:
    """Build a policy by name, for configs and the CLI.

    Names: ``clr`` (the paper's: one cycle over the run), ``cyclic`` (any
    :class:`Triangular` CLR: ``stepsize``, ``mode``, ``gamma``), ``one_cycle``,
    ``piecewise``, ``multistep``, ``piecewise_values``, ``step``, ``cosine``,
    ``warmup_cosine``, ``sgdr``, ``constant``, ``inv``, and those of current practice
    ``linear_decay``, ``poly``, ``inv_sqrt``, ``wsd``. ``params`` are the LR
    schedule's own arguments plus ``momentum`` (``(max, base)`` for the cyclical
    ``clr``/``one_cycle``; a constant; or ``None``/``False``; defaults as
    :func:`one_cycle` and :func:`clr`: 0.95/0.85 for ``one_cycle``, none
    otherwise) and ``weight_decay`` (a constant or ``None``).

    >>> sorted(build_policy("one_cycle", 100, max_lr=1.0))
    ['lr', 'momentum']
    >>> build_policy("cyclic", 100, min_lr=0.1, max_lr=1.0, stepsize=10, mode="triangular2")["lr"](30)
    0.55
    """
    if name not in _POLICY_BUILDERS:
        raise UserError(
            f"unknown policy {name!r}{did_you_mean(name, list(_POLICY_BUILDERS))} "
            f"(known: {', '.join(_POLICY_BUILDERS)})"
        )
    total_steps = _integer("total_steps", total_steps, 1)
    if name == "one_cycle":  # torch OneCycleLR's names (div_factor, ...) work here too
        params = one_cycle_aliases(params)
    builder = _POLICY_BUILDERS[name]
    signature = inspect.signature(builder).parameters
    own = [p for p in signature if p != "total_steps"]
    allowed = [*own, "momentum", "weight_decay"]
    for key in params:
        if key not in allowed:
            raise UserError(
                f"unknown parameter {key!r} for policy {name!r}{did_you_mean(key, allowed)} "
                f"(accepted: {', '.join(allowed)})"
            )
    missing = [p for p in own if signature[p].default is inspect.Parameter.empty]
    missing = [p for p in missing if p not in params]
    if missing:
        raise UserError(f"policy {name!r} needs {', '.join(missing)}")
    lr_params = {key: value for key, value in params.items() if key in own}
    if "total_steps" in signature:
        lr_params["total_steps"] = total_steps
    lr = builder(**lr_params)
    # 1cycle comes with the follow-up practice's inverse momentum cycle (as torch's
    # OneCycleLR); the paper's CLR and the baselines keep the optimizer's momentum.
    default_momentum = CYCLICAL_MOMENTUM if isinstance(lr, OneCycle) else None
    return _policy(lr, params.get("momentum", default_momentum), params.get("weight_decay"))


# --- JSON-able descriptions ---------------------------------------------------------


_SCHEDULE_TYPES: Mapping[str, type] = MappingProxyType(
    {
        cls.__name__: cls
        for cls in (
            Triangular,
            TriangularMomentum,
            OneCycle,
            OneCycleMomentum,
            PiecewiseConstant,
            StepDecay,
            Cosine,
            WarmupCosine,
            SGDR,
            Constant,
            Inv,
            LinearRamp,
            ExpRamp,
            LinearDecay,
            Polynomial,
            InverseSqrt,
            WSD,
        )
    }
)


def _check_names(policy: Mapping[str, object]) -> None:
    for key in policy:
        if key not in HYPER_PARAMETERS:
            raise UserError(
                f"unknown hyper-parameter {key!r}{did_you_mean(key, HYPER_PARAMETERS)} "
                f"(known: {', '.join(HYPER_PARAMETERS)})"
            )


def _is_ours(schedule: object) -> bool:
    return _SCHEDULE_TYPES.get(type(schedule).__name__) is type(schedule)


def policy_to_dict(policy: Policy) -> dict[str, dict[str, Any]]:
    """JSON-able description of a policy of this module's schedules (for config.json)."""
    _check_names(policy)
    out = {}
    for key, schedule in policy.items():
        if not _is_ours(schedule):
            raise UserError(
                f"{key!r}: {schedule!r} is not a superconv schedule; cannot describe it"
            )
        fields = {
            f.name: list(v) if isinstance(v, tuple) else v
            for f in dataclasses.fields(schedule)
            for v in [getattr(schedule, f.name)]
        }
        out[key] = {"type": type(schedule).__name__, **fields}
    return out


def policy_from_dict(description: Mapping[str, Mapping[str, Any]]) -> dict[str, Schedule]:
    """Rebuild a policy from :func:`policy_to_dict`'s description (values re-validated)."""
    _check_names(description)
    policy: dict[str, Schedule] = {}
    for key, entry in description.items():
        fields = dict(entry)
        type_name = fields.pop("type", None)
        if type_name not in _SCHEDULE_TYPES:
            raise UserError(
                f"{key!r}: unknown schedule type {type_name!r}"
                f"{did_you_mean(str(type_name), list(_SCHEDULE_TYPES))}"
            )
        cls = _SCHEDULE_TYPES[type_name]
        names = [f.name for f in dataclasses.fields(cls)]
        for field in fields:
            if field not in names:
                raise UserError(
                    f"{key!r}: unknown field {field!r} for {type_name}{did_you_mean(field, names)}"
                )
        policy[key] = cls(**fields)
    return policy


# --- the one writer of optimizer hyper-parameters -------------------------------------


def _write(group: dict[str, Any], key: str, value: float) -> None:
    # Tensor hyper-parameters (capturable / fused optimizers) are updated in place.
    if isinstance(group[key], torch.Tensor):
        group[key].fill_(value)
    else:
        group[key] = value


def apply(policy: Policy, optimizer: torch.optim.Optimizer, step: int) -> dict[str, float]:
    """Write the policy's values at ``step`` into every param group; return them.

    The only code that writes ``lr``, ``momentum`` (``betas[0]`` for Adam-style
    optimizers) and ``weight_decay``. All values are computed and checked before
    anything is written.

    A param group with an ``"lr_scale"`` entry (timm's convention, e.g. a smaller
    LR for a pretrained backbone) gets ``lr = lr_scale * policy's lr``; the
    returned ``lr`` is the policy's own.

    >>> import torch
    >>> head, body = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    >>> opt = torch.optim.SGD([{"params": [head]}, {"params": [body], "lr_scale": 0.1}], lr=1.0)
    >>> apply({"lr": Constant(0.5)}, opt, 0)
    {'lr': 0.5}
    >>> [g["lr"] for g in opt.param_groups]
    [0.5, 0.05]
    """
    _check_names(policy)
    _check_step(step)
    values = {key: float(schedule(step)) for key, schedule in policy.items()}
    for key, value in values.items():
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{key} at step {step} must be finite and >= 0, got {value!r}")
        if key == "momentum" and value >= 1:
            raise UserError(f"momentum at step {step} must be < 1, got {value!r}")
    groups = optimizer.param_groups
    if "momentum" in values and not all("betas" in g or "momentum" in g for g in groups):
        raise UserError(f"{type(optimizer).__name__} has no momentum or betas to schedule")
    if "weight_decay" in values and not all("weight_decay" in g for g in groups):
        raise UserError(f"{type(optimizer).__name__} has no weight_decay to schedule")
    scales = [_lr_scale(g, i) for i, g in enumerate(groups)]
    for group, scale in zip(groups, scales):
        for key, value in values.items():
            if key == "momentum" and "betas" in group:
                beta1 = group["betas"][0]
                if isinstance(beta1, torch.Tensor):
                    beta1.fill_(value)
                else:
                    group["betas"] = (value, *group["betas"][1:])
            else:
                _write(group, key, value * scale if key == "lr" else value)
    return values


def _lr_scale(group: Mapping[str, Any], index: int) -> float:
    """A param group's ``lr_scale`` (1 when absent), checked to be a finite number >= 0."""
    scale = group.get("lr_scale", 1.0)
    if (
        isinstance(scale, bool)
        or not isinstance(scale, (int, float))
        or not (math.isfinite(scale) and scale >= 0)
    ):
        raise UserError(
            f"param group {index}: lr_scale must be a finite number >= 0, got {scale!r}"
        )
    return float(scale)


# --- torch LRScheduler adapter -------------------------------------------------------------


class PolicyScheduler(LRScheduler):
    """Drive any policy from an existing loop: call ``.step()`` once per iteration.

    Like torch's schedulers, construction applies step 0 and each ``.step()``
    (after ``optimizer.step()``) applies the next step, through :func:`apply`.
    Finite schedules hold their last value past the end (no exception).
    ``state_dict()`` is plain data (the policy via :func:`policy_to_dict`), so it
    survives ``torch.load(weights_only=True)``; ``load_state_dict`` restores the
    policy and step and re-applies the values at that step.

    >>> import torch
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    >>> sched = PolicyScheduler(opt, one_cycle(max_lr=1.0, total_steps=100))
    >>> [round(lr, 9) for lr in sched.get_last_lr()]
    [0.04]
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, policy: Policy, last_epoch: int = -1
    ) -> None:
        if isinstance(policy, str):
            raise UserError(
                f"PolicyScheduler takes a policy (a mapping of schedules), not the name "
                f"{policy!r}: build it first, e.g. PolicyScheduler(optimizer, "
                f"build_policy({policy!r}, total_steps, max_lr=...)) or "
                "PolicyScheduler(optimizer, one_cycle(max_lr=..., total_steps=...))."
            )
        _check_names(policy)
        for key, schedule in policy.items():
            if not callable(schedule):
                raise UserError(
                    f"{key!r}: schedule must be callable step -> value, got {schedule!r}"
                )
        self.policy = policy
        for group in optimizer.param_groups:  # torch's bookkeeping, needed to resume
            group.setdefault("initial_lr", group["lr"])
        super().__init__(optimizer, last_epoch)

    def set_policy(self, policy: Policy) -> None:
        """Replace the policy (e.g. once a range test has found ``max_lr``) and apply it at
        the current step."""
        _check_names(policy)
        self.policy = policy
        apply(policy, self.optimizer, max(self.last_epoch, 0))
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def get_lr(self) -> list[float]:
        """The LR of every param group at step ``last_epoch``."""
        if "lr" in self.policy:
            lr = float(self.policy["lr"](self.last_epoch))
            groups = self.optimizer.param_groups
            return [lr * _lr_scale(g, i) for i, g in enumerate(groups)]
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def step(self, epoch: int | None = None) -> None:
        """Apply the next step's values (or those of step ``epoch`` when given)."""
        self._step_count += 1
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        apply(self.policy, self.optimizer, self.last_epoch)
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        """Plain-data state: the step, the last LRs and the policy's description.

        A policy holding callables other than this module's schedules is not
        described (``"policy": None``); loading then keeps the current policy.
        """
        describable = all(map(_is_ours, self.policy.values()))
        return {
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "_last_lr": list(self._last_lr),
            "base_lrs": [float(lr) for lr in self.base_lrs],
            "policy": policy_to_dict(self.policy) if describable else None,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume at the saved step: restore the policy (if described) and re-apply it."""
        if state_dict.get("policy") is not None:
            self.policy = policy_from_dict(state_dict["policy"])
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict["_step_count"])
        self.base_lrs = list(state_dict["base_lrs"])
        if self.last_epoch >= 0:
            apply(self.policy, self.optimizer, self.last_epoch)
        self._last_lr = [float(group["lr"]) for group in self.optimizer.param_groups]
