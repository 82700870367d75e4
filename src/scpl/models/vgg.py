"""VGG-8 in the SCPL layout: four blocks of 3x3 conv (no bias) + BatchNorm + ReLU, for 32x32 inputs."""

from __future__ import annotations

from torch import nn

from .cnn import conv_bn_relu


class VGG8(nn.Sequential):
    """Four children, one per block (SCPL's split):
    [3->128, 128->256, pool], [256->256, 256->512, pool], [512->512, pool], [512->512, pool, linear].

    ``width`` scales every channel count (1.0 is the paper's; small values for tests).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, image_size: int = 32):
        c = [max(1, int(v * width)) for v in (128, 256, 512)]
        final = image_size // 16
        super().__init__(
            nn.Sequential(*conv_bn_relu(in_channels, c[0]), *conv_bn_relu(c[0], c[1]), nn.MaxPool2d(2)),
            nn.Sequential(*conv_bn_relu(c[1], c[1]), *conv_bn_relu(c[1], c[2]), nn.MaxPool2d(2)),
            nn.Sequential(*conv_bn_relu(c[2], c[2]), nn.MaxPool2d(2)),
            nn.Sequential(*conv_bn_relu(c[2], c[2]), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(c[2] * final * final, num_classes)),
        )
