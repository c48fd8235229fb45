"""What the framework adapters share: a range test on any ``batch -> loss``, the 1cycle.

Frameworks own the step: Lightning's ``training_step(batch, batch_idx)``, a Hugging Face
model's ``model(**batch).loss``. :func:`range_test_on_batches` hands such a ``batch ->
loss`` function to the range test as its ``batch_loss`` (:mod:`superconv.step`, where
every kind of batch and loss is adapted, in one place), so that the range test (its ramp,
stop rules, adaptive restart and bit-identical restore) runs it unchanged. No framework
is imported here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from superconv.errors import UserError
from superconv.range_test import RangeTestCurve, range_test
from superconv.schedules import Schedule, build_policy
from superconv.suggest import CYCLE, CycleShape

# The range test the adapters run unless told otherwise: the exp ramp of `lr-find --mode exp`
# (start 1e-5) up to the paper's 3.0, with the adaptive restart `lr-find` and `fit` use.
RANGE_TEST_DEFAULTS: Mapping[str, Any] = {
    "start_lr": 1e-5,
    "end_lr": 3.0,
    "num_steps": 100,
    "mode": "exp",
    "adapt": True,
}


def range_test_on_batches(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch_loss: Callable[[Any, int], torch.Tensor],
    loader: Iterable,
    **settings: Any,
) -> RangeTestCurve:
    """LR range test where ``batch_loss(batch, batch_idx)`` computes the training loss.

    ``module`` holds every parameter ``optimizer`` updates; its state, the
    optimizer's and the RNGs' are restored bit-identically afterwards. ``settings``
    go to :func:`~superconv.range_test.range_test` (defaults:
    :data:`RANGE_TEST_DEFAULTS`); there is no validation loader on this path (a
    batch gives a loss, not outputs and targets), so rules read the train loss.

    >>> model = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> data = [torch.randn(8, 2) for _ in range(4)]
    >>> curve = range_test_on_batches(
    ...     model, opt, lambda x, i: model(x).pow(2).mean(), data, num_steps=20, progress=False
    ... )
    >>> len(curve.lrs) > 0
    True
    """
    if "val_loader" in settings:
        raise UserError(
            "range_test_on_batches has no val_loader: a batch gives a loss, not outputs and "
            "targets; read the train loss (or call superconv.range_test.range_test with a loss_fn)"
        )
    options = {**RANGE_TEST_DEFAULTS, "progress": False, **settings}
    calls = itertools.count()  # the framework's batch_idx: micro-batches drawn so far

    def with_index(_model: torch.nn.Module, batch: Any) -> torch.Tensor:
        return batch_loss(batch, next(calls))

    return range_test(module, optimizer, None, loader, batch_loss=with_index, **options)


def one_cycle_policy(
    max_lr: float, total_steps: int, shape: CycleShape = CYCLE
) -> dict[str, Schedule]:
    """The project's 1cycle (``superconv.suggest.CYCLE``: div 4, 30% rise, momentum 0.95/0.85).

    >>> sorted(one_cycle_policy(0.1, 100))
    ['lr', 'momentum']
    """
    return build_policy("one_cycle", total_steps, **shape.policy_params(max_lr))


def check_total_steps(total_steps: object, where: str, name: str = "total_steps") -> int:
    """``total_steps`` as an int >= 1, or a :class:`UserError` saying to pass ``name``."""
    if isinstance(total_steps, float) and total_steps.is_integer():
        total_steps = int(total_steps)
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise UserError(
            f"cannot tell how many optimizer steps the run makes ({where} gives {total_steps!r}); "
            f"pass {name}"
        )
    return total_steps
