"""A small CNN in four blocks, for the demo and tests (digits 8x8, Fashion-MNIST 28x28)."""

from __future__ import annotations

from typing import Sequence

from torch import nn


def conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    """A 3x3 conv (padding 1, no bias), BatchNorm and ReLU, as a list of layers."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(nn.Sequential):
    """Four children, one per block: conv | conv, pool | conv, pool | conv, global pool, linear."""

    default_blocks = None  # one block per child

    def __init__(self, in_channels: int = 1, num_classes: int = 10,
                 widths: Sequence[int] = (32, 64, 128, 128)):
        w1, w2, w3, w4 = widths
        super().__init__(
            nn.Sequential(*conv_bn_relu(in_channels, w1)),
            nn.Sequential(*conv_bn_relu(w1, w2), nn.MaxPool2d(2)),
            nn.Sequential(*conv_bn_relu(w2, w3), nn.MaxPool2d(2)),
            nn.Sequential(*conv_bn_relu(w3, w4), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(w4, num_classes)),
        )
