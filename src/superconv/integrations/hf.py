"""Hugging Face ``transformers.Trainer``: the LR range test before training, a 1cycle scheduler.

``pip install 'superconv[hf]'``. Typical use::

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    finder = RangeTestCallback()                    # range test in on_train_begin
    trainer = Trainer(model, args, train_dataset=data, callbacks=[finder],
                      optimizers=(opt, one_cycle_scheduler(opt)))
    trainer.train()                                 # 1cycle at finder.suggestion.max_lr

- :func:`one_cycle_scheduler` / :func:`policy_scheduler`: scheduler factories for
  ``Trainer(optimizers=(optimizer, scheduler))``: a
  :class:`~superconv.schedules.PolicyScheduler` (a torch ``LRScheduler``) that the
  Trainer steps once per optimizer step; LR and momentum (``betas[0]`` for AdamW)
  are written by :func:`superconv.schedules.apply`. Its ``state_dict`` holds the
  policy, so a resumed Trainer continues the same cycle.
- :class:`RangeTestCallback` runs :func:`superconv.range_test.range_test` in
  ``on_train_begin`` on ``model(**batch).loss`` over the Trainer's own training
  loader, restores model, optimizer and RNG states bit-identically, reads a
  :class:`~superconv.suggest.Suggestion` by a named rule and (``one_cycle=True``)
  sets the project's 1cycle (``superconv.suggest.CYCLE``) at that ``max_lr`` and
  ``state.max_steps`` into the Trainer's :class:`PolicyScheduler`.

Limits: the range test runs in the model's own precision (no autocast) and
ignores gradient clipping; a resumed run (``global_step > 0``) skips it.
"""

from __future__ import annotations

from typing import Any

import torch

from superconv.errors import UserError
from superconv.integrations.common import (
    check_total_steps,
    one_cycle_policy,
    range_test_on_batches,
)
from superconv.range_test import RangeTestCurve
from superconv.schedules import Policy, PolicyScheduler
from superconv.step import model_loss
from superconv.suggest import CYCLE, CycleShape, Suggestion, check_rule, suggest

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "superconv.integrations.hf needs transformers: pip install 'superconv[hf]'"
    ) from exc

__all__ = ["RangeTestCallback", "one_cycle_scheduler", "policy_scheduler"]


def policy_scheduler(optimizer: torch.optim.Optimizer, policy: Policy) -> PolicyScheduler:
    """A scheduler for ``Trainer(optimizers=(optimizer, scheduler))`` driving ``policy``."""
    return PolicyScheduler(optimizer, policy)


def one_cycle_scheduler(
    optimizer: torch.optim.Optimizer,
    max_lr: float | None = None,
    num_training_steps: int | None = None,
    shape: CycleShape = CYCLE,
) -> PolicyScheduler:
    """The project's 1cycle with cyclical momentum as a ``Trainer`` scheduler.

    With ``max_lr`` (and ``num_training_steps``, the Trainer's optimizer steps) the
    cycle is fixed now. Without, the scheduler writes nothing until a
    :class:`RangeTestCallback` sets the cycle at the suggested ``max_lr`` over
    ``state.max_steps`` when training begins.
    """
    if max_lr is None:
        return PolicyScheduler(optimizer, {})
    total = check_total_steps(num_training_steps, "num_training_steps", "num_training_steps")
    return PolicyScheduler(optimizer, one_cycle_policy(max_lr, total, shape))


def _unwrap(obj: Any, attribute: str) -> Any:
    """The torch object inside accelerate's wrappers (AcceleratedOptimizer / Scheduler)."""
    return getattr(obj, attribute, obj)


class RangeTestCallback(TrainerCallback):
    """LR range test when training begins; the suggested 1cycle into the Trainer's scheduler.

    Args:
        rule: a rule of :func:`superconv.suggest.suggest`.
        budget: the run's length in optimizer steps, for rules that scale with it.
        one_cycle: set the 1cycle at ``suggestion.max_lr`` (``safe_max_lr`` with
            ``safe=True``) into the Trainer's scheduler, which must then be a
            :class:`PolicyScheduler` (:func:`one_cycle_scheduler`).
        shape: the cycle's shape (default ``superconv.suggest.CYCLE``).
        **range_test: settings of :func:`superconv.range_test.range_test` (default
            :data:`superconv.integrations.common.RANGE_TEST_DEFAULTS`).

    ``curve`` and ``suggestion`` hold the results once training has begun.
    """

    def __init__(
        self,
        rule: str = "default",
        budget: int | None = None,
        *,
        one_cycle: bool = True,
        safe: bool = False,
        shape: CycleShape = CYCLE,
        **range_test: Any,
    ) -> None:
        check_rule(rule)
        self.rule = rule
        self.budget = budget
        self.one_cycle = one_cycle
        self.safe = safe
        self.shape = shape
        self.settings = range_test
        self.curve: RangeTestCurve | None = None
        self.suggestion: Suggestion | None = None

    def on_train_begin(self, args, state, control, **kwargs: Any) -> None:
        if state.global_step > 0:
            return  # resumed: the scheduler's state (and its cycle) came from the checkpoint
        model, loader = kwargs.get("model"), kwargs.get("train_dataloader")
        optimizer = _unwrap(kwargs.get("optimizer"), "optimizer")
        scheduler = _unwrap(kwargs.get("lr_scheduler"), "scheduler")
        if self.one_cycle and not isinstance(scheduler, PolicyScheduler):
            raise UserError(
                f"the Trainer's scheduler is {type(scheduler).__name__}, not superconv's: pass "
                "optimizers=(opt, one_cycle_scheduler(opt)) (or RangeTestCallback(one_cycle=False))"
            )
        if model is None or optimizer is None or loader is None:
            raise UserError("the Trainer gave no model, optimizer or training loader to test on")
        settings = {"accumulation_steps": args.gradient_accumulation_steps, **self.settings}
        was_training = model.training
        model.train()  # as the Trainer's training steps run (dropout on)
        try:
            self.curve = range_test_on_batches(
                model, optimizer, lambda batch, i: model_loss(model, batch), loader, **settings
            )
        finally:
            model.train(was_training)
        self.suggestion = suggest(self.curve, self.rule, self.budget)
        if self.one_cycle:
            s = self.suggestion
            total = check_total_steps(state.max_steps, "the Trainer's state.max_steps")
            policy = one_cycle_policy(s.safe_max_lr if self.safe else s.max_lr, total, self.shape)
            scheduler.set_policy(policy)
