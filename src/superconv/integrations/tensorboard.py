"""TensorBoard logging through torch's ``SummaryWriter`` (``pip install 'superconv[tensorboard]'``).

``train``, ``fit``, ``lr_find`` (and ``superconv train|fit|lr-find --tensorboard DIR``)
take ``tensorboard=DIR`` or ``logger=`` (:func:`logging_to`); it also plugs into any
loop that takes observers.

- As an observer, ``logger(step, model, optimizer, metrics)``: the signature of the
  observers of :func:`superconv.train.train` and :func:`superconv.range_test.range_test`.
  Every ``every`` steps it writes ``metrics``' scalars (``loss``, ``lr``,
  ``momentum``, ...) under ``prefix`` (reading a loss tensor syncs the device, so
  not every step).
- :meth:`TensorBoardLogger.log_range_test`: a recorded
  :class:`~superconv.range_test.RangeTestCurve` (loss and smoothed loss per step,
  LR per step, validation loss/accuracy per evaluation) and a suggestion's
  ``max_lr``/``safe_max_lr`` and reason.
- :meth:`TensorBoardLogger.log_row`: one row of a run's ``metrics.csv`` (the CSV
  stays the record; TensorBoard is a view of it).

Files: the event files are written by torch's ``SummaryWriter`` (tensorboard's
own writer), the one reviewed exception to "only records and checkpoint write
files" (tests/test_hardening.py lists it).

>>> import tempfile
>>> with TensorBoardLogger(tempfile.mkdtemp()) as tb:   # doctest: +SKIP
...     tb.log_row(100, {"train_loss": 0.5, "val_acc": 0.9})
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from superconv.errors import UserError
from superconv.range_test import RangeTestCurve
from superconv.suggest import Suggestion

__all__ = ["TensorBoardLogger", "logging_to"]


def _writer_class() -> type:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # torch.utils.tensorboard needs the tensorboard package
        raise UserError(
            "TensorBoard logging needs the tensorboard package: pip install 'superconv[tensorboard]'"
        ) from exc
    return SummaryWriter


def _scalar(value: Any) -> float | None:
    """A finite float from a number or a one-element tensor; None for anything else."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class TensorBoardLogger:
    """Scalars to a TensorBoard log folder ``log_dir`` through torch's ``SummaryWriter``.

    ``every``: as an observer, write every ``every``-th step (and step 0).
    ``prefix``: the tag group of observer scalars (``train/loss``, ``train/lr``...).
    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, log_dir: str | os.PathLike, every: int = 10, prefix: str = "train"):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise UserError(f"every must be an integer >= 1, got {every!r}")
        self.log_dir = os.fspath(log_dir)
        self.every = every
        self.prefix = prefix
        self.writer = _open_writer(self.log_dir)

    # -- observer of train() / range_test()
    def __call__(
        self,
        step: int,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        metrics: Mapping[str, Any],
    ) -> None:
        if step % self.every == 0:
            self.log_row(step, metrics, prefix=self.prefix)

    def log_row(self, step: int, row: Mapping[str, Any], prefix: str = "") -> None:
        """Every finite numeric value of ``row`` as a scalar at ``step`` (others are skipped)."""
        for key, value in row.items():
            number = _scalar(value)
            if number is not None and key != "iteration":
                self.writer.add_scalar(f"{prefix}/{key}" if prefix else key, number, step)

    def log_range_test(
        self,
        curve: RangeTestCurve,
        suggestion: Suggestion | None = None,
        prefix: str = "range_test",
    ) -> None:
        """A range test's curve, indexed by step (the LR is its own scalar), and its suggestion."""
        for step, (lr, loss, smoothed) in enumerate(
            zip(curve.lrs, curve.losses, curve.smoothed_losses)
        ):
            self.log_row(step, {"lr": lr, "loss": loss, "smoothed_loss": smoothed}, prefix)
        for step, val_loss, val_acc in zip(curve.eval_steps, curve.val_losses, curve.val_accs):
            self.log_row(step, {"val_loss": val_loss, "val_acc": val_acc}, prefix)
        if suggestion is not None:
            self.log_row(
                0,
                {"max_lr": suggestion.max_lr, "safe_max_lr": suggestion.safe_max_lr},
                f"{prefix}/suggestion",
            )
            self.writer.add_text(
                f"{prefix}/suggestion",
                f"rule {suggestion.rule}: max_lr {suggestion.max_lr:.4g} "
                f"(safe {suggestion.safe_max_lr:.4g}); {suggestion.reason}",
                0,
            )
        if curve.stop_reason:
            self.writer.add_text(f"{prefix}/stop_reason", curve.stop_reason, 0)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _open_writer(log_dir: str) -> Any:
    """torch's ``SummaryWriter`` on ``log_dir`` (it creates the folder and its event file)."""
    SummaryWriter = _writer_class()
    try:
        return SummaryWriter(log_dir=log_dir)
    except OSError as exc:
        raise UserError(
            f"cannot write TensorBoard logs to {log_dir}: {exc.strerror or exc}. "
            "Choose a folder you can write to"
        ) from exc


@contextlib.contextmanager
def logging_to(
    tensorboard: str | os.PathLike | None = None, logger: Any = None, every: int = 10
) -> Iterator[Any]:
    """The logger of an API call's ``tensorboard=`` (a folder) / ``logger=`` arguments.

    Yields ``logger`` as given (the caller owns it), a :class:`TensorBoardLogger` on
    ``tensorboard`` (closed on exit), or ``None`` when neither is given.
    """
    if tensorboard is not None and logger is not None:
        raise UserError("give tensorboard= (a log folder) or logger=, not both")
    if tensorboard is None:
        yield logger
        return
    with TensorBoardLogger(tensorboard, every=every) as tb:
        yield tb
