"""The training configuration: :class:`TrainConfig` and its checks, without torch.

Kept apart from :mod:`superconv.train` (which imports torch) so the command line
builds its flags from the dataclass's fields in milliseconds: ``superconv --help``
imports neither torch nor matplotlib. :mod:`superconv.train` re-exports every name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from superconv.errors import UserError, did_you_mean

if TYPE_CHECKING:
    import torch

# The policy names of superconv.schedules.build_policy, for the CLI's help without
# importing torch (tests/test_cli.py checks the two lists are the same).
POLICY_NAMES = (
    "clr", "cyclic", "one_cycle", "piecewise", "multistep", "piecewise_values", "step",
    "cosine", "warmup_cosine", "sgdr", "constant", "inv", "linear_decay", "poly", "inv_sqrt",
    "wsd",
)  # fmt: skip

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "fp64")
OPTIMIZERS = (
    "sgd", "nesterov", "adam", "adamw", "adagrad", "adadelta",
    "schedulefree_sgd", "prodigy",  # optional extras: pip install 'superconv[schedulefree]' / [prodigy]
)  # fmt: skip
_MOMENTUM_OPTIMIZERS = ("sgd", "nesterov", "adam", "adamw", "prodigy")


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the paper's ResNet-56 / CIFAR-10 CLR setting."""

    # -- what is trained
    model: str = "resnet56"  # Tables 2-4
    dataset: str = "cifar10"
    data_dir: str | None = None  # else $SUPERCONV_DATA, else the user cache folder
    train_subset: int | None = None  # Table 1 lower rows: 40k/30k/20k/10k, class-balanced
    val_size: int = 0  # images held out of the training set for tuning (never the test set)
    split_seed: int = 0  # the subset / validation split is fixed across seeds and policies
    # -- how long, in iterations (the paper counts iterations, not epochs)
    iterations: int = 10_000  # Table 1: CLR 0.1-3, stepsize 5,000 -> 10,000 iterations
    batch_size: int = 1000  # the global batch (section 6: 8 GPUs x 125); split over DDP ranks
    # -- the policy (superconv.schedules.build_policy)
    policy: str = "clr"
    policy_params: Mapping[str, Any] = field(
        default_factory=lambda: {"min_lr": 0.1, "max_lr": 3.0}  # Table 1: CLR 0.1-3
    )
    # -- optimizer
    optimizer: str = "sgd"
    momentum: float = 0.9  # Table 6: 0.9 is best
    weight_decay: float = 1e-4  # section 6: 1e-4 (1e-3 prevents super-convergence)
    # -- batch norm (superconv.models)
    bn_maf: float = 0.95  # Table 1: MAF 0.95 for 10k-iteration runs (0.999 for PC-LR)
    bn_mode: str = "caffe"  # Caffe's debiased moving average; "torch" = momentum 1 - MAF
    ghost_batch: int | None = None  # 125 mimics the paper's 8 GPUs x 125 unsynchronised BN
    sync_bn: bool = False  # under DDP: BN over the global batch (the paper: per GPU)
    dropout: float = 0.0  # Fig. 9b: 0.2 helps a little
    # -- augmentation: the authors' prototxts mirror only (no pad-and-crop)
    flip: bool = True
    crop_pad: int = 0
    # "mean_std": per-channel standardisation (CIFAR prototxts subtract the mean);
    # "unit": pixels / 255 only, as Caffe's LeNet example (scale 0.00390625).
    normalize: str = "mean_std"
    # --dataset folder:PATH only: side of the square crops (random-resized for training,
    # centre for evaluation); None = 224, ImageNet's. The built-in sets keep their size.
    image_size: int | None = None
    # -- bookkeeping
    seed: int = 0
    eval_every: int = 500  # iterations between evaluations (metrics rows)
    log_every: int = 10  # iterations between reads of the loss (progress, NaN check)
    checkpoint_every: int = 1000  # must be a multiple of eval_every
    eval_batch_size: int = 1000
    estimator_k: int | None = None  # eq. 8 observer: snapshots every k steps (Fig. 5)
    # -- speed
    device: str = "auto"  # "auto" = cuda if available, else cpu
    precision: str = "auto"  # "auto" = bf16 autocast on CUDA, fp32 on the CPU; "fp64" for checks
    # fp16: autocast to float16 with a GradScaler (steps with inf/NaN gradients skipped).
    # Micro-batches per step: each batch is split into this many equal parts whose
    # gradients add up to the whole batch's (its memory at the cost of time); None = 1.
    # BN sees micro-batches, as with ghost_batch. None (not 1) keeps older runs' records.
    accumulation_steps: int | None = None
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False
    threads: int | None = None

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (config.json)."""
        d = dataclasses.asdict(self)
        d["policy_params"] = dict(self.policy_params)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a dict (TOML / JSON), refusing unknown keys and wrong types."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in d if k not in fields]
        if unknown:
            hints = [f"{k!r}{did_you_mean(k, fields)}" for k in unknown]
            raise UserError(
                f"unknown config key(s): {', '.join(hints)} (known keys: {', '.join(fields)})."
            )
        kwargs = {}
        for key, value in d.items():
            kwargs[key] = _check_type(key, value, fields[key].type)
        return cls(**kwargs)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (type-checked like :meth:`from_dict`)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise :class:`UserError` naming the first impossible value."""
        _positive_int("iterations", self.iterations)
        _positive_int("batch_size", self.batch_size)
        _positive_int("eval_every", self.eval_every)
        _positive_int("log_every", self.log_every)
        _positive_int("checkpoint_every", self.checkpoint_every)
        _positive_int("eval_batch_size", self.eval_batch_size)
        if self.checkpoint_every % self.eval_every:
            raise UserError(
                f"checkpoint_every ({self.checkpoint_every}) must be a multiple of eval_every "
                f"({self.eval_every}), so a checkpoint always follows an evaluation."
            )
        if self.optimizer not in OPTIMIZERS:
            raise UserError(_unknown("optimizer", self.optimizer, OPTIMIZERS))
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise UserError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        if not (0.0 <= self.momentum < 1.0):
            raise UserError(f"momentum must be in [0, 1), got {self.momentum}.")
        if not (0.0 <= self.dropout < 1.0):
            raise UserError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.val_size < 0:
            raise UserError(f"val_size must be >= 0, got {self.val_size}.")
        if self.val_size:
            _balanced_size("val_size", self.dataset, self.val_size)
        if self.train_subset is not None:
            _positive_int("train_subset", self.train_subset)
            _balanced_size("train_subset", self.dataset, self.train_subset)
        if not 0 <= self.crop_pad <= MAX_CROP_PAD:
            raise UserError(
                f"crop_pad must be 0..{MAX_CROP_PAD} pixels, got {self.crop_pad} "
                "(4 is the usual CIFAR margin)."
            )
        for name in ("seed", "split_seed"):
            value = getattr(self, name)
            if not 0 <= value < 2**32:
                raise UserError(f"{name} must be an integer in 0..{2**32 - 1:,}, got {value}.")
        if self.estimator_k is not None:
            _positive_int("estimator_k", self.estimator_k)
        if self.ghost_batch is not None:
            _positive_int("ghost_batch", self.ghost_batch)
        if self.accumulation_steps is not None:
            _positive_int("accumulation_steps", self.accumulation_steps)
            if self.batch_size % self.accumulation_steps:
                raise UserError(
                    f"accumulation_steps ({self.accumulation_steps}) must divide batch_size "
                    f"({self.batch_size}) into equal micro-batches."
                )
        if self.ghost_batch is not None and self.batch_size % self.ghost_batch:
            raise UserError(
                f"ghost_batch ({self.ghost_batch}) must divide batch_size ({self.batch_size})."
            )
        if self.image_size is not None:
            if not self.dataset.startswith("folder:"):
                raise UserError(
                    f"image_size ({self.image_size}) sets the crops of folder:PATH data sets; "
                    f"{self.dataset} keeps its own size: drop it."
                )
            if isinstance(self.image_size, bool) or self.image_size < 8:
                raise UserError(f"image_size must be an integer >= 8, got {self.image_size!r}.")
        if self.normalize not in ("mean_std", "unit"):
            raise UserError(_unknown("normalize", self.normalize, ("mean_std", "unit")))
        if self.precision not in PRECISIONS:
            raise UserError(_unknown("precision", self.precision, PRECISIONS))
        if self.threads is not None:
            check_threads(self.threads)
        for name in ("momentum", "weight_decay", "bn_maf", "dropout"):
            _float32(name, getattr(self, name))
        resolve_device(self.device)


def _positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be an integer >= 1, got {value!r}.")


def check_threads(threads: int) -> None:
    """Refuse a CPU thread count below 1 or above this machine's CPUs (torch crashes on
    huge ones, and more threads than cores only wait on each other)."""
    import os

    _positive_int("threads", threads)
    cores = os.cpu_count() or 1
    if threads > cores:
        raise UserError(
            f"threads ({threads:,}) is more than the {cores} CPU core(s) of this machine; "
            f"choose 1..{cores} (1 is fastest beside other work)."
        )


# A pad-and-crop margin of more than an image's side crops mostly padding.
MAX_CROP_PAD = 32

# The largest float32: an LR or policy value above it becomes inf in the optimizer.
FLOAT32_MAX = 3.4028234663852886e38  # float(torch.finfo(torch.float32).max), without torch


def _float32(name: str, value: Any) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isfinite(value) and abs(value) > FLOAT32_MAX:
            raise UserError(
                f"{name} ({value:g}) overflows float32 (largest {FLOAT32_MAX:.4g}); "
                "choose a smaller value."
            )


def _balanced_size(name: str, dataset: str, n: int) -> None:
    """Refuse a class-balanced subset size (``train_subset``, ``val_size``) that is not a
    multiple of the class count."""
    from superconv.data import DATASETS

    info = DATASETS.get(dataset)
    if info is None:
        return  # an unknown data set is refused by name later, with a did-you-mean
    k = len(info.classes)
    if n % k:
        lower, upper = n // k * k, (n // k + 1) * k
        nearest = f"{lower:,} or {upper:,}" if lower else f"{upper:,}"
        raise UserError(
            f"{name} ({n:,}) must be a multiple of the {k} classes of {dataset} "
            f"(a class-balanced subset takes the same number of images of each class); "
            f"use {nearest}."
        )


def _unknown(what: str, name: str, known: Sequence[str]) -> str:
    return f"unknown {what} {name!r}{did_you_mean(name, known)} Choose one of: {', '.join(known)}."


def _check_type(key: str, value: Any, annotation: Any) -> Any:
    """Check a config value against the field's annotation string (from __future__ annotations)."""
    ann = str(annotation)
    allowed: list[type] = []
    if "Mapping" in ann or "dict" in ann:
        allowed.append(dict)
    for name, typ in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if name in ann.replace("Mapping[str, Any]", ""):
            allowed.append(typ)
    if value is None and "None" in ann:
        return value
    if isinstance(value, bool) and bool not in allowed:
        raise UserError(f"config key {key!r} must be {ann}, got the boolean {value!r}.")
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return float(value) if int not in allowed else value
    if not isinstance(value, tuple(allowed)):
        raise UserError(f"config key {key!r} must be {ann}, got {type(value).__name__} {value!r}.")
    return value


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda if available else cpu; refuse CUDA where there is none."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N.") from exc
    mps = device.type == "mps" and torch.backends.mps.is_available()
    if device.type not in ("cpu", "cuda") and not mps:  # meta, xpu...: not what the loop runs on
        raise UserError(f"device {name!r} is not supported here: use auto, cpu, cuda or cuda:N.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"device {name!r} was requested but this machine has no usable CUDA GPU "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Use --device cpu."
        )
    return device


# ---------------------------------------------------------------------- CLI defaults
# What `superconv train`, `lr-find` and `fit` start from for each data set (issue 23): a
# newcomer's run that fits a laptop. Resolved in the CLI only (cli.resolve_train_config),
# preset < data set < TOML < flags;
# TrainConfig's own defaults (the paper's ResNet-56 CLR setting) stay as they are, so
# committed runs keep their identity. `--preset paper` skips this layer.
_MNIST = {
    "model": "lenet",  # Caffe's LeNet example
    "batch_size": 64,  # Caffe's lenet_solver: batch 64
    "normalize": "unit",  # Caffe's LeNet: scale 0.00390625, no mean
    "flip": False,  # digits are not mirror-symmetric
    "crop_pad": 0,
}
_CIFAR = {
    "model": "resnet20",
    "batch_size": 128,
    "flip": True,
    "crop_pad": 4,  # the usual CIFAR pad-4 random crop
    "val_size": 5000,
}
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist": {**_MNIST, "epochs": 2},
    "fashion-mnist": {**_MNIST, "epochs": 2},
    "mnist-demo": {**_MNIST, "epochs": 3},
    "cifar10": {**_CIFAR, "epochs": 5},
    "cifar100": {**_CIFAR, "epochs": 5},
}
TRAIN_IMAGES = {"mnist": 60_000, "fashion-mnist": 60_000, "mnist-demo": 10_000,
                "cifar10": 50_000, "cifar100": 50_000}  # fmt: skip
PRESETS = ("auto", "paper")


def iterations_for_epochs(epochs: float, dataset: str, batch_size: int, val_size: int = 0,
                          train_subset: int | None = None) -> int:  # fmt: skip
    """Iterations of ``epochs`` passes over the training split (after the validation
    images are held out, or the subset): ``ceil(epochs * images / batch_size)``."""
    if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs > 0):
        raise UserError(f"--epochs must be a number > 0, got {epochs!r}.")
    if dataset.startswith("folder:"):
        from superconv.data.folder import folder_splits

        count = len(folder_splits(dataset, check=False)[0])  # headers unread: a fast count
        images = train_subset or (count - val_size)
    else:
        images = train_subset or (TRAIN_IMAGES.get(dataset, 50_000) - val_size)
    return max(1, math.ceil(epochs * images / batch_size))


def describe_config(config: TrainConfig, schedule: str | None = None) -> list[str]:
    """The resolved config, one line per group (printed when a run starts).

    ``schedule``: what a command trains in place of the config's policy (lr-find's
    ramp, fit's chosen 1cycle); the budget and batch follow it.
    """
    c = config
    schedule = schedule or f"{c.policy} {dict(c.policy_params)}"
    subset = f", subset {c.train_subset:,}" if c.train_subset else ""
    augment = f"flip {'on' if c.flip else 'off'}, crop pad {c.crop_pad}"
    if c.dataset.startswith("folder:"):
        augment = f"random-resized crops of {c.image_size or 224} px + flip, centre crops to evaluate"
    return [
        f"  model:     {c.model} (dropout {c.dropout:g})",
        f"  data:      {c.dataset}{subset}, {c.val_size:,} held out for validation, "
        f"normalize {c.normalize}, {augment}",
        f"  schedule:  {schedule}, {c.iterations:,} iterations at batch {c.batch_size}",
        f"  optimizer: {c.optimizer}, momentum {c.momentum:g}, weight decay {c.weight_decay:g}",
        f"  batchnorm: {c.bn_mode}, MAF {c.bn_maf:g}, ghost batch {c.ghost_batch or 'none'}",
        f"  run:       seed {c.seed}, evaluate every {c.eval_every:,}, checkpoint every "
        f"{c.checkpoint_every:,}, device {c.device}, precision {c.precision}",
    ]
