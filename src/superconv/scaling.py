"""Carry a learning rate found at one batch size to another (pure arithmetic).

A range test (or a paper) gives a good LR at one *global* batch: the images that
go into one optimizer step, ``batch_size * accumulation_steps * devices``. Training
at another global batch needs another LR. Two rules are in use:

- ``"linear"``: LR proportional to the batch (Goyal et al. 2017, "Accurate, Large
  Minibatch SGD": ImageNet ResNet-50 at 0.1 x batch/256 up to batch 8k, with a
  warm-up). The usual rule for SGD with momentum.
- ``"sqrt"``: LR proportional to the square root of the batch (Krizhevsky 2014,
  "One weird trick"; Hoffer et al. 2017; for Adam-style optimizers Malladi et al.
  2022's square-root scaling rule). Keeps the noise of the updates, not their mean.

Both are rules of thumb that break down past a "critical" batch size; a new range
test at the new batch is the check. Batch-norm statistics see the per-device
batch, which accumulation and device count do not change.

>>> carry_lr(0.1, global_batch(256), global_batch(64, accumulation_steps=4, devices=4))
0.4
>>> round(carry_lr(0.001, global_batch(32), global_batch(128), rule="sqrt"), 9)
0.002
"""

from __future__ import annotations

import math
import numbers

from superconv.errors import UserError, did_you_mean

RULES = ("linear", "sqrt")


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UserError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def global_batch(batch_size: int, accumulation_steps: int = 1, devices: int = 1) -> int:
    """Examples per optimizer step: ``batch_size`` (per device and micro-batch) x
    ``accumulation_steps`` x ``devices``.

    >>> global_batch(64, accumulation_steps=2, devices=8)
    1024
    """
    return (
        _count("batch_size", batch_size)
        * _count("accumulation_steps", accumulation_steps)
        * _count("devices", devices)
    )


def carry_lr(lr: float, from_batch: int, to_batch: int, rule: str = "linear") -> float:
    """The LR for global batch ``to_batch``, given a good ``lr`` at global batch ``from_batch``.

    ``rule="linear"``: ``lr * to_batch / from_batch``; ``rule="sqrt"``:
    ``lr * sqrt(to_batch / from_batch)``. Build the batches with :func:`global_batch`
    when accumulation or several devices are involved. Apply it to every LR of a
    cycle alike (``max_lr``; ``min_lr`` follows through the cycle's ``div``).
    """
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr):
        raise UserError(f"lr must be a finite number, got {lr!r}")
    if lr < 0:
        raise UserError(f"lr must be >= 0, got {lr!r}")
    from_batch = _count("from_batch", from_batch)
    to_batch = _count("to_batch", to_batch)
    if rule not in RULES:
        raise UserError(
            f"unknown rule {rule!r}{did_you_mean(rule, RULES)} (known: {', '.join(RULES)})"
        )
    ratio = to_batch / from_batch
    return float(lr) * (ratio if rule == "linear" else math.sqrt(ratio))
