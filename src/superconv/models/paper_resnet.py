"""The paper's CIFAR ResNet, exactly as in its Tables 2-4 (Smith & Topin 2017, A.1).

Layout for depth ``6n + 2`` (ResNet-56: n = 9), all convs 3x3 without bias::

    conv 16, BN, ReLU                       # pre-stage (Table 4; "stride 2" there is a typo)
    n   x StandardBlock(16)                 # Table 2
          DownsampleBlock(16)   -> 32 ch    # Table 3
    n-1 x StandardBlock(32)
          DownsampleBlock(32)   -> 64 ch
    n-1 x StandardBlock(64)
    global average pool (8x8 on CIFAR), [dropout], FC

Unlike He et al.'s CIFAR ResNet, the downsample block works at the *narrow*
width (its convs keep numChannels) and doubles the channels afterwards by
concatenating zeros, so the stages hold n + 1, n and n - 1 blocks of widths 16,
32 and 64. This reading gives exactly 223,450 / 806,746 / 1,681,690 parameters
for ResNet-20 / 56 / 110 (the often-quoted 0.27M / 0.85M / 1.7M are He et al.'s).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .bn import NormFactory
from .common import blocks_from_depth, check_positive, classifier, conv3x3, msra_init_

STAGE_WIDTHS = (16, 32, 64)  # Table 4: numChannels of the three stages


def blocks_per_stage(depth: int) -> int:
    """Return n for a paper ResNet of depth ``6n + 2``, or raise ``UserError`` (a ``ValueError``).

    >>> blocks_per_stage(56)
    9
    """
    return blocks_from_depth(depth, 6, 2, "paper ResNet")


class StandardBlock(nn.Module):
    """Table 2: conv-BN-ReLU-conv-BN, add the input, ReLU (3x3 convs, padding 1)."""

    def __init__(self, channels: int, norm: NormFactory, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv3x3(channels, channels, stride)
        self.bn1 = norm(channels)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = norm(channels)
        self.shortcut: nn.Module = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In place: BN's backward needs its input, not its output, so the ReLU and the
        # residual sum may overwrite BN outputs (two fewer activation-sized tensors per
        # block; benchmarks/bench_train.py, section ab).
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out, inplace=True)


class CeilAvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d(kernel_size, stride, padding=0, ceil_mode=True)``, also under torch.compile.

    Inductor (CPU, torch 2.13) differentiates ``avg_pool2d`` with ``ceil_mode=True``
    wrongly at the clipped border windows (gradients off by ~20% there; found by
    tests/test_fast_path.py, checked against finite differences). Under compile this
    computes the same numbers another way: a sum pool of the input padded with zeros
    on the bottom and right, divided by the number of real pixels in each window.
    Eager mode runs the native op.
    """

    def __init__(self, kernel_size: int, stride: int) -> None:
        super().__init__(kernel_size, stride=stride, padding=0, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            return super().forward(x)
        k, s = self.kernel_size, self.stride
        h, w = x.shape[-2:]
        pad_h, pad_w = self._ceil_pad(h), self._ceil_pad(w)
        sums = F.avg_pool2d(F.pad(x, (0, pad_w, 0, pad_h)), k, s, divisor_override=1)
        ones = torch.ones(1, 1, h, w, dtype=x.dtype, device=x.device)
        counts = F.avg_pool2d(F.pad(ones, (0, pad_w, 0, pad_h)), k, s, divisor_override=1)
        return sums / counts

    def _ceil_pad(self, n: int) -> int:
        """Zeros to add after ``n`` pixels so that ceil mode's windows are whole."""
        k, s = self.kernel_size, self.stride
        out = -(-(n - k) // s) + 1
        if (out - 1) * s >= n:  # the last window must start inside the image
            out -= 1
        return max(0, (out - 1) * s + k - n)


class DownsampleBlock(StandardBlock):
    """Table 3: a standard block whose first conv has stride 2 and whose shortcut is
    a 3x3 stride-2 average pool of the input; after the ReLU, zeros are
    concatenated to double the channels.

    Caffe rounds pooling output sizes up, hence ``ceil_mode=True``: 32x32 -> 16x16
    and 16x16 -> 8x8, the sizes of the stride-2 conv path. Caffe and PyTorch both
    divide a window clipped at the border by its clipped size.
    """

    def __init__(self, channels: int, norm: NormFactory) -> None:
        super().__init__(channels, norm, stride=2)
        self.shortcut = CeilAvgPool2d(3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return torch.cat([out, torch.zeros_like(out)], dim=1)


class PaperResNet(nn.Module):
    """The paper's ResNet of depth ``6n + 2`` (Tables 2-4); ResNet-56 by default.

    Args:
        depth: 20, 32, 44, 56, 110 or any ``6n + 2``.
        num_classes: outputs of the FC layer.
        in_channels: input image channels.
        norm: ``norm(num_features) -> nn.Module``, e.g. from
            :func:`superconv.models.bn.batch_norm_factory`.
        dropout: dropout ratio before the FC layer (paper A.2: 0.2 helps a little).

    The final pooling is global, which equals Table 4's 8x8 pool on 32x32 inputs
    and also accepts other sizes (e.g. 28x28 MNIST).

    >>> PaperResNet(20)(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 56,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        norm: NormFactory = nn.BatchNorm2d,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n = blocks_per_stage(depth)
        check_positive("num_classes", num_classes)
        check_positive("in_channels", in_channels)
        first, *_ = STAGE_WIDTHS
        self.stem = nn.Sequential(conv3x3(in_channels, first), norm(first), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        for stage, width in enumerate(STAGE_WIDTHS):
            blocks += [StandardBlock(width, norm) for _ in range(n if stage == 0 else n - 1)]
            if stage < len(STAGE_WIDTHS) - 1:
                blocks.append(DownsampleBlock(width, norm))
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = classifier(STAGE_WIDTHS[-1], num_classes, dropout)
        msra_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))))
