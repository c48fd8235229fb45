"""Lightning callbacks: the LR range test before ``fit``, and a 1cycle with cyclical momentum.

``pip install 'superconv[lightning]'``. Typical use::

    finder = RangeTestCallback()                      # before fit: range test, then suggest
    trainer = L.Trainer(max_epochs=5, callbacks=[finder, OneCycleCallback(range_test=finder)])
    trainer.fit(model, train_loader)
    print(finder.suggestion.max_lr)

- :class:`RangeTestCallback` runs :func:`superconv.range_test.range_test` in
  ``on_fit_start`` on the LightningModule's own ``training_step`` (so any batch and
  loss work), restores the module, optimizer and RNG states bit-identically, and
  reads a :class:`~superconv.suggest.Suggestion` with a named rule.
- :class:`PolicyCallback` writes any superconv policy (step -> value) into the
  optimizers before every training batch, through :func:`superconv.schedules.apply`,
  at ``trainer.global_step`` (optimizer steps, so gradient accumulation and resume
  need nothing more). :class:`OneCycleCallback` builds the project's 1cycle
  (``superconv.suggest.CYCLE``) from a ``max_lr`` or the range test's suggestion.
- :func:`scheduler_config`: the alternative inside ``configure_optimizers``, a
  :class:`~superconv.schedules.PolicyScheduler` stepped every optimizer step.

Limits: automatic optimisation only; one optimizer per policy (every optimizer
of the module gets the same values); the range test runs in full precision on the
module's device and ignores gradient clipping. Under DDP the test calls
``training_step`` on each rank's module (no gradient all-reduce) and averages the
recorded losses across ranks, so every rank reads the same suggestion; that path
has not been run (the tests use one CPU process).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from superconv.errors import UserError
from superconv.integrations.common import (
    check_total_steps,
    one_cycle_policy,
    range_test_on_batches,
)
from superconv.range_test import RangeTestCurve
from superconv.schedules import Policy, PolicyScheduler, apply
from superconv.suggest import CYCLE, CycleShape, Suggestion, check_rule, suggest

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "superconv.integrations.lightning needs Lightning: pip install 'superconv[lightning]'"
    ) from exc

__all__ = ["OneCycleCallback", "PolicyCallback", "RangeTestCallback", "scheduler_config"]


def _loss_of(output: Any) -> torch.Tensor:
    """The loss a ``training_step`` returned (a tensor or a dict with ``"loss"``)."""
    if isinstance(output, Mapping):
        output = output.get("loss")
    if not isinstance(output, torch.Tensor):
        raise UserError(
            f"training_step returned {type(output).__name__}, not a loss tensor (or a dict with "
            "'loss'); the range test needs the loss it would optimise"
        )
    return output


def _automatic(pl_module: pl.LightningModule) -> None:
    if not pl_module.automatic_optimization:
        raise UserError(
            f"{type(pl_module).__name__} uses manual optimisation; superconv's Lightning "
            "callbacks drive automatic optimisation only"
        )


class RangeTestCallback(pl.Callback):
    """Run the LR range test in ``on_fit_start`` and read a suggestion from it.

    Args:
        rule: a rule of :func:`superconv.suggest.suggest` (``"default"``, ``"valley"``, ...).
        budget: the training run's length in optimizer steps, for rules that scale with it.
        train_loader: batches for the test (default: the trainer's training loader).
        **range_test: settings of :func:`superconv.range_test.range_test`
            (default :data:`superconv.integrations.common.RANGE_TEST_DEFAULTS`:
            exp ramp 1e-5 -> 3.0 over 100 steps, adaptive).

    After ``fit`` starts, ``curve`` holds the :class:`RangeTestCurve` and
    ``suggestion`` the :class:`Suggestion` (``max_lr``, ``safe_max_lr``, ``band``,
    ``reason``, ...). The loss is the module's own ``training_step(batch, i)``;
    ``self.log`` calls in it are dropped during the test. With Lightning's gradient
    accumulation each test step accumulates as many batches.
    """

    def __init__(
        self,
        rule: str = "default",
        budget: int | None = None,
        train_loader: Iterable | None = None,
        **range_test: Any,
    ) -> None:
        check_rule(rule)
        self.rule = rule
        self.budget = budget
        self.train_loader = train_loader
        self.settings = range_test
        self.curve: RangeTestCurve | None = None
        self.suggestion: Suggestion | None = None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _automatic(pl_module)
        if len(trainer.optimizers) != 1:
            raise UserError(
                f"the range test needs exactly one optimizer, the module has {len(trainer.optimizers)}"
            )
        loader = self.train_loader
        if loader is None:
            trainer.fit_loop.setup_data()  # what trainer.estimated_stepping_batches does too
            loader = trainer.train_dataloader
        if loader is None:
            raise UserError("no training data to run the range test on (pass train_loader)")
        self.curve = self.run(trainer, pl_module, loader)
        self.suggestion = suggest(self.curve, self.rule, self.budget)

    def run(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loader: Iterable
    ) -> RangeTestCurve:
        """The range test itself, on the module's ``training_step``.

        ``self.log`` / ``self.log_dict`` are no-ops during the test (its losses are
        not the run's metrics; outside the loop Lightning would refuse them). The
        trainer stays attached, so ``self.trainer`` works in ``training_step``.
        """

        def batch_loss(batch: Any, batch_idx: int) -> torch.Tensor:
            batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
            return _loss_of(pl_module.training_step(batch, batch_idx))

        settings: dict[str, Any] = {"accumulation_steps": trainer.accumulate_grad_batches}
        if trainer.world_size > 1:
            # Every rank must read the same curve (range_test's DDP contract). Not tested here:
            # the tests run one CPU process.
            settings["reduce_mean"] = lambda t: trainer.strategy.reduce(t, reduce_op="mean")
        settings.update(self.settings)
        optimizer = trainer.optimizers[0]
        pl_module.log = pl_module.log_dict = _no_log  # instance attributes, deleted below
        try:
            return range_test_on_batches(pl_module, optimizer, batch_loss, loader, **settings)
        finally:
            del pl_module.log, pl_module.log_dict


def _no_log(*args: Any, **kwargs: Any) -> None:
    """What ``self.log`` does during the range test: nothing."""


class PolicyCallback(pl.Callback):
    """Write a superconv policy into the optimizers before every training batch.

    ``policy`` maps ``lr`` / ``momentum`` / ``weight_decay`` to schedules of the
    optimizer step (e.g. :func:`superconv.schedules.one_cycle`), or is a function
    ``total_steps -> policy`` called in ``on_train_start`` with
    ``trainer.estimated_stepping_batches`` (or ``total_steps`` when given).
    ``values`` holds what was written last. Momentum goes to ``betas[0]`` for
    Adam-style optimizers. Refuses to run beside a scheduler from
    ``configure_optimizers`` (two writers of the LR).
    """

    def __init__(
        self,
        policy: Policy | Callable[[int], Policy],
        total_steps: int | None = None,
    ) -> None:
        self._policy = policy
        self.total_steps = total_steps
        self.policy: Policy | None = policy if isinstance(policy, Mapping) else None
        self.values: dict[str, float] = {}

    def build(self, trainer: pl.Trainer, total_steps: int) -> Policy:
        """The policy for a run of ``total_steps`` optimizer steps."""
        return self._policy(total_steps)  # type: ignore[operator]

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _automatic(pl_module)
        if trainer.lr_scheduler_configs:
            raise UserError(
                "configure_optimizers returned an LR scheduler as well; superconv's callback "
                "writes the LR itself: drop that scheduler (or use scheduler_config instead)"
            )
        if self.policy is None or not isinstance(self._policy, Mapping):
            total = self.total_steps
            if total is None:
                total = trainer.estimated_stepping_batches
            total = check_total_steps(total, "trainer.estimated_stepping_batches")
            self.total_steps = total
            self.policy = self.build(trainer, total)
        self._apply(trainer)  # resume: the values of the step training restarts at

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._apply(trainer)

    def _apply(self, trainer: pl.Trainer) -> None:
        assert self.policy is not None
        for optimizer in trainer.optimizers:
            self.values = apply(self.policy, optimizer, trainer.global_step)


class OneCycleCallback(PolicyCallback):
    """The project's 1cycle with cyclical momentum (``superconv.suggest.CYCLE``).

    ``max_lr`` given, or read from ``range_test`` (a :class:`RangeTestCallback`
    listed before this one: its ``suggestion.max_lr``, or ``safe_max_lr`` with
    ``safe=True``). ``total_steps`` defaults to ``trainer.estimated_stepping_batches``.
    """

    def __init__(
        self,
        max_lr: float | None = None,
        total_steps: int | None = None,
        *,
        range_test: RangeTestCallback | None = None,
        safe: bool = False,
        shape: CycleShape = CYCLE,
    ) -> None:
        if (max_lr is None) == (range_test is None):
            raise UserError("give OneCycleCallback either max_lr or range_test (one of them)")
        super().__init__(self._cycle, total_steps)
        self.given_max_lr = max_lr
        self.max_lr = max_lr  # the one in use: given, or read at the start of each fit
        self.range_test = range_test
        self.safe = safe
        self.shape = shape

    def _cycle(self, total_steps: int) -> Policy:
        max_lr = self.given_max_lr
        if max_lr is None:
            found = self.range_test.suggestion if self.range_test is not None else None
            if found is None:
                raise UserError(
                    "the RangeTestCallback has no suggestion yet: list it in callbacks, "
                    "before OneCycleCallback"
                )
            max_lr = found.safe_max_lr if self.safe else found.max_lr
        self.max_lr = max_lr
        return one_cycle_policy(max_lr, total_steps, self.shape)


def scheduler_config(optimizer: torch.optim.Optimizer, policy: Policy) -> dict[str, Any]:
    """A ``configure_optimizers`` scheduler entry driving ``policy`` every optimizer step.

    >>> import torch
    >>> from superconv.schedules import one_cycle
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1, momentum=0.9)
    >>> config = scheduler_config(opt, one_cycle(max_lr=1.0, total_steps=100))
    >>> config["interval"], type(config["scheduler"]).__name__
    ('step', 'PolicyScheduler')
    """
    return {"scheduler": PolicyScheduler(optimizer, policy), "interval": "step", "frequency": 1}
