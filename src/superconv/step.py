"""How one batch becomes a loss: shared by the range test, ``fit`` and the training loop.

A *forward* is a function ``forward(model, batch) -> (loss, outputs, targets)``
built once by :func:`make_forward` from what the caller has:

- ``loss_fn(outputs, targets)`` and batches that are ``(inputs, targets)`` pairs
  (the paper's setting, and the default path: ``loss_fn(model(inputs), targets)``);
- ``batch_fn(batch) -> (inputs, targets)`` for batches of any other shape (a dict,
  a dataclass, a triple...), with the same ``loss_fn``;
- ``batch_loss(model, batch) -> loss`` when the caller computes the loss itself,
  e.g. :func:`model_loss` for models that return their own loss (Hugging Face:
  ``model(**batch).loss``). Outputs and targets are then unknown (``None``), so an
  evaluation reports the loss and no accuracy.

:func:`train_step` makes one optimizer step from ``accumulation_steps``
micro-batches, under ``autocast`` (bf16; or fp16 with a ``GradScaler``, see
:func:`amp`); :func:`evaluate` averages a loss (and an accuracy where the outputs
are class scores) over batches. The choice among the shapes is made once, when the
forward is built: a step costs one function call more than inlined code, nothing else.

Several param groups (discriminative LRs): :func:`superconv.schedules.apply`, the
one writer of the LR, gives a group with an ``lr_scale`` entry ``lr_scale x`` the
policy's LR, so the ratios hold as a cycle moves them together.
:func:`keep_lr_ratios` sets ``lr_scale`` from the LRs the groups have now.

This module imports nothing from models, data, train, cli or integrations: it works
in anyone's loop.

>>> model = torch.nn.Linear(3, 2)
>>> forward = make_forward(torch.nn.functional.cross_entropy)
>>> loss, outputs, targets = forward(model, (torch.randn(4, 3), torch.tensor([0, 1, 1, 0])))
>>> tuple(outputs.shape), loss.dim()
((4, 2), 0)
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch

from superconv.errors import UserError

Forward = Callable[[torch.nn.Module, Any], tuple[torch.Tensor, Any, Any]]
LossFn = Callable[[Any, Any], torch.Tensor]
BatchFn = Callable[[Any], tuple[Any, Any]]
BatchLoss = Callable[[torch.nn.Module, Any], torch.Tensor]

AMP_DTYPES = (None, torch.float16, torch.bfloat16)


# ----------------------------------------------------------------------------- batches
def move(value: Any, device: torch.device) -> Any:
    """``value`` on ``device``: a tensor, or the tensors inside dicts, lists and tuples.

    Other objects are returned as they are, unless they have a ``.to`` method of their
    own (Hugging Face's ``BatchEncoding``), which is then used.
    """
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        moved = {k: move(v, device) for k, v in value.items()}
        try:
            return type(value)(moved)
        except TypeError:  # a mapping type that cannot be built from a dict
            return moved
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a namedtuple
        return type(value)(*(move(v, device) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(move(v, device) for v in value)
    to = getattr(value, "to", None)
    return to(device) if callable(to) else value


def _tensor_to(value: Any, device: torch.device) -> Any:
    return value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value


def pair(batch: Any) -> tuple[Any, Any]:
    """The default ``batch_fn``: a batch is an ``(inputs, targets)`` pair."""
    try:
        inputs, targets = batch
    except (TypeError, ValueError) as exc:
        raise UserError(
            "loaders must yield (inputs, targets) pairs; for batches of another shape pass "
            "batch_fn(batch) -> (inputs, targets), or batch_loss(model, batch) -> loss "
            f"(got a {type(batch).__name__})."
        ) from exc
    return inputs, targets


def model_loss(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """The loss a model computes itself (Hugging Face style): a ready-made ``batch_loss``.

    The model is called as ``model(**batch)`` for a dict, ``model(*batch)`` for a
    tuple or list, else ``model(batch)``; the loss is ``outputs.loss``,
    ``outputs["loss"]``, or the output itself when it is a scalar tensor. The batch
    is moved to the device of the model's first parameter.

    >>> class Own(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.lin = torch.nn.Linear(2, 1)
    ...     def forward(self, x, labels):
    ...         return {"loss": (self.lin(x).squeeze(1) - labels).pow(2).mean()}
    >>> model_loss(Own(), {"x": torch.ones(3, 2), "labels": torch.zeros(3)}).dim()
    0
    """
    first = next(model.parameters(), None)
    if first is not None:
        batch = move(batch, first.device)
    if isinstance(batch, Mapping):
        outputs = model(**batch)
    elif isinstance(batch, (tuple, list)):
        outputs = model(*batch)
    else:
        outputs = model(batch)
    if isinstance(outputs, Mapping):
        loss = outputs.get("loss")
    elif isinstance(outputs, torch.Tensor):
        loss = outputs
    else:
        loss = getattr(outputs, "loss", None)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise UserError(
            f"the model returned no loss ({type(outputs).__name__} without a scalar 'loss'): "
            "give the batches their labels (e.g. a 'labels' entry), or pass loss_fn"
        )
    return loss


# ----------------------------------------------------------------------------- forward
def make_forward(
    loss_fn: LossFn | None = None,
    *,
    batch_fn: BatchFn | None = None,
    batch_loss: BatchLoss | None = None,
    device: str | torch.device | None = None,
) -> Forward:
    """``forward(model, batch) -> (loss, outputs, targets)`` for the kind of batch and loss given.

    - ``loss_fn`` alone: batches are ``(inputs, targets)``; tensors go to ``device``
      (when given); ``loss = loss_fn(model(inputs), targets)``.
    - ``loss_fn`` and ``batch_fn``: ``inputs, targets = batch_fn(batch)``, then as above.
    - ``batch_loss``: ``loss = batch_loss(model, batch)`` (the batch as the loader
      gives it; :func:`model_loss` moves it to the model's device).
    - neither: the model returns its own loss (``batch_loss=model_loss``).

    ``loss_fn`` must average over the batch.
    """
    if batch_loss is not None and (loss_fn is not None or batch_fn is not None):
        raise UserError(
            "give batch_loss(model, batch) -> loss, or loss_fn(outputs, targets) (with an "
            "optional batch_fn), not both"
        )
    if batch_loss is None and loss_fn is None:
        if batch_fn is not None:
            raise UserError("batch_fn splits a batch for loss_fn(outputs, targets): pass loss_fn")
        batch_loss = model_loss
    if batch_loss is not None:
        if not callable(batch_loss):
            raise UserError(f"batch_loss must be callable, got {batch_loss!r:.80}")
        own = batch_loss

        def forward_own(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, Any, Any]:
            loss = own(model, batch)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                raise UserError(f"batch_loss must return a scalar tensor, got {loss!r:.80}")
            return loss, None, None

        return forward_own
    if not callable(loss_fn):
        raise UserError(f"loss_fn must be callable, got {loss_fn!r:.80}")
    split = pair if batch_fn is None else batch_fn
    where = None if device is None else torch.device(device)

    def forward(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, Any, Any]:
        inputs, targets = split(batch)
        if where is not None:
            inputs, targets = _tensor_to(inputs, where), _tensor_to(targets, where)
        outputs = model(inputs)
        return loss_fn(outputs, targets), outputs, targets

    return forward


# ----------------------------------------------------------------------------- AMP
def autocast(device: str | torch.device, dtype: torch.dtype | None) -> Callable[[], Any]:
    """A factory of the autocast context of ``dtype`` on ``device`` (a no-op for ``None``)."""
    if dtype not in AMP_DTYPES:
        raise UserError(
            f"autocast_dtype must be None, torch.float16 or torch.bfloat16, got {dtype!r}."
        )
    if dtype is None:
        return contextlib.nullcontext
    kind = torch.device(device).type
    return lambda: torch.autocast(device_type=kind, dtype=dtype)


def amp(precision: str, device: str | torch.device) -> tuple[torch.dtype | None, Any]:
    """``(autocast_dtype, scaler)`` for ``precision`` ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    bf16 has float32's range: autocast alone. fp16 does not: its gradients are scaled
    by a ``torch.amp.GradScaler`` (skipped steps on inf/NaN, the scale adapted).

    >>> amp("fp16", "cpu")[0]
    torch.float16
    """
    if precision in ("fp32", None):
        return None, None
    if precision == "bf16":
        return torch.bfloat16, None
    if precision == "fp16":
        return torch.float16, torch.amp.GradScaler(torch.device(device).type)
    raise UserError(f"precision must be fp32, bf16 or fp16, got {precision!r}.")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX), where bf16
    autocast can be faster than float32; elsewhere it is emulated, and slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def auto_precision(device: str | torch.device) -> tuple[str, str]:
    """What ``--precision auto`` of the CLI trains in on ``device``, and why, in words.

    bf16 autocast on CUDA (as before). On the CPU, bf16 where oneDNN runs it natively:
    there it matched or beat float32's accuracy at 1.3-1.5x its speed (ResNet-20 5 epochs and
    LeNet 12 epochs, 3 seeds each: ``benchmarks/bf16_parity.py`` ->
    results/bf16-parity/parity.md); float32 where bf16 is emulated, which is slower.
    TrainConfig's own ``"auto"`` keeps its meaning (fp32 on the CPU), so committed runs
    and ``reproduce``'s plans are unchanged: only the CLI resolves, and records the result.
    """
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16", "bf16 autocast on CUDA"
    if kind == "cpu" and cpu_has_native_bf16():
        return "bf16", (
            "this CPU runs bf16 natively (oneDNN: AVX512-BF16 or AMX), where bf16 autocast "
            "measured accuracy parity with fp32 at 1.3-1.5x its speed "
            "(results/bf16-parity/parity.md); --precision fp32 keeps float32"
        )
    return "fp32", f"no native bf16 on this {kind.upper()}: float32"


# ----------------------------------------------------------------------------- steps
def cycle(loader: Iterable, name: str) -> Iterator:
    """Yield from ``loader`` forever, starting a new pass whenever one ends."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise UserError(f"{name} yielded no batches.")


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    forward: Forward,
    batches: Iterator,
    accumulation_steps: int = 1,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    scaler: Any = None,
) -> torch.Tensor:
    """One optimizer step over ``accumulation_steps`` micro-batches; the mean loss (on device).

    Each micro-batch's loss is divided by ``accumulation_steps`` before its backward
    pass, so the gradient is that of the mean over the micro-batches (one big batch
    for a loss that averages). With a ``scaler`` (fp16), the backward pass is scaled
    and ``scaler.step`` skips a step whose gradients are not finite.
    """
    optimizer.zero_grad(set_to_none=True)
    total = None
    for _ in range(accumulation_steps):
        batch = next(batches)
        with autocast():
            loss = forward(model, batch)[0] / accumulation_steps
        (scaler.scale(loss) if scaler is not None else loss).backward()
        total = loss.detach() if total is None else total + loss.detach()
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    return total


def _count(targets: Any, outputs: Any) -> int:
    for value in (targets, outputs):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return len(value)
    return 1  # a batch of unknown size counts once: the loss is a mean over batches


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    forward: Forward,
    batches: Iterable,
    autocast: Callable[[], Any] = contextlib.nullcontext,
    device: str | torch.device = "cpu",
) -> tuple[float, float]:
    """Mean loss and accuracy over ``batches`` in eval mode (train mode restored after).

    The loss is weighted by the batch size where the targets (or outputs) tell it;
    the accuracy is NaN unless the outputs are class scores ``[N, C]`` and the targets
    integer labels (a ``batch_loss`` gives neither). Raises :class:`UserError` when
    ``batches`` is empty.
    """
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    count, classify = 0, True
    try:
        for batch in batches:
            with autocast():
                loss, outputs, targets = forward(model, batch)
            n = _count(targets, outputs)
            loss_sum += loss.double() * n
            count += n
            classify = (
                classify
                and isinstance(outputs, torch.Tensor)
                and isinstance(targets, torch.Tensor)
                and outputs.dim() == 2
                and not targets.is_floating_point()
            )
            if classify:
                correct += (outputs.argmax(1) == targets).sum()
    finally:
        model.train()
    if count == 0:
        raise UserError("val_loader yielded no batches.")
    loss_mean, acc = (torch.stack((loss_sum, correct)) / count).tolist()
    return loss_mean, acc if classify else math.nan


def eval_batches(loader: Iterable, limit: int | None, name: str = "val_loader") -> Iterator:
    """One pass over ``loader``, or exactly ``limit`` batches (re-iterating it when shorter)."""
    if limit is None:
        return iter(loader)
    # islice stops without drawing (and discarding) one batch too many
    return itertools.islice(cycle(loader, name), limit)


# ----------------------------------------------------------------------------- param groups
def keep_lr_ratios(optimizer: torch.optim.Optimizer) -> list[float]:
    """Set each param group's ``lr_scale`` to its LR over the largest group LR; return them.

    For discriminative LRs (say 1e-4 for a pretrained body, 1e-3 for a new head):
    :func:`superconv.schedules.apply` then writes ``lr_scale x`` the policy's LR into
    each group, so a range test or a cycle moves all groups together and keeps their
    ratios; the policy's LR is that of the fastest group. Groups that already have an
    ``lr_scale`` keep it.

    >>> a, b = torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)
    >>> opt = torch.optim.SGD([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-4}])
    >>> [round(s, 6) for s in keep_lr_ratios(opt)]
    [1.0, 0.1]
    """
    lrs = [float(g["lr"]) for g in optimizer.param_groups]
    top = max(lrs, default=0.0)
    if not (math.isfinite(top) and top > 0):
        raise UserError(
            f"keep_lr_ratios needs the param groups' LRs (> 0) to take ratios of, got {lrs}"
        )
    for group, lr in zip(optimizer.param_groups, lrs):
        group.setdefault("lr_scale", lr / top)
    return [float(g["lr_scale"]) for g in optimizer.param_groups]
