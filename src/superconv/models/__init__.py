"""Models of the paper and its negative results, built by name.

>>> model = build_model("resnet56", bn_maf=0.95, ghost_batch=125)
>>> count_parameters(model)
806746

Names: ``resnet20/32/44/56/110`` and any ``resnet{6n+2}`` (the paper's ResNet,
Tables 2-4), ``bottleneck56``, ``resnext``, ``densenet`` (section 6.2 / A.2, no
super-convergence), ``lenet`` (Caffe's MNIST LeNet) and ``imagenet_resnet18`` /
``imagenet_resnet50`` (He et al.'s ImageNet ResNets, torchvision's layout; a plain
``resnet50`` is the paper's CIFAR ResNet of depth 6n+2).
"""

from __future__ import annotations

import re

from torch import nn

from ..errors import UserError, did_you_mean
from .bn import (
    BN_MODES,
    CaffeBatchNorm2d,
    batch_norm_factory,
    bn_modules,
    set_bn_maf,
)
from .imagenet_resnet import ImageNetResNet
from .lenet import LeNet
from .paper_resnet import DownsampleBlock, PaperResNet, StandardBlock, blocks_per_stage
from .variants import BottleneckResNet, DenseNet, ResNeXt

MODEL_NAMES = (
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "bottleneck56",
    "resnext",
    "resnext56",
    "densenet",
    "lenet",
    "imagenet_resnet18",
    "imagenet_resnet50",
)

__all__ = [
    "BN_MODES",
    "MODEL_NAMES",
    "BottleneckResNet",
    "CaffeBatchNorm2d",
    "DenseNet",
    "DownsampleBlock",
    "ImageNetResNet",
    "LeNet",
    "PaperResNet",
    "ResNeXt",
    "StandardBlock",
    "batch_norm_factory",
    "blocks_per_stage",
    "bn_modules",
    "build_model",
    "count_parameters",
    "set_bn_maf",
]


def build_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    *,
    bn_maf: float = 0.95,
    bn_mode: str = "caffe",
    ghost_batch: int | None = None,
    dropout: float = 0.0,
    image_size: int = 28,
    sync_bn: bool = False,
) -> nn.Module:
    """Build a model by name (see :data:`MODEL_NAMES`; also ``resnet{6n+2}``).

    Args:
        name: model name.
        num_classes: outputs of the last layer.
        in_channels: input image channels.
        bn_maf: Caffe's BN moving-average fraction (Table 1: 0.95 for CLR runs).
        bn_mode: ``"caffe"`` (debiased running average, the paper's) or
            ``"torch"`` (``nn.BatchNorm2d`` with ``momentum = 1 - bn_maf``).
        ghost_batch: images per BN chunk in training (paper: 125 = 1000 / 8 GPUs),
            or None for plain BN over the whole batch.
        dropout: dropout ratio before the last FC layer (paper A.2: 0.2).
        image_size: input side, used only by ``lenet`` (its first FC layer
            depends on it); the other models pool globally and accept any size.
        sync_bn: under DDP, normalise with statistics of the whole global batch
            (all-reduced) instead of each rank's own (the paper's setting).

    The BN options are validated for every model and ignored by ``lenet``,
    which has no BN.
    """
    norm = batch_norm_factory(bn_maf, bn_mode, ghost_batch, sync=sync_bn)
    common = {"num_classes": num_classes, "in_channels": in_channels, "dropout": dropout}
    resnet = re.fullmatch(r"resnet(\d+)", name) if isinstance(name, str) else None
    if resnet:
        return PaperResNet(int(resnet.group(1)), norm=norm, **common)
    if name == "bottleneck56":
        return BottleneckResNet(56, norm=norm, **common)
    if name == "resnext":
        return ResNeXt(norm=norm, **common)
    if name == "resnext56":  # Fig. 11b names a ResNeXt-56
        return ResNeXt(56, norm=norm, **common)
    if name == "densenet":
        return DenseNet(norm=norm, **common)
    if name == "lenet":
        return LeNet(image_size=image_size, **common)
    if name in ("imagenet_resnet18", "imagenet_resnet50"):
        return ImageNetResNet(int(name[len("imagenet_resnet") :]), norm=norm, **common)
    # A letter O for a zero (resnet2O) or l for a one is the usual typo: look there first.
    fixed = str(name).lower().replace("o", "0").replace("l", "1")
    known = {n.lower().replace("o", "0").replace("l", "1"): n for n in MODEL_NAMES}
    hint = f"; did you mean {known[fixed]!r}?" if fixed in known else did_you_mean(name, MODEL_NAMES)
    raise UserError(
        f"unknown model {name!r} (known: {', '.join(MODEL_NAMES)}, resnet{{6n+2}}){hint}"
    )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameter values (buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
