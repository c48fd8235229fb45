"""ImageNet ResNet-18 and ResNet-50 (He et al. 2016, Table 1), without torchvision.

The layout of torchvision's ``resnet18`` / ``resnet50`` (v1.5: the bottleneck's
stride sits on its 3x3 conv), so the parameter counts are theirs: 11,689,512 and
25,557,032 with 1,000 classes::

    conv 7x7/2 64, BN, ReLU, max pool 3x3/2
    stages of [2, 2, 2, 2] basic blocks (ResNet-18) or [3, 4, 6, 3] bottlenecks
    (ResNet-50) at widths 64, 128, 256, 512 (x4 out for bottlenecks), stride 2
    from the second stage on, a 1x1 conv + BN shortcut where the shape changes
    global average pool, [dropout], FC

Initialisation: He normal (fan_out) on convs, BN weight 1 and bias 0, and, with
``zero_init_residual`` (Goyal et al. 2017, used for large-batch / large-LR runs),
the last BN of each residual branch starts at weight 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .bn import NormFactory
from .common import check_positive, classifier, conv1x1, conv3x3

STAGE_WIDTHS = (64, 128, 256, 512)
LAYOUTS = {18: ("basic", (2, 2, 2, 2)), 50: ("bottleneck", (3, 4, 6, 3))}


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34)."""

    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_ch, width, stride)
        self.bn1 = norm(width)
        self.conv2 = conv3x3(width, width)
        self.bn2 = norm(width)
        self.shortcut = _shortcut(in_ch, width, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x), inplace=True)

    def last_bn(self) -> nn.Module:
        return self.bn2


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, v1.5), 1x1 expand x4 (ResNet-50/101/152)."""

    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = conv1x1(in_ch, width)
        self.bn1 = norm(width)
        self.conv2 = conv3x3(width, width, stride)
        self.bn2 = norm(width)
        self.conv3 = conv1x1(width, out_ch)
        self.bn3 = norm(out_ch)
        self.shortcut = _shortcut(in_ch, out_ch, stride, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = F.relu(self.bn2(self.conv2(out)), inplace=True)
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x), inplace=True)

    def last_bn(self) -> nn.Module:
        return self.bn3


def _shortcut(in_ch: int, out_ch: int, stride: int, norm: NormFactory) -> nn.Module:
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), norm(out_ch))


class ImageNetResNet(nn.Module):
    """ResNet-18 or ResNet-50 for ImageNet-sized inputs (any size >= 32 works: global pool)."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 1000,
        in_channels: int = 3,
        *,
        norm: NormFactory = nn.BatchNorm2d,
        dropout: float = 0.0,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        if depth not in LAYOUTS:
            raise UserError(f"ImageNet ResNet depth must be 18 or 50, got {depth!r}")
        check_positive("num_classes", num_classes)
        kind, blocks = LAYOUTS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
            norm(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        layers: list[nn.Module] = []
        in_ch = 64
        for stage, (width, count) in enumerate(zip(STAGE_WIDTHS, blocks)):
            for i in range(count):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(block(in_ch, width, stride, norm))
                in_ch = width * block.expansion
        self.blocks = nn.Sequential(*layers)
        self.head = classifier(in_ch, num_classes, dropout)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_residual:
            for layer in layers:
                bn = layer.last_bn()  # type: ignore[operator]
                if getattr(bn, "weight", None) is not None:
                    nn.init.zeros_(bn.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
