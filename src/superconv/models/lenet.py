"""Caffe's LeNet for MNIST (examples/mnist/lenet_train_test.prototxt).

conv 5x5x20, max-pool 2, conv 5x5x50, max-pool 2, fc 500, ReLU, fc 10. As in the
prototxt there is no ReLU after the convs and no batch norm; weights use Caffe's
``xavier`` filler and biases start at 0; pooling rounds sizes up as Caffe does
(no effect on 28x28 inputs). On 1x28x28 inputs: 431,080 parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .common import check_positive, classifier, xavier_init_


class LeNet(nn.Module):
    """Caffe's LeNet; ``image_size`` (square) sets the input of the first FC layer.

    ``dropout`` (default 0, Caffe's net has none) goes before the last FC layer.

    >>> LeNet()(torch.randn(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        *,
        image_size: int = 28,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        check_positive("num_classes", num_classes)
        check_positive("in_channels", in_channels)
        check_positive("image_size", image_size)
        side = image_size
        for _ in range(2):  # 5x5 valid conv, then 2x2 max-pool rounding up as Caffe does
            side = -(-(side - 4) // 2)
        if side < 1:
            raise UserError(f"LeNet needs images of at least 13x13, got image_size={image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 20, 5),
            nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(20, 50, 5),
            nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Flatten(),
            nn.Linear(50 * side * side, 500),
            nn.ReLU(inplace=True),
        )
        self.fc = classifier(500, num_classes, dropout)
        xavier_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))
