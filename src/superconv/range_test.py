"""The LR range test (Smith & Topin 2017, section 3, Fig. 2 and Fig. 4) and its reading.

:func:`range_test` trains briefly while the learning rate grows linearly (the
paper: 0 -> 3.0 over runs of 5k, 20k and 100k iterations) or exponentially
(follow-up practice), recording the train loss every step and the validation loss
and accuracy every ``eval_every`` steps. It runs inside :func:`preserved_state`,
so the model, optimizer, AMP scaler and RNG states are bit-identical afterwards,
however the test ends.

:mod:`superconv.suggest` reads a recorded :class:`RangeTestCurve` by named
rules (this module knows none, and imports nothing of it).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch

from superconv import step as steps
from superconv.errors import UserError
from superconv.schedules import ExpRamp, LinearRamp, apply
from superconv.timing import Pace, Progress

MODES = ("linear", "exp")
COMPLETED = "completed"
# Where preserved_state keeps the state it restores: as it is (on the model's device),
# in host memory, or in a file (large models whose copy does not fit beside them).
STATE_TO = ("memory", "cpu", "disk")


# ----------------------------------------------------------------------------- records
@dataclass
class RangeTestCurve:
    """What one LR range test recorded.

    Per step: ``lrs``, raw train ``losses`` and ``smoothed_losses`` (bias-corrected
    exponential moving average, as in fastai / pytorch-lr-finder). Per evaluation:
    ``eval_steps``, ``eval_lrs``, ``val_losses``, ``val_accs`` (NaN when the
    outputs are not class scores). ``stop_reason`` is ``"completed"`` or says why
    the test stopped early; ``num_steps`` is the planned length.
    """

    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed_losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_lrs: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    val_accs: list[float] = field(default_factory=list)
    stop_reason: str = COMPLETED
    mode: str = "linear"
    num_steps: int = 0
    notes: list[str] = field(default_factory=list)  # what an adaptive test did, in words
    steps_run: int = 0  # optimizer steps over every attempt (an adaptive test may restart)

    def ending(self) -> str:
        """What happened at the end of the test, in words: ran to end_lr, or stopped (why)."""
        if self.stop_reason == COMPLETED:
            return "ran to end_lr"
        return "stopped: " + self.stop_reason.split(":")[0]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (NaN / inf become ``None``, strict JSON has no NaN)."""
        return {
            key: _json_list(value) if isinstance(value, list) else value
            for key, value in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangeTestCurve:
        """Inverse of :meth:`to_dict` (``None`` reads back as NaN)."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"not a RangeTestCurve record: unknown keys {unknown}.")
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key == "eval_steps":
                kwargs[key] = [int(v) for v in value]
            elif key == "steps_run":
                kwargs[key] = int(value)
            elif key == "notes":
                kwargs[key] = [str(v) for v in value]
            elif isinstance(value, list):
                kwargs[key] = [math.nan if v is None else float(v) for v in value]
            else:
                kwargs[key] = value
        return cls(**kwargs)


def _json_list(values: list) -> list:
    return [None if isinstance(v, float) and not math.isfinite(v) else v for v in values]


# ----------------------------------------------------------------------------- state
@contextlib.contextmanager
def preserved_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any = None,
    *,
    state_to: str = "memory",
    state_dir: str | os.PathLike | None = None,
) -> Iterator[None]:
    """Restore model, optimizer, scaler and RNG states bit-identically on exit.

    Saved on entry and restored on any exit (normal, exception, KeyboardInterrupt):
    every parameter and buffer (BN running statistics included, in place, so
    references stay valid), parameter gradients, each module's train/eval mode,
    the optimizer's per-parameter state and param-group hyper-parameters (lr,
    momentum, ...), the GradScaler state, and the RNG states of torch (CPU and,
    when available, CUDA), numpy and Python's ``random``.

    ``state_to`` says where the copy of the tensors (weights, gradients, buffers,
    optimizer state) waits: ``"memory"`` beside them (on their device), ``"cpu"``
    in host memory (a large model on a GPU), or ``"disk"``: a file in
    ``state_dir`` (default: the system's temporary folder) written atomically by
    :func:`superconv.checkpoint.save` and removed after the restore. Each restores
    every bit; the small rest (modes, hyper-parameters, RNG states) stays in memory.
    """
    saved = _capture(model, optimizer, scaler, state_to, state_dir)
    try:
        yield
    finally:
        _restore(model, optimizer, scaler, saved)


def _check_state_to(state_to: Any) -> None:
    if state_to not in STATE_TO:
        raise UserError(f"state_to must be one of {', '.join(STATE_TO)}, got {state_to!r}.")


def _to_host(value: Any) -> tuple[Any, Any]:
    """``value`` with every tensor copied to the CPU, and where each tensor was."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True), value.device
    if isinstance(value, dict):
        pairs = {k: _to_host(v) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, {k: w for k, (_, w) in pairs.items()}
    if isinstance(value, (list, tuple)):
        pairs = [_to_host(v) for v in value]
        return type(value)(v for v, _ in pairs), [w for _, w in pairs]
    return copy.deepcopy(value), None


def _from_host(value: Any, where: Any) -> Any:
    """Inverse of :func:`_to_host`: every tensor back on its device (same bits)."""
    if isinstance(value, torch.Tensor):
        return value.to(where, copy=True)
    if isinstance(value, dict):
        return {k: _from_host(v, where[k]) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_from_host(v, w) for v, w in zip(value, where))
    return value


def _capture(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    state_to: str = "memory",
    state_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    _check_state_to(state_to)
    params = dict(model.named_parameters())
    small = {
        "state_to": state_to,
        "modes": [(m, m.training) for m in model.modules()],
        "opt_groups": [
            copy.deepcopy({k: v for k, v in g.items() if k != "params"})
            for g in optimizer.param_groups
        ],
        "scaler": None if scaler is None else copy.deepcopy(scaler.state_dict()),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "rng_numpy": np.random.get_state(),
        "rng_python": random.getstate(),
    }
    if state_to == "memory":
        return {
            **small,
            "params": {n: p.detach().clone() for n, p in params.items()},
            "grads": {
                n: None if p.grad is None else p.grad.detach().clone() for n, p in params.items()
            },
            "buffers": {n: b.detach().clone() for n, b in model.named_buffers()},
            "opt_state": {p: copy.deepcopy(s) for p, s in optimizer.state.items()},
        }
    # Off the device: tensors by name (the optimizer's state by parameter position), so
    # that the disk copy is plain tensors and data (read back with weights_only=True).
    order = [p for g in optimizer.param_groups for p in g["params"]]
    position = {p: i for i, p in enumerate(order)}
    opt_state, opt_where = _to_host(
        {position[p]: dict(s) for p, s in optimizer.state.items() if p in position}
    )
    tensors = {
        "params": {n: p.detach().to("cpu", copy=True) for n, p in params.items()},
        "grads": {
            n: None if p.grad is None else p.grad.detach().to("cpu", copy=True)
            for n, p in params.items()
        },
        "buffers": {n: b.detach().to("cpu", copy=True) for n, b in model.named_buffers()},
        "opt_state": opt_state,
    }
    small.update(
        order=order,
        opt_where=opt_where,
        grad_where={n: None if p.grad is None else p.grad.device for n, p in params.items()},
    )
    if state_to == "cpu":
        return {**small, "tensors": tensors}
    from superconv import checkpoint

    folder = state_dir if state_dir is not None else _temp_dir()
    path = os.path.join(os.fspath(folder), f"superconv-restore-{os.getpid()}-{id(small):x}.pt")
    checkpoint.save(path, tensors)
    return {**small, "path": path}


def _temp_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


def _restore(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler: Any, saved: dict[str, Any]
) -> None:
    state_to = saved.get("state_to", "memory")
    if state_to == "memory":
        tensors = saved
        opt_state = saved["opt_state"]
        grads = saved["grads"]
    else:
        if state_to == "disk":
            from superconv import checkpoint

            try:
                tensors = checkpoint.load(saved["path"], map_location="cpu")
            finally:
                checkpoint.discard(saved["path"])
        else:
            tensors = saved["tensors"]
        order = saved["order"]
        restored = _from_host(tensors["opt_state"], saved["opt_where"])
        opt_state = {order[int(i)]: s for i, s in restored.items()}
        grads = {
            n: None if g is None else g.to(saved["grad_where"][n], copy=True)
            for n, g in tensors["grads"].items()
        }
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(tensors["params"][name])
            p.grad = grads[name]
        for name, b in model.named_buffers():
            b.copy_(tensors["buffers"][name])
    for module, mode in saved["modes"]:
        module.training = mode
    optimizer.state.clear()
    optimizer.state.update(opt_state)
    for group, hyper in zip(optimizer.param_groups, saved["opt_groups"]):
        for key in [k for k in group if k != "params" and k not in hyper]:
            del group[key]
        for key, value in hyper.items():
            # capturable / fused optimizers keep tensor hyper-parameters: update those in place
            if isinstance(group.get(key), torch.Tensor) and isinstance(value, torch.Tensor):
                group[key].copy_(value)
            else:
                group[key] = value
    if scaler is not None:
        scaler.load_state_dict(saved["scaler"])
    torch.set_rng_state(saved["rng_torch"])
    if saved["rng_cuda"] is not None:
        torch.cuda.set_rng_state_all(saved["rng_cuda"])
    np.random.set_state(saved["rng_numpy"])
    random.setstate(saved["rng_python"])


# ----------------------------------------------------------------------------- the test
# long: public API with 27 parameters, each documented in the docstring; the code is ~35 lines
def range_test(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None,
    train_loader: Iterable,
    val_loader: Iterable | None = None,
    *,
    batch_fn: Callable[[Any], tuple[Any, Any]] | None = None,
    batch_loss: Callable[[torch.nn.Module, Any], torch.Tensor] | None = None,
    start_lr: float = 0.0,
    end_lr: float = 3.0,
    num_steps: int = 100,
    mode: str = "linear",
    eval_every: int | None = None,
    eval_batches: int | None = None,
    smooth_beta: float = 0.98,
    diverge_factor: float = 4.0,
    accumulation_steps: int = 1,
    autocast_dtype: torch.dtype | None = None,
    scaler: Any = None,
    device: str | torch.device | None = None,
    progress: bool = True,
    observers: Sequence[Callable[..., Any]] = (),
    sync_every: int = 10,
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None = None,
    adapt: bool = False,
    max_restarts: int = 2,
    state_to: str = "memory",
    state_dir: str | os.PathLike | None = None,
) -> RangeTestCurve:
    """Run an LR range test and return the recorded curve; all state is restored after.

    The LR goes from ``start_lr`` at step 0 to ``end_lr`` at step ``num_steps - 1``,
    linearly (``mode="linear"``, the paper: 0 -> 3.0 over 5k..100k iterations) or
    geometrically (``mode="exp"``, needs ``start_lr > 0``), written by
    :func:`superconv.schedules.apply`. Each step draws ``accumulation_steps``
    micro-batches from ``train_loader`` (re-iterated when exhausted) and makes
    one optimizer step. ``loss_fn(outputs, targets)`` must average over the batch.

    Batches (see :mod:`superconv.step`): ``(inputs, targets)`` pairs by default;
    ``batch_fn(batch) -> (inputs, targets)`` for any other shape (a dict...); or
    ``batch_loss(model, batch) -> loss`` (with ``loss_fn=None``) when the loss is
    computed another way; ``loss_fn=None`` alone means the model returns its own
    loss (:func:`superconv.step.model_loss`, Hugging Face's ``model(**batch).loss``).
    Without outputs and targets, evaluations record the loss and no accuracy.
    Param groups with an ``lr_scale`` (:func:`superconv.step.keep_lr_ratios`) get
    that multiple of the ramp's LR, so their ratios hold.

    Every ``eval_every`` steps (default: 50 evaluations per test when a
    ``val_loader`` is given) the model is evaluated in ``model.eval()`` mode on
    ``eval_batches`` batches of ``val_loader`` (default: one full pass). Each
    evaluation starts a fresh pass over ``val_loader`` (the same batches every
    time for a deterministic loader, so the curve compares like with like) and
    re-iterates it when ``eval_batches`` exceeds its length.

    The test stops early, returning the curve with ``stop_reason`` set, when the
    train loss is NaN/inf or the smoothed loss exceeds ``diverge_factor`` x its
    best (the best counted once the EMA spans ``min(1/(1 - smooth_beta),
    num_steps/10)`` losses, so one lucky early batch cannot stop the test;
    ``math.inf`` stops on NaN/inf only). Losses are read to the host every
    ``sync_every`` steps (and before each evaluation), not every step: a stop
    found inside such a block truncates the curve at the step that triggered it,
    so the curve does not depend on ``sync_every`` (the few extra steps trained
    are undone with everything else).

    ``autocast_dtype`` (``torch.float16`` / ``torch.bfloat16``) runs forward passes
    under :func:`torch.autocast`; ``scaler`` (a ``torch.amp.GradScaler``) scales
    the backward pass. ``observers`` are called ``(step, model, optimizer,
    {"loss": tensor, "lr": float})`` after each optimizer step.

    Under DDP (``model`` wrapped in ``DistributedDataParallel``, every rank
    calling this), pass ``reduce_mean`` (e.g.
    :func:`superconv.distributed.mean_across_ranks`): the recorded losses and
    validation results are then averaged over ranks before anything is decided,
    so every rank sees the same curve, stops at the same step and restores its
    own state.

    ``adapt=True`` (what ``lr-find`` and ``fit`` use): a test that breaks down
    inside its first fifth (at least 20 steps), before any rule can read the
    curve, runs again (state restored) with an exp ramp over the four decades
    below the LR where it broke down, at most ``max_restarts`` times (so at most
    ``(1 + max_restarts) * num_steps`` steps in all); ``curve.notes`` says what
    it did. The paper's linear 0 -> 3 on a net without batch norm (LeNet) breaks
    down within a few steps; this turns that into a readable curve.

    ``state_to`` (``"memory"``, ``"cpu"``, ``"disk"``; with ``state_dir``): where
    the copy that restores the state waits (see :func:`preserved_state`); the
    restore is bit-identical in each case.

    Raises ``ValueError`` (:class:`~superconv.errors.UserError`) for impossible
    parameters. ``KeyboardInterrupt`` and loader errors propagate after the state
    is restored.
    """
    _check_range_args(
        start_lr,
        end_lr,
        num_steps,
        mode,
        eval_every,
        eval_batches,
        smooth_beta,
        diverge_factor,
        accumulation_steps,
        autocast_dtype,
        sync_every,
    )
    if eval_every is not None and val_loader is None:
        raise UserError("eval_every is set but there is no val_loader to evaluate on.")
    if val_loader is not None and eval_every is None:
        eval_every = max(1, num_steps // 50)
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise UserError(f"max_restarts must be an integer >= 0, got {max_restarts!r}.")
    _check_state_to(state_to)
    forward = steps.make_forward(loss_fn, batch_fn=batch_fn, batch_loss=batch_loss, device=device)
    ramps = _Ramps(
        model, optimizer, scaler, train_loader, val_loader, forward,
        steps.autocast(device, autocast_dtype), device, num_steps, eval_every, eval_batches,
        sync_every, smooth_beta, diverge_factor, accumulation_steps, reduce_mean,
        observers, progress, state_to, state_dir,
    )  # fmt: skip
    curve = ramps.run(start_lr, end_lr, mode)
    return _restarted(ramps, curve, max_restarts if adapt else 0)


@dataclass
class _Ramps:
    """What every ramp of one :func:`range_test` shares (an adaptive restart runs another
    ramp on the same model, data and settings)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: Any
    train_loader: Iterable
    val_loader: Iterable | None
    forward: Any
    autocast: Any
    device: torch.device
    num_steps: int
    eval_every: int | None
    eval_batches: int | None
    sync_every: int
    smooth_beta: float
    diverge_factor: float
    accumulation_steps: int
    reduce_mean: Callable[[torch.Tensor], torch.Tensor] | None
    observers: Sequence[Callable[..., Any]]
    progress: bool
    state_to: str
    state_dir: str | os.PathLike | None

    def run(self, start_lr: float, end_lr: float, mode: str) -> RangeTestCurve:
        """One ramp from ``start_lr`` to ``end_lr``; the model's state restored after."""
        num_steps = self.num_steps
        ramp = (LinearRamp if mode == "linear" else ExpRamp)(start_lr, end_lr, num_steps)
        curve = RangeTestCurve(mode=mode, num_steps=num_steps)
        # Divergence is judged once the EMA spans ~1/(1 - beta) losses (at most a tenth of the test).
        grace = min(int(1 / (1 - self.smooth_beta)), num_steps // 10)
        tracker = _DivergenceTracker(self.smooth_beta, self.diverge_factor, grace)
        bar = _progress_bar(self.progress, num_steps)
        try:
            with preserved_state(
                self.model,
                self.optimizer,
                self.scaler,
                state_to=self.state_to,
                state_dir=self.state_dir,
            ):
                self._steps(ramp, curve, tracker, bar)
        finally:
            if bar is not None:
                bar.close()
        return curve

    def _steps(
        self, ramp: Any, curve: RangeTestCurve, tracker: _DivergenceTracker, bar: Any
    ) -> None:
        """Train along ``ramp`` into ``curve``: the losses read every ``sync_every`` steps
        (and before each evaluation), until the end or a stop."""
        model, optimizer, eval_every = self.model, self.optimizer, self.eval_every
        num_steps, sync_every = self.num_steps, self.sync_every
        model.train()
        batches = steps.cycle(self.train_loader, "train_loader")
        pending: list[torch.Tensor] = []
        for step in range(num_steps):
            lr = apply({"lr": ramp}, optimizer, step)["lr"]
            loss = steps.train_step(
                model,
                optimizer,
                self.forward,
                batches,
                self.accumulation_steps,
                self.autocast,
                self.scaler,
            )
            for obs in self.observers:
                obs(step, model, optimizer, {"loss": loss, "lr": lr})
            curve.lrs.append(lr)
            pending.append(loss)
            at_eval = eval_every is not None and (step + 1) % eval_every == 0
            if not (at_eval or (step + 1) % sync_every == 0 or step + 1 == num_steps):
                continue
            self._read_losses(pending, curve, tracker)
            pending = []
            if bar is not None:
                bar.pace.tick(len(curve.losses))  # losses just read: the work is done
                bar.show(len(curve.losses), lr=f"{lr:.3g}", loss=f"{tracker.smoothed:.4g}")
            if curve.stop_reason != COMPLETED:
                del curve.lrs[len(curve.losses) :]
                break
            if at_eval:
                self._evaluate(step, lr, curve)

    def _read_losses(
        self, pending: list[torch.Tensor], curve: RangeTestCurve, tracker: _DivergenceTracker
    ) -> None:
        """Append the losses of the steps since the last read (rank-averaged under DDP),
        up to the first that stops the test (``curve.stop_reason`` then says why)."""
        first_step = len(curve.losses)
        losses = torch.stack(pending).float()
        if self.reduce_mean is not None:
            losses = self.reduce_mean(losses)
        for offset, value in enumerate(losses.cpu().tolist()):
            reason = tracker.add(value, first_step + offset, curve.lrs[first_step + offset])
            curve.losses.append(value)
            curve.smoothed_losses.append(tracker.smoothed)
            if reason:
                curve.stop_reason = reason
                break

    def _evaluate(self, step: int, lr: float, curve: RangeTestCurve) -> None:
        """One validation evaluation (rank-averaged under DDP), appended to ``curve``."""
        val_loss, val_acc = steps.evaluate(
            self.model,
            self.forward,
            steps.eval_batches(self.val_loader, self.eval_batches),
            self.autocast,
            self.device,
        )
        if self.reduce_mean is not None:
            pair = torch.tensor([val_loss, val_acc], dtype=torch.float64, device=self.device)
            val_loss, val_acc = self.reduce_mean(pair).tolist()
        curve.eval_steps.append(step)
        curve.eval_lrs.append(lr)
        curve.val_losses.append(val_loss)
        curve.val_accs.append(val_acc)


def _restarted(ramps: _Ramps, curve: RangeTestCurve, max_restarts: int) -> RangeTestCurve:
    """``curve``, or where it broke down in its first fifth (burn-in and smoothing), before
    any rule can read it, the curve of a restart: exponentially over the four decades below
    where it broke down, at most ``max_restarts`` times. ``notes`` says what ran."""
    num_steps = ramps.num_steps
    notes, spent = [], len(curve.losses)
    for _ in range(max_restarts):
        stop_lr = curve.lrs[-1] if curve.lrs else 0.0
        if curve.stop_reason == COMPLETED or len(curve.losses) >= _early(num_steps) or stop_lr <= 0:
            break
        notes.append(
            f"stopped at step {len(curve.losses) - 1} of {num_steps} (lr {stop_lr:.4g}: "
            f"{curve.stop_reason}), inside the first fifth of the test; restarted with an exp "
            f"ramp {stop_lr * 1e-4:.3g} -> {stop_lr:.3g} over {num_steps} steps"
        )
        curve = ramps.run(stop_lr * 1e-4, stop_lr, "exp")
        spent += len(curve.losses)
    curve.notes, curve.steps_run = notes, spent
    return curve


def _early(num_steps: int) -> int:
    """Steps a range test must survive for its curve to be read: a fifth of it, at least 20.

    Fewer points than that hold a burn-in, a smoothing window and almost nothing else.
    """
    return max(20, num_steps // 5)


def check_range_test_args(**settings: Any) -> None:
    """Raise :class:`UserError` for impossible :func:`range_test` settings.

    ``settings`` are keyword arguments of :func:`range_test`; the others take its
    defaults. For callers that must refuse bad settings before doing other work.
    """
    params = inspect.signature(range_test).parameters
    unknown = sorted(set(settings) - set(params))
    if unknown:
        raise UserError(f"unknown range-test setting(s): {', '.join(unknown)}.")
    merged = {name: settings.get(name, params[name].default) for name in _RANGE_ARGS}
    _check_range_args(**merged)


_RANGE_ARGS = (
    "start_lr",
    "end_lr",
    "num_steps",
    "mode",
    "eval_every",
    "eval_batches",
    "smooth_beta",
    "diverge_factor",
    "accumulation_steps",
    "autocast_dtype",
    "sync_every",
)


def _check_range_args(
    start_lr,
    end_lr,
    num_steps,
    mode,
    eval_every,
    eval_batches,
    smooth_beta,
    diverge_factor,
    accumulation_steps,
    autocast_dtype,
    sync_every,
) -> None:
    if mode not in MODES:
        raise UserError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
    if not (isinstance(start_lr, (int, float)) and math.isfinite(start_lr) and start_lr >= 0):
        raise UserError(f"start_lr must be a finite number >= 0, got {start_lr!r}.")
    if not (isinstance(end_lr, (int, float)) and math.isfinite(end_lr) and end_lr > start_lr):
        raise UserError(f"end_lr must be finite and > start_lr ({start_lr!r}), got {end_lr!r}.")
    if mode == "exp" and start_lr <= 0:
        raise UserError("mode='exp' grows the LR geometrically and needs start_lr > 0 (e.g. 1e-5).")
    for name, value, minimum in (
        ("num_steps", num_steps, 2),
        ("accumulation_steps", accumulation_steps, 1),
        ("eval_every", eval_every, 1),
        ("eval_batches", eval_batches, 1),
        ("sync_every", sync_every, 1),
    ):
        if value is None and name in ("eval_every", "eval_batches"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    if not (isinstance(smooth_beta, (int, float)) and 0 <= smooth_beta < 1):
        raise UserError(f"smooth_beta must be in [0, 1), got {smooth_beta!r}.")
    if not (isinstance(diverge_factor, (int, float)) and diverge_factor > 1):
        raise UserError(
            f"diverge_factor must be > 1 (math.inf never stops), got {diverge_factor!r}."
        )
    if autocast_dtype not in (None, torch.float16, torch.bfloat16):
        raise UserError(
            f"autocast_dtype must be None, torch.float16 or torch.bfloat16, got {autocast_dtype!r}."
        )


class _DivergenceTracker:
    """Bias-corrected EMA of the train loss and the stop rule of fastai / pytorch-lr-finder.

    One change: the best smoothed loss (and so the ``factor`` test) only counts from
    step ``grace`` on. The first smoothed values average just a few batches, and one
    lucky low batch there would make every later (properly averaged) value look
    ``factor`` times worse and stop the test at a tiny LR. A NaN/inf loss stops at once.
    """

    def __init__(self, beta: float, factor: float, grace: int):
        self.beta, self.factor, self.grace = beta, factor, grace
        self.avg, self.best, self.smoothed, self.count = 0.0, math.inf, math.nan, 0

    def add(self, loss: float, step: int, lr: float) -> str | None:
        self.count += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * loss
        self.smoothed = self.avg / (1 - self.beta**self.count)
        if not math.isfinite(loss):
            return f"non-finite train loss ({loss}) at step {step}, lr {lr:.4g}"
        if self.count <= self.grace:
            return None
        self.best = min(self.best, self.smoothed)
        if self.smoothed > self.factor * self.best:
            return (
                f"diverged: smoothed train loss {self.smoothed:.4g} > {self.factor:g} x best "
                f"{self.best:.4g} at step {step}, lr {lr:.4g}"
            )
        return None


def _progress_bar(enabled: bool, total: int) -> Progress | None:
    return Progress(Pace(total), desc="LR range test") if enabled else None

