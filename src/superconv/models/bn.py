"""Batch norm as the paper's Caffe runs had it.

Two details of the paper's setup (Smith & Topin 2017, section 5 and A.1) are not
what ``nn.BatchNorm2d`` does out of the box:

- **Debiased moving average.** Caffe's ``BatchNorm`` layer keeps three blobs: a
  sum of batch means, a sum of batch variances and a scale factor. Each training
  step does ``sum = maf * sum + batch_stat`` and ``scale = maf * scale + 1``; the
  running statistic used at test time is ``sum / scale``. Early batches are thus
  not pulled toward the initial 0 / 1 as with PyTorch's ``momentum = 1 - maf``.
  Caffe also stores the unbiased variance (``m / (m - 1)`` correction). The paper
  sets the moving-average fraction (MAF, ``bn_maf``) to 0.95 for CLR runs
  (Table 1) and finds it matters for short runs.
- **Ghost batches.** The paper's "batch 1000" was 8 GPUs x 125 images with
  unsynchronised BN, so each GPU normalised with the statistics of its own
  125 images. ``ghost_batch`` reproduces this on one device.

:class:`CaffeBatchNorm2d` does both and is an ``nn.BatchNorm2d`` subclass: the
running statistics live in the usual ``running_mean`` / ``running_var`` buffers
(already divided by Caffe's scale factor), so eval mode, ``state_dict`` and
``torch.equal`` checks behave as for ``nn.BatchNorm2d``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, did_you_mean

BN_MODES = ("caffe", "torch")

NormFactory = Callable[[int], nn.Module]


def check_bn_maf(bn_maf: float) -> float:
    """Return ``bn_maf`` as a float, or raise ``UserError`` (a ``ValueError``) unless it is in [0, 1).

    >>> check_bn_maf(0.95)
    0.95
    """
    if isinstance(bn_maf, bool) or not isinstance(bn_maf, (int, float)) or not 0 <= bn_maf < 1:
        raise UserError(
            f"bn_maf (Caffe's moving_average_fraction) must be a number in [0, 1), got {bn_maf!r}"
        )
    return float(bn_maf)


def check_ghost_batch(ghost_batch: int | None) -> int | None:
    """Return ``ghost_batch`` unchanged, or raise ``UserError`` (a ``ValueError``) unless it is None or >= 2."""
    if ghost_batch is None:
        return None
    if isinstance(ghost_batch, bool) or not isinstance(ghost_batch, int) or ghost_batch < 2:
        raise UserError(
            f"ghost_batch must be None (plain BN) or an integer >= 2 images per chunk, "
            f"got {ghost_batch!r}"
        )
    return ghost_batch


def check_bn_mode(bn_mode: str) -> str:
    """Return ``bn_mode`` unchanged, or raise ``UserError`` (a ``ValueError``) with a suggestion."""
    if bn_mode not in BN_MODES:
        hint = did_you_mean(bn_mode, BN_MODES)
        raise UserError(f"unknown bn_mode {bn_mode!r}; choose one of {BN_MODES}{hint}")
    return bn_mode


class CaffeBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` with Caffe's debiased running statistics and ghost batches.

    Args:
        num_features: channels ``C`` of the ``[N, C, H, W]`` input.
        bn_maf: Caffe's ``moving_average_fraction`` (paper: 0.95 for CLR runs,
            0.999 for the piecewise-constant baseline; Table 1).
        debiased: True for Caffe's scale-factor debiasing; False for PyTorch's
            plain exponential average with ``momentum = 1 - bn_maf`` (useful with
            ``ghost_batch``; without it, plain ``nn.BatchNorm2d`` is the same).
        ghost_batch: images per normalisation chunk in training (paper: 125 of
            1000, one chunk per GPU), or None to normalise over the whole batch.
        eps: added to the variance (Caffe's default 1e-5, as PyTorch's).

    Training normalises with batch (or per-chunk) statistics; eval uses the
    running ones. With ghost batches the running statistics are updated with the
    average of the per-chunk statistics, i.e. the average of the updates each
    chunk would have made alone (the update is linear in the statistic).

    Running statistics start at PyTorch's 0 / 1 (Caffe starts its blobs at 0);
    since Caffe's first update has weight ``1 / scale = 1`` they are the first
    batch's statistics after one step either way.

    The buffer ``maf_scale`` is Caffe's scale-factor blob; ``momentum`` mirrors
    ``1 - bn_maf`` so that one setter (:func:`superconv.models.set_bn_maf`)
    serves this class and ``nn.BatchNorm2d`` alike.

    >>> bn = CaffeBatchNorm2d(3, bn_maf=0.95, ghost_batch=2)
    >>> bn(torch.randn(4, 3, 5, 5)).shape
    torch.Size([4, 3, 5, 5])
    """

    def __init__(
        self,
        num_features: int,
        bn_maf: float = 0.95,
        *,
        debiased: bool = True,
        ghost_batch: int | None = None,
        eps: float = 1e-5,
        sync: bool = False,
    ) -> None:
        super().__init__(num_features, eps=eps, momentum=1.0 - check_bn_maf(bn_maf))
        self.debiased = debiased
        self.ghost_batch = check_ghost_batch(ghost_batch)
        if sync and ghost_batch is not None:
            raise UserError(
                "sync_bn and ghost_batch contradict each other: synchronised BN normalises over "
                "the whole global batch, ghost BN over chunks of it; choose one."
            )
        self.sync = sync
        # Caffe's third BatchNorm blob: scale = maf * scale + 1 every training step.
        self.register_buffer("maf_scale", torch.zeros(()))

    @property
    def bn_maf(self) -> float:
        """Caffe's moving-average fraction, ``1 - momentum``."""
        return 1.0 - self.momentum

    @bn_maf.setter
    def bn_maf(self, value: float) -> None:
        self.momentum = 1.0 - check_bn_maf(value)

    def reset_running_stats(self) -> None:
        """Reset running mean / var / count as ``nn.BatchNorm2d`` and Caffe's scale to 0."""
        super().reset_running_stats()
        # nn.BatchNorm2d.__init__ calls this before maf_scale is registered.
        if "maf_scale" in self._buffers:
            self.maf_scale.zero_()

    def extra_repr(self) -> str:
        mode = "caffe" if self.debiased else "torch"
        return (
            f"{self.num_features}, eps={self.eps}, bn_maf={self.bn_maf:g}, "
            f"bn_mode={mode!r}, ghost_batch={self.ghost_batch}"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not self.training:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        if self.sync and _world_size() > 1:
            return self._sync_forward(x)
        if self.ghost_batch is None or self.ghost_batch == x.shape[0]:
            # One pass over x: native_batch_norm also returns the batch mean and the
            # 1 / sqrt(var + eps) it normalised with. Recomputing them with var_mean
            # cost ~20% of a ResNet-20 step on CPU (benchmarks/bench_train.py).
            out, mean, invstd = torch.native_batch_norm(
                x, self.weight, self.bias, None, None, True, 0.0, self.eps
            )
            with torch.no_grad():
                m = x.numel() // x.shape[1]  # values per channel
                biased = (invstd.float().reciprocal().square() - self.eps).clamp_min(0.0)
                # Caffe stores the unbiased variance: bias_correction = m / (m - 1).
                self._update_running_stats(mean, biased * (m / max(m - 1, 1)))
            return out
        return self._ghost_forward(x)

    def _ghost_forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.ghost_batch
        if n % g != 0:
            raise UserError(
                f"ghost_batch={g} must divide the batch size; got a batch of {n} images"
            )
        m = g * h * w  # values per channel per chunk; >= 2 since ghost_batch >= 2
        # Splitting the batch dimension is a view for NCHW and channels_last alike.
        # Statistics in float32 so that bf16 activations keep accurate moments.
        chunks = x.view(n // g, g, c, h, w).to(_stat_dtype(x))
        var, mean = torch.var_mean(chunks, dim=(1, 3, 4), correction=0, keepdim=True)
        # y = (x - mean) / sqrt(var + eps) * weight + bias as one multiply-add per value
        # (as fast as a loop of fused F.batch_norm calls on CPU, and compile-friendly).
        scale = torch.rsqrt(var + self.eps)
        shift = -mean * scale
        if self.affine:
            weight = self.weight.view(1, 1, c, 1, 1)
            scale, shift = scale * weight, shift * weight + self.bias.view(1, 1, c, 1, 1)
        out = torch.addcmul(shift, chunks, scale)
        with torch.no_grad():
            # Caffe stores the unbiased variance: bias_correction = m / (m - 1).
            unbiased = var.mean(dim=0).flatten() * (m / (m - 1))
            self._update_running_stats(mean.mean(dim=0).flatten(), unbiased)
        return out.reshape(n, c, h, w).to(x.dtype)

    def _sync_forward(self, x: torch.Tensor) -> torch.Tensor:
        # Hand-written because torch's SyncBatchNorm runs on GPUs only and drops
        # Caffe's debiased average; the differentiable all-reduce makes the
        # gradient flow through the global statistics as in SyncBatchNorm.
        from torch.distributed.nn.functional import all_reduce as _all_reduce

        def all_reduce(t: torch.Tensor) -> torch.Tensor:
            # Deprecated in newer torch for a private module; the public one still works.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return _all_reduce(t)

        n, c, h, w = x.shape
        xf = x.to(_stat_dtype(x))
        count = torch.full((1,), float(n * h * w), device=x.device)
        total = all_reduce(torch.cat([xf.sum(dim=(0, 2, 3)), count]))
        m = total[-1]
        mean = total[:c] / m
        centred = xf - mean.view(1, c, 1, 1)
        var = all_reduce(centred.square().sum(dim=(0, 2, 3))) / m  # two passes: exact
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            scale = scale * self.weight
        out = centred * scale.view(1, c, 1, 1)
        if self.affine:
            out = out + self.bias.view(1, c, 1, 1)
        with torch.no_grad():
            self._update_running_stats(mean.detach(), var.detach() * (m / (m - 1)))
        return out.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        if self.debiased:
            # Caffe: sum = maf*sum + stat, scale = maf*scale + 1, running = sum/scale.
            # Equivalently running += (stat - running) / scale, with no separate sums.
            # Through a 1-element view: torch.compile (inductor, CPU, torch 2.13) drops
            # in-place updates of a 0-dim float64 buffer (precision="fp64" + compile).
            scale = self.maf_scale.view(1)
            scale.mul_(self.bn_maf).add_(1.0)
            weight = scale.reciprocal()
        else:
            weight = self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), weight)
        self.running_var.lerp_(var.to(self.running_var.dtype), weight)


def _stat_dtype(x: torch.Tensor) -> torch.dtype:
    """float32 for low-precision activations, else the input's own (float64 stays float64)."""
    return torch.promote_types(x.dtype, torch.float32)


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def batch_norm_factory(
    bn_maf: float = 0.95,
    bn_mode: str = "caffe",
    ghost_batch: int | None = None,
    sync: bool = False,
) -> NormFactory:
    """Return ``norm(num_features) -> nn.Module`` for the given BN options.

    ``bn_mode="caffe"``: :class:`CaffeBatchNorm2d` (debiased running average).
    ``bn_mode="torch"``: ``nn.BatchNorm2d(momentum=1 - bn_maf)``, or a
    non-debiased :class:`CaffeBatchNorm2d` when ``ghost_batch`` is set.

    >>> type(batch_norm_factory(0.9, "torch")(4)).__name__
    'BatchNorm2d'
    >>> batch_norm_factory(0.95, "caffe", ghost_batch=125)(4)
    CaffeBatchNorm2d(4, eps=1e-05, bn_maf=0.95, bn_mode='caffe', ghost_batch=125)
    """
    bn_maf = check_bn_maf(bn_maf)
    check_bn_mode(bn_mode)
    check_ghost_batch(ghost_batch)
    if bn_mode == "torch" and ghost_batch is None and not sync:
        return partial(nn.BatchNorm2d, momentum=1.0 - bn_maf)
    return partial(
        CaffeBatchNorm2d,
        bn_maf=bn_maf,
        debiased=bn_mode == "caffe",
        ghost_batch=ghost_batch,
        sync=sync,
    )


def bn_modules(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """All batch-norm layers of ``model`` in definition order."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def set_bn_maf(model: nn.Module, bn_maf: float) -> int:
    """Set Caffe's moving-average fraction on every BN layer; return how many.

    Works for :class:`CaffeBatchNorm2d` and plain ``nn.BatchNorm2d`` (whose
    ``momentum`` becomes ``1 - bn_maf``); the accumulated running statistics are kept.
    """
    momentum = 1.0 - check_bn_maf(bn_maf)
    layers = bn_modules(model)
    for layer in layers:
        layer.momentum = momentum
    return len(layers)
