"""Small pieces shared by the models: convolutions, Caffe's fillers, the classifier head."""

from __future__ import annotations

import math

from torch import nn

from ..errors import UserError


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BN layer follows every conv)."""
    return nn.Conv2d(
        in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False
    )


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (a BN layer follows every conv)."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)


def check_dropout(dropout: float) -> float:
    """Return ``dropout`` as a float, or raise ``UserError`` (a ``ValueError``) unless it is in [0, 1)."""
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise UserError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    return float(dropout)


def check_positive(name: str, value: int) -> int:
    """Return ``value``, or raise ``UserError`` (a ``ValueError``) unless it is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    return value


def blocks_from_depth(depth: int, step: int, extra: int, what: str) -> int:
    """Return n for ``depth = step * n + extra`` with n >= 1, or raise ``UserError`` (a ``ValueError``).

    ``step`` is the number of weight layers one block adds to the three stages
    (paper ResNet: 3 stages x 2 convs = 6; bottleneck: 9; DenseNet-BC: 6) and
    ``extra`` counts the other layers (stem conv, FC, transitions).

    >>> blocks_from_depth(56, 6, 2, "paper ResNet")
    9
    """
    if (
        isinstance(depth, bool)
        or not isinstance(depth, int)
        or depth < step + extra
        or (depth - extra) % step
    ):
        hint = ""
        if isinstance(depth, int) and not isinstance(depth, bool):
            hint = f"; nearest valid depth: {step * max(1, round((depth - extra) / step)) + extra}"
        raise UserError(
            f"{what} depth must be {step}n+{extra} with n >= 1 "
            f"({', '.join(str(step * k + extra) for k in (1, 2, 3))}, ...), got {depth!r}{hint}"
        )
    return (depth - extra) // step


def classifier(in_features: int, num_classes: int, dropout: float = 0.0) -> nn.Sequential:
    """The final FC layer, preceded by ``nn.Dropout`` when ``dropout > 0``.

    The paper (A.2, Fig. 9b) reports a small gain with a dropout ratio of 0.2 but
    does not say where the layer sits; we put it on the pooled features before
    the FC layer, the usual place in ResNets.
    """
    dropout = check_dropout(dropout)
    head = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(*head, nn.Linear(in_features, num_classes))


def msra_init_(model: nn.Module) -> nn.Module:
    """Caffe's ``msra`` filler on every conv; BN weight 1, bias 0. Returns ``model``.

    Caffe's MSRAFiller draws N(0, 2 / n) with ``n = fan_in = C_in * k * k`` by
    default (``variance_norm: FAN_IN``). In the paper's ResNet every conv but the
    first keeps its channel count, so fan_in equals fan_out there anyway. Linear
    layers keep PyTorch's default initialisation.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return model


def xavier_init_(model: nn.Module) -> nn.Module:
    """Caffe's ``xavier`` filler on convs and linears, biases 0. Returns ``model``.

    Caffe's XavierFiller is U(-a, a) with ``a = sqrt(3 / fan_in)`` by default, i.e.
    variance ``1 / fan_in`` (not Glorot's ``2 / (fan_in + fan_out)``).
    """
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            fan_in = module.weight[0].numel()
            bound = math.sqrt(3.0 / fan_in)
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model
