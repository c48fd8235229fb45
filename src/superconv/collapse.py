"""Collapse detection: has a training run blown up, though its loss is still finite?

A NaN/inf loss is caught by the loop at once (:class:`~superconv.errors.DivergenceError`).
A run can also collapse with finite numbers: an LR far too high sends the loss to
1e13, or the network to a constant prediction (10% accuracy on ten classes) where
it sits for the rest of the run. :func:`check_collapse` is the rule, a pure
function of the metrics rows (``metrics.csv``), so it is checked by the training
loop at every evaluation and can be replayed on any committed run::

    >>> rows = [{"iteration": 100, "train_loss": 2.3, "test_acc": 30.0},
    ...         {"iteration": 200, "train_loss": 0.4, "test_acc": 85.0},
    ...         {"iteration": 300, "train_loss": 8e13, "test_acc": 10.0}]
    >>> check_collapse(rows, iterations=1000, num_classes=10).rule
    'loss'

Two rules, each conservative so that no run that ends well is stopped (tested by
replaying every committed ``metrics.csv`` under ``results/``):

- **loss**: the smoothed training loss (an exponential moving average, weight
  :data:`LOSS_EMA` on the newest row, of the rows' interval-mean losses) rises
  above :data:`LOSS_FACTOR` times its best (lowest) value so far *and* above the
  loss of guessing, ``ln(num_classes)``: a run worse than chance after having been
  ten times better has blown up.
- **accuracy**: at an evaluation past the first :data:`ACC_GRACE` (10%) of the run
  and past any warm-up (and past iteration :data:`ACC_MIN_STEPS`, 100: a short
  run at a sane LR may not have left chance yet), the validation accuracy (the test accuracy where the run
  holds no validation set) is at most chance + :data:`ACC_MARGIN` (5) points, and so
  is the training accuracy of that interval. The warm-up of a policy that ramps
  the LR up (1cycle, CLR, warm-up + cosine) lasts until the LR's first peak
  (:func:`lr_peak_step`): a 1cycle run may sit near chance while its LR rises and
  still end well. A network that learns its training batches but evaluates at
  chance is not collapsed: that is slow batch-norm statistics (Table 1, MAF 0.999),
  which the run's later evaluations recover from.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

LOSS_FACTOR = 10.0  # smoothed loss above 10x its best (and above chance loss): blown up
LOSS_EMA = 0.5  # weight of the newest evaluation interval in the smoothed loss
ACC_MARGIN = 5.0  # accuracy (points) above chance still counted as collapsed
ACC_GRACE = 0.10  # fraction of the run before the accuracy rule applies
ACC_MIN_STEPS = 100  # ... and iterations: a net at a sane LR may still guess before that


@dataclass(frozen=True)
class Collapse:
    """Where and why a run collapsed: the row's ``iteration``, the ``rule`` that fired
    ("loss" or "accuracy"), the ``lr`` of that row (if recorded), and a sentence."""

    iteration: int
    rule: str
    lr: float | None
    what: str


def _number(row: Mapping[str, Any], key: str) -> float | None:
    value = row.get(key)
    if value is None or value == "":
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if not math.isnan(value) else None


def check_collapse(
    rows: Sequence[Mapping[str, Any]],
    *,
    iterations: int,
    num_classes: int,
    warmup_steps: int = 0,
    loss_factor: float = LOSS_FACTOR,
    acc_margin: float = ACC_MARGIN,
) -> Collapse | None:
    """The first row of ``rows`` (metrics rows, oldest first) at which the run had
    collapsed, or ``None``.

    ``iterations`` is the run's planned length, ``num_classes`` gives chance
    (``100 / num_classes`` % accuracy, ``ln(num_classes)`` loss) and ``warmup_steps``
    delays the accuracy rule past a warm-up. Values may be strings (a CSV read back).
    """
    chance_acc = 100.0 / num_classes
    chance_loss = math.log(num_classes)
    grace = max(ACC_GRACE * iterations, warmup_steps, ACC_MIN_STEPS)
    smoothed = best = None
    for row in rows:
        step = int(float(row["iteration"]))
        lr = _number(row, "lr")
        at = f"iteration {step:,}" + (f" (lr {lr:.4g})" if lr is not None else "")
        loss = _number(row, "train_loss")
        if loss is not None:
            smoothed = loss if smoothed is None else LOSS_EMA * loss + (1 - LOSS_EMA) * smoothed
            best = smoothed if best is None else min(best, smoothed)
            if smoothed > loss_factor * best and smoothed > chance_loss:
                return Collapse(
                    step,
                    "loss",
                    lr,
                    f"the smoothed training loss blew up to {smoothed:.4g} at {at}, more than "
                    f"{loss_factor:g}x its best ({best:.4g}) and above chance ({chance_loss:.3g})",
                )
        acc_key = "val_acc" if _number(row, "val_acc") is not None else "test_acc"
        acc = _number(row, acc_key)
        train_acc = _number(row, "train_acc")
        at_chance = acc is not None and acc <= chance_acc + acc_margin
        if train_acc is not None and train_acc > chance_acc + acc_margin:
            at_chance = False  # learning, evaluated with lagging BN statistics
        if at_chance and step > grace:
            name = "validation" if acc_key == "val_acc" else "test"
            return Collapse(
                step,
                "accuracy",
                lr,
                f"the {name} accuracy was {acc:.2f}% at {at}, at most chance "
                f"({chance_acc:.3g}%) + {acc_margin:g} points (training accuracy "
                f"{train_acc if train_acc is not None else float('nan'):.2f}%), past the first "
                f"{ACC_GRACE:.0%} of the run and its warm-up",
            )
    return None


def ended_at_chance(
    rows: Sequence[Mapping[str, Any]], *, num_classes: int, acc_margin: float = ACC_MARGIN
) -> Collapse | None:
    """Whether a *finished* run ended at chance: its last evaluation's validation (else
    test) accuracy and that interval's training accuracy both at most chance +
    ``acc_margin`` points; ``None`` if not (or if the rows hold no accuracy).

    :func:`check_collapse` holds back for the first :data:`ACC_MIN_STEPS` iterations, so a
    run shorter than that (fit's first-rung runs at a large batch: 49 iterations) can
    end at chance unstopped. Once the run is over there is nothing left to wait for:
    ``superconv fit`` drops such a candidate as it drops one that diverged.

    >>> ended_at_chance([{"iteration": 49, "val_acc": 10.1, "train_acc": 9.8}],
    ...                 num_classes=10).rule
    'end'
    """
    chance_acc = 100.0 / num_classes
    for row in reversed(rows):
        acc_key = "val_acc" if _number(row, "val_acc") is not None else "test_acc"
        acc = _number(row, acc_key)
        if acc is None:
            continue
        train_acc = _number(row, "train_acc")
        if acc > chance_acc + acc_margin or (
            train_acc is not None and train_acc > chance_acc + acc_margin
        ):
            return None
        step = int(float(row["iteration"]))
        name = "validation" if acc_key == "val_acc" else "test"
        shown = f"{train_acc:.2f}%" if train_acc is not None else "not recorded"
        return Collapse(
            step,
            "end",
            _number(row, "lr"),
            f"the run ended at chance: {name} accuracy {acc:.2f}% at iteration {step:,} "
            f"(training accuracy {shown}), at most chance ({chance_acc:.3g}%) + "
            f"{acc_margin:g} points",
        )
    return None


def lr_peak_step(lr_at: Callable[[int], float], iterations: int, *, samples: int = 512) -> int:
    """The first step at which the LR schedule ``lr_at`` (a pure function of the step)
    reaches its largest value, sampled on a grid of at most ``samples`` steps: the
    end of the warm-up of a policy that ramps the LR up, 0 for one that starts high.

    >>> lr_peak_step(lambda s: min(s, 30) / 30, 100)
    30
    """
    stride = max(1, iterations // samples)
    steps = sorted({*range(0, iterations, stride), iterations - 1})
    values = [float(lr_at(s)) for s in steps]
    top = max(values)
    return next(s for s, v in zip(steps, values) if v >= top * (1 - 1e-9))
