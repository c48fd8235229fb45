"""The one training loop: a policy sets the hyper-parameters per iteration.

Everything a paper experiment needs is in :class:`TrainConfig` (defaults are
the paper's, each cited); :func:`train` builds the model, the data, the
optimizer and the policy, and runs one short, explicit loop::

    for step in range(start, iterations):
        apply(policy, optimizer, step)        # the one writer of lr / momentum
        x, y = loader.batch(step)             # pure function of (seed, step)
        forward, loss, backward, optimizer.step()
        observers see (step, model, optimizer, metrics) and only read
        every log_every:   read the loss sums once (progress bar, NaN check)
        every eval_every:  evaluate, append a metrics row
        every checkpoint_every: atomic checkpoint

There is no host synchronisation per step: losses and correct counts are summed
on the device and read every ``log_every`` steps.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from superconv import checkpoint as ckpt
from superconv import step as steps
from superconv.collapse import Collapse, check_collapse, lr_peak_step
from superconv.config import (  # noqa: F401 - re-exported: the config lives without torch
    _MOMENTUM_OPTIMIZERS,
    FLOAT32_MAX,
    MAX_CROP_PAD,
    OPTIMIZERS,
    PRECISIONS,
    TrainConfig,
    _balanced_size,
    _check_type,
    _float32,
    _positive_int,
    _unknown,
    check_threads,
    resolve_device,
)
from superconv.errors import (
    CheckpointError,
    DivergenceError,
    Interrupted,
    UserError,
)
from superconv.records import RunDir, environment
from superconv.schedules import apply, build_policy, policy_to_dict
from superconv.timing import Pace, Progress

Observer = Callable[[int, torch.nn.Module, torch.optim.Optimizer, Mapping[str, Any]], None]


# ---------------------------------------------------------------------- building pieces
def make_optimizer(
    config: TrainConfig, params: Iterable[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """The optimizer of ``config``; its starting LR is overwritten by the policy at step 0."""
    params = list(params)
    wd = config.weight_decay
    # lr=0.0 here: schedules.apply writes the real value before the first step.
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=0.0, momentum=config.momentum, weight_decay=wd)
    if config.optimizer == "nesterov":
        return torch.optim.SGD(
            params, lr=0.0, momentum=config.momentum, weight_decay=wd, nesterov=True
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=0.0, betas=(config.momentum, 0.999), weight_decay=wd)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=0.0, betas=(config.momentum, 0.999), weight_decay=wd)
    if config.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=0.0, weight_decay=wd)
    if config.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=0.0, weight_decay=wd)
    if config.optimizer == "schedulefree_sgd":
        SGDScheduleFree = _extra("schedulefree", "SGDScheduleFree", "schedulefree")
        if not 0.0 < config.momentum < 1.0:
            raise UserError(
                f"schedulefree_sgd needs a momentum (its interpolation beta) in (0, 1), got "
                f"{config.momentum}; 0.9 is its default."
            )
        # Its own linear warm-up (warmup_steps): the README recommends one and gives no
        # length; SCHEDULEFREE_WARMUP of the run is this package's choice (docs/fair-comparison.md).
        warmup = max(1, round(SCHEDULEFREE_WARMUP * config.iterations))
        return SGDScheduleFree(
            params, lr=0.0, momentum=config.momentum, weight_decay=wd, warmup_steps=warmup
        )
    if config.optimizer == "prodigy":
        Prodigy = _extra("prodigyopt", "Prodigy", "prodigy")
        # Weight decay as the SGD baselines': an L2 penalty added to the gradient
        # (decouple=False; Prodigy's own default is AdamW-style decoupled decay).
        # lr=1.0, the authors' value (Prodigy refuses 0); the policy writes it each step.
        return Prodigy(
            params, lr=1.0, betas=(config.momentum, 0.999), weight_decay=wd, decouple=False
        )
    raise UserError(_unknown("optimizer", config.optimizer, OPTIMIZERS))


# schedulefree_sgd's warm-up, a share of the run (its warmup_steps): see make_optimizer.
SCHEDULEFREE_WARMUP = 0.05
# Batches of training data over which a schedule-free model's batch-norm statistics are
# recomputed at its evaluation point: the schedulefree README's caveat uses 50.
BN_RECOMPUTE_BATCHES = 50


def _extra(module: str, name: str, extra: str) -> Any:
    """``module.name`` of an optional extra, imported on first use; a UserError naming the
    extra where it is not installed."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        raise UserError(
            f"optimizer {name} needs the {module} package: pip install 'superconv[{extra}]'."
        ) from None


def is_schedule_free(optimizer: Any) -> bool:
    """True for optimizers that train at one point and evaluate at another (``train()`` /
    ``eval()``: the schedulefree package's)."""
    return callable(getattr(optimizer, "eval", None)) and callable(
        getattr(optimizer, "train", None)
    )


def make_policy(config: TrainConfig):
    """The policy of ``config`` (a mapping hyper-parameter -> schedule)."""
    _check_params_float32(config.policy_params)
    policy = build_policy(config.policy, config.iterations, **dict(config.policy_params))
    _check_values_float32(policy, config.iterations)
    if "momentum" in policy and config.optimizer == "schedulefree_sgd":
        raise UserError(
            f"policy {config.policy!r} cycles momentum, but schedulefree_sgd's momentum is its "
            "interpolation beta and must stay fixed (its train/eval points are computed from "
            "it); set the policy's momentum to none (policy_params momentum = false)."
        )
    if "momentum" in policy and config.optimizer not in _MOMENTUM_OPTIMIZERS:
        raise UserError(
            f"policy {config.policy!r} cycles momentum but optimizer {config.optimizer!r} has "
            "none; set the policy's momentum to none (policy_params momentum = false)."
        )
    return policy


def _check_params_float32(params: Mapping[str, Any]) -> None:
    """Refuse policy parameters (numbers, or lists of them) that overflow float32."""
    for key, value in params.items():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            _float32(f"policy parameter {key}", item)


def _check_values_float32(policy: Mapping[str, Any], iterations: int) -> None:
    """Refuse a policy whose values overflow float32 anywhere on a grid of the run's steps
    (a pure function of the step: cheap to sample before anything is written)."""
    steps = sorted({0, iterations - 1, *range(0, iterations, max(1, iterations // 256))})
    for name, schedule in policy.items():
        for step in steps:
            value = float(schedule(step))
            if not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
                raise UserError(
                    f"the policy's {name} at iteration {step} is {value:g}, which is not a "
                    f"finite float32 (largest {FLOAT32_MAX:.4g}); choose other policy parameters."
                )


@dataclass
class Pieces:
    """What :func:`build` makes from a config: everything the loop touches."""

    config: TrainConfig
    device: torch.device
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    policy: Mapping[str, Any]
    loader: Any
    eval_loaders: dict[str, Any]
    autocast_dtype: torch.dtype | None
    num_train: int
    world: Any = None  # superconv.distributed.World
    module: torch.nn.Module | None = None  # the model without its DDP wrapper
    num_classes: int = 10  # chance level for collapse detection
    autocast: Callable[[], Any] | None = None  # the autocast context factory (superconv.step)
    scaler: Any = None  # fp16's torch.amp.GradScaler (None: no scaling)

    def __post_init__(self) -> None:
        if self.autocast is None:  # built once here: a step only calls it
            self.autocast = steps.autocast(self.device, self.autocast_dtype)
        if self.config.precision == "fp16" and self.scaler is None:
            self.scaler = steps.amp("fp16", self.device)[1]


def build(config: TrainConfig) -> Pieces:
    """Build model, data, optimizer and policy from ``config`` (validated first)."""
    from superconv import distributed
    from superconv.data import load_dataset

    config.validate()
    per_rank_batch = _per_rank_batch(config, distributed.world_from_env())
    world, device = distributed.setup(resolve_device(config.device))
    _set_torch_modes(config)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    autocast_dtype = _autocast_dtype(config, device)
    if config.dataset.startswith("folder:"):
        loader, eval_loaders, num_train, classes = _folder_loaders(config, world, device)
        model, module, optimizer, policy = _model_and_optimizer(
            config, world, device, len(classes), 3, loader.image_size, torch.float32,
            memory_format,
        )  # fmt: skip
        return Pieces(config, device, model, optimizer, policy, loader, eval_loaders,
                      autocast_dtype, num_train, world=world, module=module,
                      num_classes=len(classes))  # fmt: skip
    data = load_dataset(config.dataset, config.data_dir)
    train_idx, val_idx = _split_indices(config, data)
    dtype = torch.float64 if config.precision == "fp64" else torch.float32
    loader, eval_loaders = _tensor_loaders(
        config, data, train_idx, val_idx, per_rank_batch, world, device, dtype
    )
    model, module, optimizer, policy = _model_and_optimizer(
        config, world, device, len(data.classes), int(data.train_x.shape[1]),
        int(data.train_x.shape[-1]), dtype, memory_format,
    )  # fmt: skip
    return Pieces(
        config,
        device,
        model,
        optimizer,
        policy,
        loader,
        eval_loaders,
        autocast_dtype,
        len(train_idx),
        world=world,
        module=module,
        num_classes=len(data.classes),
    )


def _per_rank_batch(config: TrainConfig, world: Any) -> int:
    """Each process's share of the global batch; refuse one that does not divide evenly
    (over the processes, or into ghost batches)."""
    if config.batch_size % world.world_size:
        raise UserError(
            f"batch_size ({config.batch_size}) is the global batch and must divide evenly over "
            f"{world.world_size} processes; choose a multiple of {world.world_size}."
        )
    per_rank_batch = config.batch_size // world.world_size
    if config.ghost_batch is not None and per_rank_batch % config.ghost_batch:
        raise UserError(
            f"ghost_batch ({config.ghost_batch}) must divide the per-process batch "
            f"({per_rank_batch} = {config.batch_size} / {world.world_size} processes)."
        )
    return per_rank_batch


def _set_torch_modes(config: TrainConfig) -> None:
    """Deterministic algorithms and the thread count, where the config asks for them."""
    if config.deterministic:
        # Process-wide by nature; asked for explicitly (tests, bit-identical resume checks).
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    if config.threads is not None:
        torch.set_num_threads(config.threads)


def _autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    if config.precision == "fp16":
        return torch.float16
    return None


def _split_indices(config: TrainConfig, data: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The training images' and validation images' indices into the training split
    (``val_size`` held out, then the ``train_subset``), checked against the batch."""
    from superconv.data import balanced_subset, train_val_split

    train_idx = torch.arange(len(data.train_y))
    val_idx = None
    if config.val_size:
        if config.val_size >= len(train_idx):
            raise UserError(
                f"val_size ({config.val_size}) must be smaller than the training set "
                f"({len(train_idx)} images)."
            )
        try:
            train_idx, val_idx = train_val_split(data.train_y, config.val_size, config.split_seed)
        except ValueError as exc:  # a class with fewer images than its share
            raise UserError(
                f"val_size ({config.val_size:,}): {str(exc).removeprefix('balanced_subset: ')}."
            ) from None
    if config.train_subset is not None:
        if config.train_subset > len(train_idx):
            raise UserError(
                f"train_subset ({config.train_subset}) is larger than the training images "
                f"available ({len(train_idx)})."
            )
        try:
            sub = balanced_subset(data.train_y[train_idx], config.train_subset, config.split_seed)
        except ValueError as exc:  # too few images of a class once the validation set is out
            raise UserError(
                f"train_subset ({config.train_subset:,}): "
                f"{str(exc).removeprefix('balanced_subset: ')}."
            ) from None
        train_idx = train_idx[sub]
    if config.batch_size > len(train_idx):
        raise UserError(
            f"batch_size ({config.batch_size}) is larger than the training data "
            f"({len(train_idx)} images); use a smaller batch."
        )
    return train_idx, val_idx


def _tensor_loaders(
    config: TrainConfig,
    data: Any,
    train_idx: torch.Tensor,
    val_idx: torch.Tensor | None,
    per_rank_batch: int,
    world: Any,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Any, dict[str, Any]]:
    """The training loader (this process's shard) and the evaluation loaders (``val``
    where images are held out, then ``test``) over an in-memory data set."""
    from superconv.data import DeviceLoader

    mean, std = data.mean, data.std
    if config.normalize == "unit":
        mean, std = tuple(0.0 for _ in mean), tuple(1.0 for _ in std)
    common = dict(
        mean=mean, std=std, device=device, channels_last=config.channels_last, dtype=dtype
    )
    loader = DeviceLoader(
        data.train_x[train_idx],
        data.train_y[train_idx],
        per_rank_batch,
        train=True,
        flip=config.flip,
        crop_pad=config.crop_pad,
        seed=config.seed,
        rank=world.rank,
        world_size=world.world_size,
        **common,
    )
    eval_loaders = {}
    if val_idx is not None:
        eval_loaders["val"] = DeviceLoader(
            data.train_x[val_idx],
            data.train_y[val_idx],
            config.eval_batch_size,
            train=False,
            **common,
        )
    eval_loaders["test"] = DeviceLoader(
        data.test_x, data.test_y, config.eval_batch_size, train=False, **common
    )
    return loader, eval_loaders


def _model_and_optimizer(
    config: TrainConfig,
    world: Any,
    device: torch.device,
    num_classes: int,
    in_channels: int,
    image_size: int,
    dtype: torch.dtype,
    memory_format: torch.memory_format,
) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer, Mapping[str, Any]]:
    """The model (DDP-wrapped under torchrun), the bare module, its optimizer and policy."""
    from superconv.models import build_model

    # Seed before building the model: its initial weights depend only on the seed.
    torch.manual_seed(config.seed)
    model = build_model(
        config.model,
        num_classes=num_classes,
        in_channels=in_channels,
        bn_maf=config.bn_maf,
        bn_mode=config.bn_mode,
        ghost_batch=config.ghost_batch,
        dropout=config.dropout,
        image_size=image_size,
        sync_bn=config.sync_bn,
    ).to(device=device, dtype=dtype, memory_format=memory_format)
    module = model
    if world.distributed:
        # Per-rank BN statistics are the paper's setting (8 GPUs, unsynchronised):
        # buffers are not broadcast from rank 0 but averaged before evaluation.
        with warnings.catch_warnings():
            # Newer torch renames broadcast_buffers; the old name works across torch >= 2.3.
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.nn.parallel.DistributedDataParallel(
                module,
                device_ids=[device.index] if device.type == "cuda" else None,
                broadcast_buffers=False,  # rank-local BN buffers, averaged before eval
            )
    optimizer = make_optimizer(config, module.parameters())
    policy = make_policy(config)
    return model, module, optimizer, policy


def _folder_loaders(
    config: TrainConfig, world: Any, device: torch.device
) -> tuple[Any, dict[str, Any], int, tuple[str, ...]]:
    """Loaders of a ``folder:PATH`` data set: images streamed and decoded by DataLoader
    workers (:class:`superconv.data.folder.FolderLoader`), random-resized crops and flips
    for training, centre crops for evaluation. ``val_size`` images (class-balanced) are
    held out of the training images; ``PATH/val`` (or ``PATH/test``), if there is one,
    is the test set."""
    import os

    from superconv.data import train_val_split
    from superconv.data.folder import IMAGENET_MEAN, IMAGENET_STD, FolderLoader, folder_splits
    from superconv.data.folder import subset as folder_subset

    if world.distributed:
        raise UserError(
            "folder:PATH data sets run in one process for now (their loader does not shard "
            "the images over torchrun's processes); run without torchrun."
        )
    if config.precision == "fp64":
        raise UserError("precision fp64 is for the built-in data sets; use fp32 or bf16.")
    if config.train_subset is not None:
        raise UserError("train_subset is for the built-in data sets; point folder: at a subset.")
    train_folder, test_folder = folder_splits(config.dataset)
    val_folder = None
    if config.val_size:
        labels = torch.tensor([label for _, label in train_folder.samples])
        if config.val_size >= len(labels):
            raise UserError(
                f"val_size ({config.val_size}) must be smaller than the image folder "
                f"({len(labels)} images)."
            )
        try:
            train_idx, val_idx = train_val_split(labels, config.val_size, config.split_seed)
        except ValueError as exc:  # not a multiple of the classes, or a class too small
            raise UserError(
                f"val_size ({config.val_size:,}): {str(exc).removeprefix('balanced_subset: ')}."
            ) from None
        train_folder, val_folder = (
            folder_subset(train_folder, train_idx.tolist()),
            folder_subset(train_folder, val_idx.tolist()),
        )
    if config.batch_size > len(train_folder):
        raise UserError(
            f"batch_size ({config.batch_size}) is larger than the training images "
            f"({len(train_folder)}); use a smaller batch."
        )
    unit = config.normalize == "unit"
    common = dict(
        image_size=config.image_size or 224,
        # Pillow decoding is the bottleneck: a few worker processes (not more than the cores)
        workers=min(4, os.cpu_count() or 1),
        mean=(0.0, 0.0, 0.0) if unit else IMAGENET_MEAN,
        std=(1.0, 1.0, 1.0) if unit else IMAGENET_STD,
        device=device,
        channels_last=config.channels_last,
    )
    loader = FolderLoader(train_folder, config.batch_size, train=True, seed=config.seed, **common)
    eval_loaders = {}
    for name, folder in (("val", val_folder), ("test", test_folder)):
        if folder is not None:
            eval_loaders[name] = FolderLoader(folder, config.eval_batch_size, train=False, **common)
    return loader, eval_loaders, len(train_folder), train_folder.classes


# ---------------------------------------------------------------------- evaluation
def _full(logits: torch.Tensor) -> torch.Tensor:
    """Logits in at least float32 for the loss (bf16 autocast output is upcast)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return steps.autocast(device, dtype)()


def _cross_entropy(model, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loop's forward (a :data:`superconv.step.Forward`): cross-entropy on the logits."""
    x, y = batch
    logits = model(x)
    return F.cross_entropy(_full(logits), y), logits, y


# On the CPU an evaluation batch runs through the model in chunks of this many images:
# at 256 a pass over 2,000 CIFAR images took 0.58x (ResNet-20) and 0.68x (ResNet-56) the
# time of whole 1,000-image batches on one thread, the activations staying in cache
# (benchmarks/bench_train.py, section "evaluation"). Each image's outputs are
# bit-identical (BN in eval mode works per image); only the loss sum's order changes.
CPU_EVAL_CHUNK = 256


@torch.no_grad()
def evaluate(
    model: Callable[[torch.Tensor], torch.Tensor],
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device,
    autocast_dtype: torch.dtype | None = None,
    chunk: int | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy (%) of ``model`` over ``loader`` (eval mode).

    ``chunk``: images per forward pass within a batch (None: :data:`CPU_EVAL_CHUNK` on
    the CPU, whole batches elsewhere; 0: whole batches)."""
    if chunk is None:
        chunk = CPU_EVAL_CHUNK if torch.device(device).type == "cpu" else 0
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module.training if module is not None else False
    if module is not None:
        module.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    count = 0
    try:
        for batch_x, batch_y in loader:
            pieces = zip(batch_x.split(chunk), batch_y.split(chunk)) if chunk else [(batch_x, batch_y)]
            for x, y in pieces:
                with _autocast(device, autocast_dtype):
                    logits = model(x)
                loss_sum += F.cross_entropy(_full(logits), y, reduction="sum").double()
                correct += (logits.argmax(1) == y).sum()
                count += len(y)
    finally:
        if module is not None:
            module.train(was_training)
    if count == 0:
        return float("nan"), float("nan")
    return loss_sum.item() / count, 100.0 * correct.item() / count


# ---------------------------------------------------------------------- evaluation point
@contextlib.contextmanager
def evaluation_point(pieces: Pieces, step: int) -> Iterator[dict[str, torch.Tensor] | None]:
    """Where the model is evaluated and checkpointed at iteration ``step`` (``with`` block).

    For most optimizers that is where it trains: nothing happens, at no cost, and
    the block gets None. A schedule-free optimizer (:func:`is_schedule_free`)
    trains at one point (y) and is evaluated at another (its average x), so, as its
    README asks: its training state (the module's parameters and buffers at y) is
    kept, ``optimizer.eval()`` moves the parameters to x, and batch-norm statistics
    are recomputed there (:func:`recompute_bn`); the block gets the kept state (a
    checkpoint stores it beside the evaluation point). On the way out
    ``optimizer.train()`` and the kept state put training back exactly where it was:
    evaluating and checkpointing change nothing in the run, bit for bit.
    """
    optimizer, module = pieces.optimizer, pieces.module or pieces.model
    if not is_schedule_free(optimizer):
        yield None
        return
    kept = {k: v.detach().clone() for k, v in module.state_dict().items()}
    optimizer.eval()
    recompute_bn(pieces, step)
    try:
        yield kept
    finally:
        training_point(optimizer, module, kept)


def training_point(
    optimizer: Any, module: torch.nn.Module, kept: Mapping[str, torch.Tensor] | None = None
) -> None:
    """Put a schedule-free optimizer in train mode (before the first step, after a
    checkpoint is loaded, after an evaluation); with ``kept``, the module exactly at that
    training state (moving y -> x -> y by arithmetic would round). Other optimizers: nothing."""
    if not is_schedule_free(optimizer):
        return
    optimizer.train()
    if kept is not None:
        module.load_state_dict(kept)


@torch.no_grad()
def recompute_bn(pieces: Pieces, step: int, batches: int | None = None) -> None:
    """Batch-norm statistics of ``pieces.module`` recomputed at its current weights.

    Running statistics are reset and replaced by the plain average of the batch
    statistics of ``batches`` (default :data:`BN_RECOMPUTE_BATCHES`) training batches
    in train mode (Caffe's debiased average with MAF 1, or momentum 1/k): the
    schedulefree README's caveat, which forwards ~50 training batches after
    ``optimizer.eval()``. The batches are the loader's batches of the iterations just
    before ``step`` (``loader.batch`` is a pure function of the seed and iteration),
    so the training stream is not advanced; the random number generators are
    restored afterwards (dropout draws from them), so the run's draws are unchanged.
    """
    from superconv.models.bn import bn_modules

    module = pieces.module or pieces.model
    layers = bn_modules(module)
    if not layers:
        return
    count = BN_RECOMPUTE_BATCHES if batches is None else batches
    first = max(0, step - count)
    rng = _rng_state(pieces.device)
    momenta = [layer.momentum for layer in layers]
    was_training = module.training
    try:
        module.train()
        for layer in layers:
            layer.reset_running_stats()
        for k, iteration in enumerate(range(first, first + count), start=1):
            for layer in layers:  # the k-th batch weighs 1/k: a plain average
                layer.momentum = 0.0 if getattr(layer, "debiased", False) else 1.0 / k
            x, _ = pieces.loader.batch(iteration)
            with pieces.autocast():
                module(x)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        module.train(was_training)
        _set_rng_state(rng, pieces.device)


# ---------------------------------------------------------------------- the loop
@dataclass
class RunResult:
    """What :func:`train` returns: the run folder, its metrics rows and summary."""

    run_dir: Path
    metrics: list[dict[str, Any]]
    summary: dict[str, Any]


class _StopFlag:
    """Turns SIGINT (Ctrl-C) and SIGTERM (schedulers, ``kill``) into a flag the loop
    checks between steps.

    An interrupt in the middle of ``optimizer.step()`` would leave half-updated
    weights; deferring it to the step boundary lets the loop save a consistent
    checkpoint first. ``signum`` is the first signal received.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.raised = False
        self.signum: int = signal.SIGINT
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        for signum in self.SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave the signals alone
                break
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.raised:  # a second signal: stop at once
            raise Interrupted("interrupted again: stopped at once", signum=signum)
        self.raised = True
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            if previous is not None:
                signal.signal(signum, previous)
        self._previous = {}


def _compiled(model: torch.nn.Module, enabled: bool) -> Callable[[torch.Tensor], torch.Tensor]:
    if not enabled:
        return model
    try:
        return torch.compile(model)
    except Exception as exc:  # noqa: BLE001 - any failure to build means: run eager
        warnings.warn(f"torch.compile failed ({exc}); running eager.", stacklevel=2)
        return model


def _new_sums(device: torch.device) -> dict[str, torch.Tensor]:
    """Sums over the current evaluation interval, kept on the device (no per-step sync)."""
    return {
        "loss": torch.zeros((), device=device, dtype=torch.float64),
        "correct": torch.zeros((), device=device, dtype=torch.int64),
        "count": torch.zeros((), device=device, dtype=torch.int64),
        "steps": torch.zeros((), device=device, dtype=torch.int64),
        "bad_step": torch.full((), -1, device=device, dtype=torch.int64),
    }


def _add_step(
    sums: dict[str, torch.Tensor],
    loss: torch.Tensor,
    logits: torch.Tensor,
    y: torch.Tensor,
    step: int,
) -> None:
    """Add one step's detached ``loss`` and accuracy to ``sums``; remember the first
    step whose loss is not finite. On-device ops only: no host sync."""
    sums["loss"] += loss.double()
    sums["correct"] += (logits.detach().argmax(1) == y).sum()
    sums["count"] += len(y)
    sums["steps"] += 1
    sums["bad_step"] = torch.where(
        (sums["bad_step"] < 0) & ~torch.isfinite(loss),
        torch.full_like(sums["bad_step"], step),
        sums["bad_step"],
    )


def _forward_backward(forward, pieces: Pieces, x: torch.Tensor, y: torch.Tensor):
    """One optimizer step on the batch ``(x, y)``: :func:`superconv.step.train_step` (the
    one step the range test and fit take too) over its ``accumulation_steps`` equal
    micro-batches, through fp16's scaler if any. Returns the batch's logits and mean loss.

    With one micro-batch and no scaler this is forward, backward, ``optimizer.step()``
    exactly as before accumulation existed (the loss divided by 1): runs stay identical.
    """
    k = pieces.config.accumulation_steps or 1
    logits: list[torch.Tensor] = []

    def cross_entropy(model, batch):
        out = _cross_entropy(model, batch)
        logits.append(out[1])
        return out

    micro = zip(x.chunk(k), y.chunk(k)) if k > 1 else iter([(x, y)])
    loss = steps.train_step(
        forward, pieces.optimizer, cross_entropy, micro, k, pieces.autocast, pieces.scaler
    )
    return (logits[0] if k == 1 else torch.cat(logits)), loss


def _first_compiled_step(forward, pieces: Pieces, x: torch.Tensor, y: torch.Tensor):
    """The first step through the compiled model; on a build failure, warn once and go eager.

    Buffers (BN statistics) and RNG states are restored before the eager retry,
    so the fallback run is the run eager mode would have made.
    """
    buffers = [b.detach().clone() for b in pieces.model.buffers()]
    rng = _rng_state(pieces.device)
    try:
        return (*_forward_backward(forward, pieces, x, y), forward)
    except Exception as exc:  # noqa: BLE001 - any compile failure surfaces here
        with torch.no_grad():
            for buf, saved in zip(pieces.model.buffers(), buffers):
                buf.copy_(saved)
        _set_rng_state(rng, pieces.device)
        logits, loss = _forward_backward(pieces.model, pieces, x, y)  # a real bug raises here
        inner = getattr(exc, "inner_exception", None) or exc
        # stacklevel: the line in train() that runs the loop (_Loop._train_step, _steps,
        # run_to_end and _train lie between)
        warnings.warn(
            f"torch.compile failed ({type(inner).__name__}: {inner}); running eager.", stacklevel=6
        )
        return logits, loss, pieces.model


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    observers: Sequence[Observer] = (),
    resume: bool = False,
    progress: bool = True,
    tensorboard: str | Path | None = None,
    logger: Any = None,
) -> RunResult:
    """Train one run of ``config`` into ``run_dir``; resume it if ``resume``.

    ``tensorboard``: a folder for TensorBoard event files (``pip install
    'superconv[tensorboard]'``), beside ``metrics.csv`` (which stays the record):
    the loss, LR and momentum every ``config.log_every`` steps (``train/...``) and
    every metrics row (``metrics/...``). Or ``logger``: an open
    :class:`~superconv.integrations.tensorboard.TensorBoardLogger` (yours to close).
    Under ``torchrun``, rank 0 alone logs.

    Under ``torchrun`` every process calls this; rank 0 alone writes files and
    shows progress, metrics are all-reduced, and the global batch is
    ``config.batch_size`` split evenly over the processes.

    Raises :class:`~superconv.errors.DivergenceError` (after writing the metrics
    so far and keeping the last good checkpoint) when the loss becomes NaN/inf, or
    when the run collapses with finite numbers (:func:`superconv.collapse.check_collapse`,
    checked at every evaluation before its checkpoint),
    and ``KeyboardInterrupt`` after saving a checkpoint on SIGINT.
    """
    from superconv import distributed

    kwargs = dict(observers=observers, resume=resume, progress=progress)
    if (tensorboard is None and logger is None) or not distributed.world_from_env().is_main:
        return _train(config, run_dir, board=None, **kwargs)
    from superconv.integrations.tensorboard import logging_to

    with logging_to(tensorboard, logger, every=config.log_every) as board:
        return _train(config, run_dir, board=board, **kwargs)


def _train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    observers: Sequence[Observer],
    resume: bool,
    progress: bool,
    board: Any,
) -> RunResult:
    pieces = build(config)
    checkpoint_path = RunDir(run_dir).checkpoint_path
    state = None
    if resume and checkpoint_path.exists():
        state = _read_checkpoint(checkpoint_path, pieces)
    loop = _Loop(config, run_dir, pieces, observers, board)
    loop.restore(state)
    loop.run = _open_run_dir(run_dir, config, pieces, resume)
    try:  # the run folder stays locked until the run ends, however it ends
        return loop.run_to_end(state, progress)
    finally:
        if loop.run is not None:
            loop.run.close()


def _read_checkpoint(path: Path, pieces: Pieces) -> dict[str, Any]:
    """Read and check the checkpoint before the run folder is touched: a corrupt or
    foreign one is refused with every file of the run left as it was."""
    config = pieces.config
    state = ckpt.load(path, map_location=pieces.device)
    _check_state(path, state, _new_sums(pieces.device), config.iterations)
    ckpt.check_model_state(path, pieces.module, state["model"])
    ckpt.check_config(path, state, config.to_dict())
    return state


def _open_run_dir(
    run_dir: str | Path, config: TrainConfig, pieces: Pieces, resume: bool
) -> RunDir | None:
    """Rank 0 opens (and locks) the run folder; a refusal is raised on every rank."""

    config_record = {**config.to_dict(), "policy_built": policy_to_dict(pieces.policy)}
    return open_on_main(run_dir, config_record, pieces, resume=resume, lock=True)


def open_on_main(
    out: str | Path, record: dict[str, Any], pieces: Pieces, **open_kwargs: Any
) -> RunDir | None:
    """Under torchrun, rank 0 alone writes: it opens the run folder (``RunDir.open`` with
    ``open_kwargs``), the others get None; a refusal is raised on every rank."""
    from superconv import distributed

    run, failure = None, None
    if pieces.world.is_main:
        try:
            run = RunDir.open(out, record, environment(pieces.device, pieces.config.seed),
                              **open_kwargs)  # fmt: skip
        except UserError as exc:
            failure = exc
    failure = distributed.broadcast_object(failure)
    if failure is not None:
        raise failure
    return run


class _Loop:
    """One run of :func:`train`: its state (the metrics rows, the device-side loss
    sums, the wall time) and the steps of the loop, each a method.

    ``run`` is the open run folder on rank 0, None on the other ranks.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        pieces: Pieces,
        observers: Sequence[Observer],
        board: Any,
    ) -> None:
        from superconv.estimator import LREstimator

        self.config, self.run_dir, self.pieces, self.board = config, run_dir, pieces, board
        self.checkpoint_path = RunDir(run_dir).checkpoint_path
        self.user_observers = list(observers)
        self.observers = list(observers)
        self.estimator = None
        if config.estimator_k is not None and pieces.world.is_main:
            # Weights are identical on every rank: the eq. 8 estimate is computed once.
            self.estimator = LREstimator(k=config.estimator_k)
            self.observers.append(self.estimator)
        if board is not None:  # not one of the caller's observers: no state in the checkpoint
            self.observers.append(board)
        self.sums = _new_sums(pieces.device)
        self.rows: list[dict[str, Any]] = []
        self.start, self.elapsed = 0, 0.0
        self.run: RunDir | None = None
        self.forward: Callable[[torch.Tensor], torch.Tensor] = pieces.model
        self.compile_checked = False
        self.t0 = 0.0  # perf_counter at the start of the current timed stretch

    # ------------------------------------------------------------------ set-up
    def restore(self, state: Mapping[str, Any] | None) -> None:
        """Load a checked checkpoint ``state`` (every entry before the run folder is
        touched: a partial or malformed one is refused with every file of the run as it
        was); or, for a fresh run, seed the process's generator."""
        pieces, world = self.pieces, self.pieces.world
        if state is None:
            torch.manual_seed(self.config.seed + world.rank)  # dropout etc. draw from here
            return
        try:
            pieces.module.load_state_dict(state["model"])
            pieces.optimizer.load_state_dict(state["optimizer"])
            for key in self.sums:
                self.sums[key].copy_(state["sums"][key])
            # The run's own estimator by name; a caller's observers by position.
            if self.estimator is not None and state.get("estimator") is not None:
                self.estimator.load_state_dict(state["estimator"])
            for obs, obs_state in zip(self.user_observers, state.get("observers") or []):
                if obs_state is not None and hasattr(obs, "load_state_dict"):
                    obs.load_state_dict(obs_state)
            if pieces.scaler is not None and "scaler" in state:
                pieces.scaler.load_state_dict(state["scaler"])
            rng = state["rng"]
            if len(rng) == world.world_size:
                _set_rng_state(rng[world.rank], pieces.device)
            else:  # resumed with another world size: a fresh, still deterministic stream
                torch.manual_seed(self.config.seed + world.rank + 1_000_003 * int(state["step"]))
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise CheckpointError(
                f"{self.checkpoint_path} holds a malformed run state ({type(exc).__name__}: "
                f"{ckpt._first_sentence(exc)}). It was damaged or not written by this version; "
                "start the run again in a new folder."
            ) from None
        self.start, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.rows = list(state["metrics"])

    def run_to_end(self, state: Mapping[str, Any] | None, progress: bool) -> RunResult:
        """The loop from ``self.start`` to the last iteration, then the summary."""
        pieces, config = self.pieces, self.config
        # The loop takes SIGINT/SIGTERM over from here: a signal during the set-up below
        # stops the run after its first step, with a checkpoint, like one in the loop.
        with _StopFlag() as stop:
            if self.run is not None:
                self.run.write_metrics(self.rows)  # drops rows past a killed run's checkpoint
            self.forward = _compiled(pieces.model, config.compile)
            self.compile_checked = False
            pieces.module.train()
            policy = pieces.policy
            warmup = lr_peak_step(policy["lr"], config.iterations) if "lr" in policy else 0
            # a schedule-free optimizer trains at its own point (resumed exactly where it was)
            point = state.get("train_point") if state else None
            training_point(pieces.optimizer, pieces.module, point)
            # The time left and the run's seconds per step, from the steps after the first
            # few (timing.WARMUP_STEPS), read where the loss is synced from the device.
            pace = Pace(config.iterations, self.start)
            bar = _progress(progress and pieces.world.is_main, pace)
            try:
                self._steps(pace, bar, warmup, stop)
            finally:
                if bar is not None:
                    bar.close()
        return self._finish(pace)

    # ------------------------------------------------------------------ the loop
    def _steps(self, pace: Pace, bar: Progress | None, warmup: int, stop: _StopFlag) -> None:
        """Every iteration a training step; every log_every the sums read (and the NaN
        check); every eval_every a metrics row (and its checkpoint); a signal (``stop``)
        stops the loop at the step boundary with a checkpoint."""
        config, world = self.config, self.pieces.world
        iterations = config.iterations
        self.t0 = time.perf_counter()
        for step in range(self.start, iterations):
            values = self._train_step(step)
            done = step + 1
            at_eval = done % config.eval_every == 0 or done == iterations
            at_log = done % config.log_every == 0 or at_eval
            # One process stops at once; several agree on it at a log step.
            want_stop = stop.raised if not world.distributed else False
            if at_log:
                totals = self._log(done, values, pace, bar)
                if world.distributed:
                    want_stop = self._any_stopped(stop)
            if at_eval:
                self._evaluate(step, done, values, totals, bar, warmup)
            if want_stop:
                self._interrupt(done, stop.signum)

    def _train_step(self, step: int) -> dict[str, float]:
        """One iteration: the policy's values, forward, backward, the optimizer step;
        the loss summed on the device and shown to the observers."""
        pieces = self.pieces
        values = apply(pieces.policy, pieces.optimizer, step)
        x, y = pieces.loader.batch(step)
        if self.forward is not pieces.model and not self.compile_checked:
            # torch.compile builds lazily: a failure shows at the first call.
            self.compile_checked = True
            logits, loss, self.forward = _first_compiled_step(self.forward, pieces, x, y)
        else:
            logits, loss = _forward_backward(self.forward, pieces, x, y)

        detached = loss.detach()
        _add_step(self.sums, detached, logits, y, step)
        for obs in self.observers:
            obs(step, pieces.module, pieces.optimizer, {"loss": detached, **values})
        return values

    def _log(
        self, done: int, values: Mapping[str, float], pace: Pace, bar: Progress | None
    ) -> dict[str, float]:
        """A log step: read the interval's sums (raise on a NaN/inf loss), show them."""
        totals = self._reduced()
        pace.tick(done)
        if math.isfinite(totals["bad_step"]):
            self.elapsed += time.perf_counter() - self.t0
            raise self._diverged(int(totals["bad_step"]))
        if bar is not None:
            bar.show(
                done,
                loss=f"{totals['loss'] / max(totals['steps'], 1):.3f}",
                acc=f"{100 * totals['correct'] / max(totals['count'], 1):.1f}",
                lr=f"{values.get('lr', float('nan')):.3g}",
            )
        return totals

    def _any_stopped(self, stop: _StopFlag) -> bool:
        """Whether any process received a signal (every process agrees)."""
        from superconv import distributed

        flag = torch.tensor([float(stop.raised)], device=self.pieces.device)
        return bool(distributed.all_reduce_(flag, op="max").item())

    def _evaluate(
        self,
        step: int,
        done: int,
        values: Mapping[str, float],
        totals: Mapping[str, float],
        bar: Progress | None,
        warmup: int,
    ) -> None:
        """An evaluation step: a metrics row, the collapse check, the records and, at
        its interval, a checkpoint."""
        from superconv import distributed

        config, pieces, rows = self.config, self.pieces, self.rows
        self.elapsed += time.perf_counter() - self.t0
        with evaluation_point(pieces, done) as train_point:
            distributed.average_buffers_(pieces.module)
            rows.append(_metrics_row(pieces, step, values, totals, self.elapsed))
            for key in ("loss", "correct", "count", "steps"):
                self.sums[key].zero_()
            # Checked before this evaluation's checkpoint: the one kept
            # is from before the blow-up.
            collapse = check_collapse(
                rows,
                iterations=config.iterations,
                num_classes=pieces.num_classes,
                warmup_steps=warmup,
            )
            if collapse is not None:
                raise self._collapsed(collapse)
            if self.run is not None:
                self.run.write_metrics(rows)
            if self.board is not None:
                self.board.log_row(rows[-1]["iteration"], rows[-1], prefix="metrics")
            if bar is not None:
                bar.show(done, test_acc=f"{rows[-1]['test_acc']:.2f}")
            if done % config.checkpoint_every == 0 or done == config.iterations:
                self._save_checkpoint(done, train_point)
        self.t0 = time.perf_counter()

    def _interrupt(self, done: int, signum: int) -> None:
        """A signal arrived: save a checkpoint at this step, then raise Interrupted."""
        from superconv import distributed

        self.elapsed += time.perf_counter() - self.t0
        with evaluation_point(self.pieces, done) as train_point:
            distributed.average_buffers_(self.pieces.module)
            self._save_checkpoint(done, train_point)
        raise Interrupted(
            f"interrupted at iteration {done}; checkpoint saved in {self.checkpoint_path}. "
            f"Resume with --resume {RunDir(self.run_dir).path}.",
            signum=signum,
        )

    def _finish(self, pace: Pace) -> RunResult:
        config, pieces = self.config, self.pieces
        summary = _summary(
            config, self.rows, self.elapsed, status="finished", step=config.iterations
        )
        summary["seconds_per_step"] = pace.seconds_per_step  # after the warm-up; None if short
        summary["train_images"] = pieces.num_train
        summary["world_size"] = pieces.world.world_size
        summary["num_classes"] = pieces.num_classes  # chance, for collapse.ended_at_chance
        if self.run is not None:
            self.run.write_summary(summary)
            _write_curves(self.run, self.rows, config, "finished", pieces.policy)
        return RunResult(RunDir(self.run_dir).path, self.rows, summary)

    # ------------------------------------------------------------------ helpers
    def _reduced(self) -> dict[str, float]:
        """The interval's sums over all ranks (one small all-reduce; a host sync)."""
        from superconv import distributed

        sums = self.sums
        packed = torch.stack([sums[k].double() for k in ("loss", "correct", "count", "steps")])
        packed = distributed.all_reduce_(packed).tolist()
        bad = sums["bad_step"].double()
        bad = torch.where(bad < 0, torch.full_like(bad, math.inf), bad).reshape(1)
        first_bad = distributed.all_reduce_(bad, op="min").item()
        return dict(zip(("loss", "correct", "count", "steps"), packed), bad_step=first_bad)

    def _save_checkpoint(self, step: int, train_point: Mapping[str, Any] | None) -> None:
        from superconv import distributed

        pieces, estimator = self.pieces, self.estimator
        rng = distributed.all_gather_object(_rng_state(pieces.device))
        if self.run is not None:
            ckpt.save(
                self.run.checkpoint_path,
                {
                    "step": step,
                    # a schedule-free run: "model" is its evaluation point, this the
                    # point it trains at (see evaluation_point)
                    **({} if train_point is None else {"train_point": train_point}),
                    "elapsed": self.elapsed,
                    "metrics": self.rows,
                    "model": pieces.module.state_dict(),
                    "optimizer": pieces.optimizer.state_dict(),
                    "sums": {k: v.detach().clone() for k, v in self.sums.items()},
                    "observers": [
                        o.state_dict() if hasattr(o, "state_dict") else None
                        for o in self.user_observers
                    ],
                    "estimator": estimator.state_dict() if estimator is not None else None,
                    "rng": rng,
                    "config": self.config.to_dict(),
                    **({} if pieces.scaler is None else {"scaler": pieces.scaler.state_dict()}),
                },
            )
            if estimator is not None:
                _write_estimates(self.run, estimator)
        distributed.barrier()

    def _diverged(self, bad: int) -> DivergenceError:
        """Record the run as diverged at iteration ``bad``; the error to raise."""
        config, policy, run = self.config, self.pieces.policy, self.run
        lr = apply_values_at(policy, bad).get("lr", float("nan"))
        if run is not None:
            run.write_metrics(self.rows)
            summary = _summary(config, self.rows, self.elapsed, status="diverged", step=bad)
            summary["diverged_lr"] = lr
            run.write_summary(summary)
            _write_curves(run, self.rows, config, "diverged", policy)
        kept = (
            "the last good checkpoint is kept"
            if self.checkpoint_path.is_file()
            else f"no checkpoint was written yet (the first is at iteration {config.checkpoint_every})"
        )
        return DivergenceError(
            f"the training loss became NaN/inf at iteration {bad} (lr {lr:.4g}). "
            f"Metrics so far are in {RunDir(self.run_dir).metrics_path}; {kept}. "
            "Lower max_lr or check the data.",
            step=bad,
            lr=lr,
        )

    def _collapsed(self, found: Collapse) -> DivergenceError:
        """Record the run as collapsed (finite numbers, see check_collapse); the error."""
        config, policy, run, rows = self.config, self.pieces.policy, self.run, self.rows
        lr = found.lr if found.lr is not None else float("nan")
        if run is not None:
            run.write_metrics(rows)
            summary = _summary(config, rows, self.elapsed, status="diverged", step=found.iteration)
            summary["diverged_lr"] = lr
            summary["collapse"] = found.what
            run.write_summary(summary)
            _write_curves(run, rows, config, f"collapsed at iteration {found.iteration:,}", policy)
        kept = (
            "the last checkpoint, from before the blow-up, is kept"
            if self.checkpoint_path.is_file()
            else "no checkpoint was written before it"
        )
        return DivergenceError(
            f"the run collapsed: {found.what}. Stopped; metrics are in "
            f"{RunDir(self.run_dir).metrics_path}; {kept}. Use a lower max_lr: the "
            "suggestion band of `superconv lr-find` (its safe value) is the place to start.",
            step=found.iteration,
            lr=lr,
        )


def _check_state(path: Path, state: Mapping[str, Any], sums: Mapping[str, Any], iterations: int):
    """Refuse a checkpoint with a missing or mistyped entry, naming the entry."""

    def bad(entry: str, why: str) -> CheckpointError:
        return CheckpointError(
            f"{path} is incomplete or damaged: {entry} {why}. Start the run again in a new "
            "folder (or restore this checkpoint from a copy)."
        )

    kinds = {
        "step": int, "elapsed": (int, float), "metrics": list, "model": dict,
        "optimizer": dict, "sums": dict, "rng": list,
    }  # fmt: skip
    for key, kind in kinds.items():
        if key not in state:
            raise bad(f"the entry {key!r}", "is missing")
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            raise bad(f"the entry {key!r}", f"is a {type(state[key]).__name__}")
    if not 0 <= state["step"] <= iterations:
        raise bad("the step", f"({state['step']}) is outside 0..{iterations}")
    if not math.isfinite(state["elapsed"]):
        raise bad("the elapsed time", f"is {state['elapsed']!r}")
    if not all(isinstance(r, dict) for r in state["metrics"]):
        raise bad("a metrics row", "is not a mapping")
    if not all(
        isinstance(state["optimizer"].get(k), (dict, list)) for k in ("state", "param_groups")
    ):
        raise bad("the optimizer state", "lacks 'state' or 'param_groups'")
    for key, own in sums.items():
        value = state["sums"].get(key)
        if not isinstance(value, torch.Tensor) or value.shape != own.shape:
            raise bad(f"the loss sums ('sums') entry {key!r}", "is missing or of the wrong shape")
    if not state["rng"] or not all(
        isinstance(r, dict)
        and isinstance(r.get("cpu"), torch.Tensor)
        and r["cpu"].dtype == torch.uint8
        for r in state["rng"]
    ):
        raise bad("the random number generator state ('rng')", "is empty or malformed")
    for key in ("observers",):
        if state.get(key) is not None and not isinstance(state[key], list):
            raise bad(f"the entry {key!r}", f"is a {type(state[key]).__name__}")


def apply_values_at(policy: Mapping[str, Any], step: int) -> dict[str, float]:
    """The policy's values at ``step`` (pure; writes nothing)."""
    return {name: float(schedule(step)) for name, schedule in policy.items()}


def _metrics_row(pieces: Pieces, step: int, values, totals, elapsed: float) -> dict[str, Any]:
    count, steps = totals["count"], totals["steps"]
    row: dict[str, Any] = {
        "iteration": step + 1,
        "epoch": (step + 1) * pieces.config.batch_size / pieces.num_train,
        "lr": values.get("lr"),
        "momentum": values.get("momentum", _momentum_of(pieces.optimizer)),
        "train_loss": totals["loss"] / max(steps, 1),
        "train_acc": 100.0 * totals["correct"] / max(count, 1),
    }
    for name, loader in pieces.eval_loaders.items():
        loss, acc = evaluate(
            pieces.module, loader, device=pieces.device, autocast_dtype=pieces.autocast_dtype
        )
        row[f"{name}_loss"], row[f"{name}_acc"] = loss, acc
    row["wall_time"] = elapsed
    return row


def _momentum_of(optimizer: torch.optim.Optimizer) -> float | None:
    group = optimizer.param_groups[0]
    if "momentum" in group:
        return float(group["momentum"])
    if "betas" in group:
        return float(group["betas"][0])
    return None


def _summary(
    config: TrainConfig, rows, elapsed: float, *, status: str, step: int
) -> dict[str, Any]:
    last = rows[-1] if rows else {}
    best = max((r["test_acc"] for r in rows if r.get("test_acc") is not None), default=None)
    return {
        "status": status,
        "iterations": step,
        "final_test_acc": last.get("test_acc"),
        "final_test_loss": last.get("test_loss"),
        "final_val_acc": last.get("val_acc"),
        "final_train_loss": last.get("train_loss"),
        "best_test_acc": best,
        "wall_time": elapsed,
        "seed": config.seed,
        "model": config.model,
        "policy": config.policy,
    }


CURVES_FILE = "curves.png"


def _write_curves(
    run: RunDir,
    rows: Sequence[Mapping[str, Any]],
    config: TrainConfig,
    how: str,
    policy: Mapping[str, Any] | None = None,
):
    """``curves.png``: loss and accuracy against the iteration, the schedule beneath.

    A figure is a convenience: a failure to draw it (no matplotlib, say) warns and
    leaves the run's records as they are.
    """
    if not rows:
        return
    try:
        from superconv.plots import plot_run_curves

        title = f"{config.model} on {config.dataset}, {config.policy}: {how}"
        plot_run_curves(
            {run.path.name: rows},
            run.path / CURVES_FILE,
            title=title,
            policy=policy,
            total_steps=config.iterations,
        )
    except Exception as exc:  # noqa: BLE001 - the run's numbers matter, not its picture
        warnings.warn(f"could not draw {CURVES_FILE}: {exc}", stacklevel=2)


def _write_estimates(run: RunDir, estimator: Any) -> None:
    rows = [{"iteration": s, "estimate": raw, "smoothed": sm} for s, raw, sm in estimator.history]
    run.write_table("estimates.csv", rows, ("iteration", "estimate", "smoothed"))


def _progress(enabled: bool, pace: Pace) -> Progress | None:
    return Progress(pace) if enabled else None
