"""The architectures of section 6.2 / A.2 that did *not* super-converge on CIFAR-10.

The paper names a bottleneck ResNet-56 (Fig. 11a), a ResNeXt (Fig. 11b) and
DenseNets but gives no tables for them; these are the standard CIFAR forms:

- :class:`BottleneckResNet`: He et al.'s bottleneck blocks (1x1-3x3-1x1,
  expansion 4) over the same three stages of widths 16, 32, 64; depth ``9n + 2``
  (56: 6 blocks per stage); projection shortcuts (1x1 conv + BN) where the shape
  changes, stride 2 in the 3x3 conv.
- :class:`ResNeXt`: the same block with a grouped 3x3 conv (Xie et al. 2017).
  Default ResNeXt-29 (8x4d) with reduced widths, small enough for CPU tests;
  ``depth=56`` gives the depth named in Fig. 11b.
- :class:`DenseNet`: DenseNet-BC (Huang et al. 2017), growth 12, depth 40,
  compression 0.5, pre-activation (BN-ReLU-conv) layers.

All take a ``norm`` factory so they accept the paper's BN options, and use
Caffe's ``msra`` filler for convs like :class:`~.paper_resnet.PaperResNet`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .bn import NormFactory
from .common import blocks_from_depth, check_positive, classifier, conv1x1, conv3x3, msra_init_


class Bottleneck(nn.Module):
    """1x1 (reduce) - 3x3 (``groups``, ``stride``) - 1x1 (expand), each followed by BN;
    add the shortcut; ReLU. Projection shortcut when the shape changes."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        out_channels: int,
        norm: NormFactory,
        stride: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(in_channels, width)
        self.bn1 = norm(width)
        self.conv2 = conv3x3(width, width, stride, groups)
        self.bn2 = norm(width)
        self.conv3 = conv1x1(width, out_channels)
        self.bn3 = norm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                conv1x1(in_channels, out_channels, stride), norm(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class _BottleneckNet(nn.Module):
    """Stem conv 3x3, three stages of bottleneck blocks (stride 2 entering stages
    2 and 3), global average pool, [dropout], FC."""

    def __init__(
        self,
        blocks: int,
        stem_width: int,
        widths: tuple[int, int, int],
        expansion: int,
        groups: int,
        num_classes: int,
        in_channels: int,
        norm: NormFactory,
        dropout: float,
    ) -> None:
        super().__init__()
        check_positive("num_classes", num_classes)
        check_positive("in_channels", in_channels)
        self.stem = nn.Sequential(
            conv3x3(in_channels, stem_width), norm(stem_width), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        channels = stem_width
        for stage, width in enumerate(widths):
            for i in range(blocks):
                stride = 2 if stage > 0 and i == 0 else 1
                out = width * expansion
                layers.append(Bottleneck(channels, width, out, norm, stride, groups))
                channels = out
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = classifier(channels, num_classes, dropout)
        msra_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))))


class BottleneckResNet(_BottleneckNet):
    """Bottleneck ResNet of depth ``9n + 2`` (Fig. 11a: depth 56), widths 16/32/64 x 4.

    >>> BottleneckResNet(11)(torch.randn(2, 3, 32, 32)).shape
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
        n = blocks_from_depth(depth, 9, 2, "bottleneck ResNet")
        super().__init__(n, 16, (16, 32, 64), 4, 1, num_classes, in_channels, norm, dropout)


class ResNeXt(_BottleneckNet):
    """CIFAR ResNeXt of depth ``9n + 2``: grouped 3x3 convs with ``cardinality``
    groups of ``base_width`` channels (doubling per stage), expansion 2, stem 32.

    The default ResNeXt-29 8x4d has about 0.36M parameters (Xie et al.'s
    ResNeXt-29 8x64d has 34M); Fig. 11b's ResNeXt-56 is ``depth=56``.
    """

    def __init__(
        self,
        depth: int = 29,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        cardinality: int = 8,
        base_width: int = 4,
        norm: NormFactory = nn.BatchNorm2d,
        dropout: float = 0.0,
    ) -> None:
        n = blocks_from_depth(depth, 9, 2, "ResNeXt")
        check_positive("cardinality", cardinality)
        check_positive("base_width", base_width)
        width = cardinality * base_width
        widths = (width, 2 * width, 4 * width)
        super().__init__(n, 32, widths, 2, cardinality, num_classes, in_channels, norm, dropout)


class _DenseLayer(nn.Module):
    """DenseNet-BC layer: BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k); concatenated to the input."""

    def __init__(self, in_channels: int, growth: int, norm: NormFactory) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            norm(in_channels),
            nn.ReLU(),
            conv1x1(in_channels, 4 * growth),
            norm(4 * growth),
            nn.ReLU(),
            conv3x3(4 * growth, growth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.branch(x)], dim=1)


class DenseNet(nn.Module):
    """DenseNet-BC of depth ``6n + 4`` (default 40: 6 layers per dense block).

    >>> DenseNet(10, growth=4)(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        depth: int = 40,
        num_classes: int = 10,
        in_channels: int = 3,
        *,
        growth: int = 12,
        compression: float = 0.5,
        norm: NormFactory = nn.BatchNorm2d,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        n = blocks_from_depth(depth, 6, 4, "DenseNet-BC")
        check_positive("growth", growth)
        check_positive("num_classes", num_classes)
        check_positive("in_channels", in_channels)
        if not 0 < compression <= 1:
            raise UserError(f"DenseNet compression must be in (0, 1], got {compression!r}")
        channels = 2 * growth
        layers: list[nn.Module] = [conv3x3(in_channels, channels)]
        for block in range(3):
            for _ in range(n):
                layers.append(_DenseLayer(channels, growth, norm))
                channels += growth
            if block < 2:  # transition: BN-ReLU-conv1x1 (compress), 2x2 average pool
                out = int(channels * compression)
                layers += [norm(channels), nn.ReLU(), conv1x1(channels, out), nn.AvgPool2d(2)]
                channels = out
        layers += [norm(channels), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = classifier(channels, num_classes, dropout)
        msra_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)))
