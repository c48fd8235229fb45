"""The loops and the stopwatch of ``bench_train.py``.

- :class:`NaiveLoop`: the pinned naive reference (a ``DataLoader`` over a
  per-sample augmenting ``Dataset``, NCHW float32, eager, ``loss.item()`` every step).
- :class:`ProjectLoop`: superconv.train's loop body, step for step.
- :func:`run_interleaved`: times several loops in round-robin blocks so that all of
  them see the same machine load; :class:`LoopTimes` summarises one loop.
- :class:`PeakMemory`, :class:`StepClock`, :func:`load_average`: what else is measured.
"""

from __future__ import annotations

import itertools
import os
import resource
import statistics
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from superconv.data import DataError, DeviceLoader, load_dataset
from superconv.models import DownsampleBlock, StandardBlock, bn_modules, build_model
from superconv.models.bn import CaffeBatchNorm2d
from superconv.schedules import apply
from superconv.train import (
    TrainConfig,
    _add_step,
    _autocast,
    _full,
    _new_sums,
    make_optimizer,
    make_policy,
)

# Random stand-ins when the real data is absent: (train images, test images, C, H, W).
DATA_SHAPES = {"cifar10": (50_000, 10_000, 3, 32, 32), "mnist": (60_000, 10_000, 1, 28, 28)}


def max_lr(model: str) -> float:
    """Peak LR of the 1cycle both loops run: low enough that random data stays finite
    (LeNet: 0.01, the base_lr of Caffe's lenet_solver)."""
    return 0.01 if model == "lenet" else 0.1


# ============================================================================ measuring
def synchronize(device: torch.device) -> None:
    """Wait for queued device work (a no-op on the CPU, where ops run synchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak memory over a stretch of code.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors only), reset per stretch.
    CPU: the process's peak resident set size, ``VmHWM`` in ``/proc/self/status``,
    reset per stretch by writing 5 to ``/proc/self/clear_refs`` (Linux >= 4.0). It
    covers the whole process (data, every model alive), not one loop's tensors;
    psutil has no peak RSS on Linux, so /proc is read directly. Where /proc is
    missing, ``ru_maxrss`` (peak since the process started) stands in.
    """

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            self.kind = "cuda max_memory_allocated"
        elif self._reset_rss():
            self.kind = "process peak RSS (VmHWM), reset before each measured stretch"
        else:
            self.kind = "process peak RSS since start (ru_maxrss); could not reset"

    @staticmethod
    def _reset_rss() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._reset_rss()

    def peak_mib(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024  # kB
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages (how busy the machine was), None where unknown."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ============================================================================ data
@dataclass
class BenchData:
    """uint8 images and labels of one data set, and where they came from."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str


def bench_data(name: str, *, force_random: bool = False, seed: int = 0) -> BenchData:
    """The real data set ``name`` if it can be found, else random uint8 images of its shape."""
    reason = "--random-data was given"
    if not force_random:
        try:
            ds = load_dataset(name)
            return BenchData(
                name,
                ds.train_x,
                ds.train_y,
                ds.test_x,
                ds.test_y,
                tuple(ds.mean),
                tuple(ds.std),
                f"real {name}",
            )
        except DataError as exc:
            reason = str(exc).split(". ")[0]
    n_train, n_test, c, h, w = DATA_SHAPES[name]
    g = torch.Generator().manual_seed(seed)
    return BenchData(
        name,
        torch.randint(0, 256, (n_train, c, h, w), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (n_train,), generator=g),
        torch.randint(0, 256, (n_test, c, h, w), dtype=torch.uint8, generator=g),
        torch.randint(0, 10, (n_test,), generator=g),
        (0.5,) * c,
        (0.29,) * c,  # uniform 0..1 pixels: std 1/sqrt(12)
        f"random uint8 images of {name}'s shape ({reason})",
    )


def train_flop_per_image(model_name: str, data: BenchData) -> float:
    """FLOPs of one training step per image (forward + backward; torch's FlopCounterMode
    counts convolutions and matrix products, 2 FLOPs per multiply-add)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(model_name, in_channels=data.train_x.shape[1])
    x = torch.randn(2, *data.train_x.shape[1:])
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), torch.zeros(2, dtype=torch.int64)).backward()
    return counter.get_total_flops() / 2


# ============================================================================ the naive loop
class AugmentedImages(Dataset):
    """Per-sample pad-and-random-crop, mirror and normalise over a ``TensorDataset``.

    What a straightforward PyTorch script does (torchvision's ``RandomCrop(padding=p)``,
    ``RandomHorizontalFlip`` and ``Normalize``, one image at a time). Pinned as the
    naive reference: do not slow it down, and do not speed it up either.
    """

    def __init__(self, images_u8, labels, mean, std, *, crop_pad: int = 4, flip: bool = True):
        self.base = TensorDataset(images_u8, labels)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self.crop_pad, self.flip = crop_pad, flip

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.base[index]
        _, h, w = image.shape
        if self.crop_pad:
            p = self.crop_pad
            image = F.pad(image, (p, p, p, p))
            dy, dx = torch.randint(0, 2 * p + 1, (2,)).tolist()
            image = image[:, dy : dy + h, dx : dx + w]
        if self.flip and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return (image.float() / 255.0 - self.mean) / self.std, label


class NaiveLoop:
    """The pinned reference loop: DataLoader (num_workers=0, shuffle) over
    :class:`AugmentedImages`, NCHW float32, eager model, ``loss.item()`` every step,
    torch's ``OneCycleLR``. Same model code, optimizer settings and batch as the
    project's loop.
    """

    def __init__(
        self,
        model_name: str,
        data: BenchData,
        batch_size: int,
        device,
        *,
        total_steps: int,
        crop_pad: int = 4,
        seed: int = 0,
    ):
        self.device, self.batch_size = device, batch_size
        dataset = AugmentedImages(
            data.train_x, data.train_y, data.mean, data.std, crop_pad=crop_pad
        )
        generator = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            num_workers=0,
            drop_last=True,
            generator=generator,
        )
        self.batches = iter(self.loader)
        torch.manual_seed(seed)
        self.model = build_model(model_name, in_channels=data.train_x.shape[1]).to(device)
        config = TrainConfig(optimizer="sgd")
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=max_lr(model_name) / 25,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr(model_name), total_steps=total_steps
        )
        self.losses: list[float] = []
        self.model.train()

    def step(self) -> None:
        try:
            x, y = next(self.batches)
        except StopIteration:  # a new epoch
            self.batches = iter(self.loader)
            x, y = next(self.batches)
        x, y = x.to(self.device), y.to(self.device)
        loss = F.cross_entropy(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.losses.append(loss.item())


# ============================================================================ the project's loop
class TwoPassCaffeBatchNorm2d(CaffeBatchNorm2d):
    """CaffeBatchNorm2d before this benchmark (A/B only): the batch statistics for the
    running averages were computed a second time with ``var_mean``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.ghost_batch not in (None, x.shape[0]):
            return super().forward(x)
        out = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
        with torch.no_grad():
            var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=1)
        self._update_running_stats(mean, var)
        return out


class OutOfPlaceStandardBlock(StandardBlock):
    """The paper's block before this benchmark (A/B only): ReLU and sum out of place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class OutOfPlaceDownsampleBlock(DownsampleBlock):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = OutOfPlaceStandardBlock.forward(self, x)
        return torch.cat([out, torch.zeros_like(out)], dim=1)


def two_pass_bn(model: nn.Module) -> None:
    """Patch: CaffeBatchNorm2d layers as before (see :class:`TwoPassCaffeBatchNorm2d`)."""
    for layer in bn_modules(model):
        if type(layer) is CaffeBatchNorm2d:
            layer.__class__ = TwoPassCaffeBatchNorm2d


def out_of_place_relu(model: nn.Module) -> None:
    """Patch: the paper's blocks as before (see :class:`OutOfPlaceStandardBlock`)."""
    for module in model.modules():
        if type(module) is StandardBlock:
            module.__class__ = OutOfPlaceStandardBlock
        elif type(module) is DownsampleBlock:
            module.__class__ = OutOfPlaceDownsampleBlock


class ProjectLoop:
    """superconv.train's loop body, step for step (see ``superconv.train.train``).

    ``apply(policy)`` then ``DeviceLoader.batch(step)`` (device-resident uint8 data,
    augmentation in batch), channels_last, bf16 autocast on CUDA, optional
    ``torch.compile``, loss and accuracy summed on the device and read every
    ``log_every`` (10) steps only. ``torch.compile`` errors surface at the first
    forward or backward; the first step then reruns eager with one warning
    (``compile_error`` keeps the reason).

    ``use_policy`` / ``observers`` can be changed between steps (overhead section);
    with ``time_parts`` the seconds spent in ``apply`` and in the observers are summed
    (CPU only: on a GPU they would need a sync).
    """

    def __init__(
        self,
        model_name: str,
        data: BenchData,
        batch_size: int,
        device: torch.device,
        *,
        total_steps: int,
        compile: bool = False,
        channels_last: bool = True,
        autocast_dtype: torch.dtype | None = None,
        bn_mode: str = "caffe",
        patch: Callable[[nn.Module], None] | None = None,
        crop_pad: int = 4,
        seed: int = 0,
        sgd: Mapping[str, Any] | None = None,
    ):
        """``sgd``: keyword arguments of torch.optim.SGD (e.g. ``foreach``, ``fused``) in
        place of the project's optimizer (the A/B section's alternatives)."""
        self.device, self.batch_size, self.autocast_dtype = device, batch_size, autocast_dtype
        config = TrainConfig(
            model=model_name,
            batch_size=batch_size,
            iterations=total_steps,
            policy="one_cycle",
            policy_params={"max_lr": max_lr(model_name)},
            crop_pad=crop_pad,
            seed=seed,
        )
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.loader = DeviceLoader(
            data.train_x,
            data.train_y,
            batch_size,
            mean=data.mean,
            std=data.std,
            train=True,
            flip=True,
            crop_pad=crop_pad,
            seed=seed,
            device=device,
            channels_last=channels_last,
        )
        torch.manual_seed(seed)
        model = build_model(model_name, in_channels=data.train_x.shape[1], bn_mode=bn_mode)
        if patch is not None:
            patch(model)
        self.model = model.to(device=device, memory_format=memory_format)
        self.optimizer = make_optimizer(config, self.model.parameters())
        if sgd is not None:
            self.optimizer = torch.optim.SGD(
                self.model.parameters(), lr=0.0, momentum=config.momentum,
                weight_decay=config.weight_decay, **sgd,
            )  # fmt: skip
        self.policy = make_policy(config)
        self.forward: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(self.model) if compile else self.model
        )
        self.compile_pending, self.compile_error = compile, None
        self.log_every = config.log_every
        self.use_policy = True
        self.observers: list[Callable[..., Any]] = []
        self.time_parts = False
        self.policy_s = self.observer_s = 0.0
        self.iteration = 0
        self.sums = _new_sums(device)
        self.model.train()

    def step(self) -> None:
        if not self.compile_pending:
            self._step()
            return
        self.compile_pending = False
        buffers = [b.detach().clone() for b in self.model.buffers()]
        rng = torch.get_rng_state()
        try:
            self._step()
        except Exception as exc:  # noqa: BLE001 - any compile failure means: run eager
            with torch.no_grad():  # undo what the failed try may have changed
                for buffer, saved in zip(self.model.buffers(), buffers):
                    buffer.copy_(saved)
            torch.set_rng_state(rng)
            self.optimizer.zero_grad(set_to_none=True)
            self.forward = self.model
            self._step()  # an error that is not compile's raises here, unmasked
            self.compile_error = _reason(exc)
            warnings.warn(
                f"torch.compile failed ({self.compile_error}); running eager.", stacklevel=2
            )

    def _step(self) -> None:
        step = self.iteration
        t0 = time.perf_counter() if self.time_parts else 0.0
        values = apply(self.policy, self.optimizer, step) if self.use_policy else {}
        if self.time_parts:
            self.policy_s += time.perf_counter() - t0
        x, y = self.loader.batch(step)
        with _autocast(self.device, self.autocast_dtype):
            logits = self.forward(x)
            loss = F.cross_entropy(_full(logits), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

        detached = loss.detach()
        sums = self.sums
        _add_step(sums, detached, logits, y, step)  # the same bookkeeping as train()
        t0 = time.perf_counter() if self.time_parts else 0.0
        for observer in self.observers:
            observer(step, self.model, self.optimizer, {"loss": detached, **values})
        if self.time_parts:
            self.observer_s += time.perf_counter() - t0
        if (step + 1) % self.log_every == 0:  # train() reads the sums every log_every steps
            torch.stack([sums[k].double() for k in ("loss", "correct", "count", "steps")]).tolist()
            sums["bad_step"].item()
        self.iteration += 1


def _reason(exc: BaseException) -> str:
    """One line naming an error and its root cause (dynamo wraps a backend's error)."""
    root = exc
    while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:
        root = inner
    lines = str(root).strip().splitlines()
    text = f"{type(root).__name__}: {lines[0] if lines else ''}"
    return text if root is exc else f"{type(exc).__name__} <- {text}"


# ============================================================================ interleaving
@dataclass
class LoopTimes:
    """Times of one loop in an interleaved run."""

    images_per_step: int
    setup_s: float = 0.0
    first_step_s: float = 0.0  # includes compilation for a compiled loop
    warmup_s: float = 0.0  # all warm-up steps, the first included
    warmup_steps: int = 0
    blocks: list[tuple[int, int, float, bool]] = field(
        default_factory=list
    )  # round, steps, s, timed
    peak_mib: float = 0.0

    @property
    def timed(self) -> list[tuple[int, int, float, bool]]:
        return [b for b in self.blocks if b[3]]

    def summary(self) -> dict[str, Any]:
        steps = sum(b[1] for b in self.timed)
        seconds = sum(b[2] for b in self.timed)
        rates = [b[1] * self.images_per_step / b[2] for b in self.timed if b[2] > 0]
        total_steps = self.warmup_steps + sum(b[1] for b in self.blocks)
        return {
            "images_per_s": steps * self.images_per_step / seconds if seconds else None,
            "median_block_images_per_s": statistics.median(rates) if rates else None,
            "s_per_1000_iterations": 1000 * seconds / steps if steps else None,
            "timed_steps": steps,
            "timed_s": seconds,
            "setup_s": self.setup_s,
            "first_step_s": self.first_step_s,
            "warmup_steps": self.warmup_steps,
            "warmup_s": self.warmup_s,
            "total_steps": total_steps,
            "end_to_end_s": self.setup_s + self.warmup_s + sum(b[2] for b in self.blocks),
            "peak_memory_mib": round(self.peak_mib, 1),
            "block_s": [round(b[2], 4) for b in self.blocks],
        }


def run_interleaved(
    loops: Mapping[str, Any],
    *,
    warmup: int,
    steps: int,
    block: int,
    extra: Mapping[str, int] | None = None,
    device: torch.device,
    memory: PeakMemory | None = None,
    times: Mapping[str, LoopTimes] | None = None,
) -> dict[str, LoopTimes]:
    """Warm each loop up, then run ``steps`` timed steps of every loop in round-robin
    blocks of ``block`` steps (then ``extra[name]`` untimed-for-rate steps), so that
    all loops see the same machine load. Each loop needs ``.step()`` and ``.batch_size``.

    A block is timed from a device sync to a device sync (one sync per block, so
    loops that never sync per step are not charged one per step).
    """
    extra = extra or {}
    memory = memory or PeakMemory(device)
    times = dict(times or {})
    plans: dict[str, list[tuple[int, bool]]] = {}
    for name, loop in loops.items():
        rec = times.setdefault(name, LoopTimes(loop.batch_size))
        memory.reset()
        synchronize(device)
        t0 = time.perf_counter()
        for i in range(warmup):
            loop.step()
            if i == 0:
                synchronize(device)
                rec.first_step_s = time.perf_counter() - t0
        synchronize(device)
        rec.warmup_s, rec.warmup_steps = time.perf_counter() - t0, warmup
        rec.peak_mib = max(rec.peak_mib, memory.peak_mib())
        plans[name] = [(n, True) for n in _chunks(steps, block)]
        plans[name] += [(n, False) for n in _chunks(extra.get(name, 0), block)]
    for round_ in itertools.count():
        pending = [name for name in loops if round_ < len(plans[name])]
        if not pending:
            break
        for name in pending:
            n, timed = plans[name][round_]
            memory.reset()
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(n):
                loops[name].step()
            synchronize(device)
            times[name].blocks.append((round_, n, time.perf_counter() - t0, timed))
            times[name].peak_mib = max(times[name].peak_mib, memory.peak_mib())
    return times


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def ratio_to(times: Mapping[str, LoopTimes], name: str, base: str) -> dict[str, float | None]:
    """images/s of ``name`` over ``base``: over all timed blocks, and the median of the
    per-round ratios (robust to a burst of load hitting one round)."""
    a, b = times[name].summary(), times[base].summary()
    overall = (
        a["images_per_s"] / b["images_per_s"] if a["images_per_s"] and b["images_per_s"] else None
    )
    base_rate = {r: n / s for r, n, s, timed in times[base].blocks if timed and s > 0}
    per_round = [
        (n / s) / base_rate[r] * times[name].images_per_step / times[base].images_per_step
        for r, n, s, timed in times[name].blocks
        if timed and s > 0 and r in base_rate
    ]
    return {
        "overall": overall,
        "median_per_round": statistics.median(per_round) if per_round else None,
    }


class StepClock:
    """Observer that timestamps every step of a training loop (CUDA events on a GPU)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.marks: list[Any] = []

    def __call__(self, step, model, optimizer, metrics) -> None:
        if self.device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append(event)
        else:
            self.marks.append(time.perf_counter())

    def seconds(self, first: int, last: int) -> float:
        """Seconds from the end of step ``first`` to the end of step ``last``."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return self.marks[first].elapsed_time(self.marks[last]) / 1000
        return self.marks[last] - self.marks[first]
