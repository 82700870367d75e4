"""ResNets for 32x32 inputs: ResNet-18 (CIFAR stem) and the CIFAR ResNet-32 / ResNet-110."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from ..errors import ConfigError


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN with an identity (or 1x1 conv+BN) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _stem(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


def _head(c: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


class ResNet18(nn.Sequential):
    """ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool); four children = the four
    stages (the stem joins the first, the classifier the last).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64):
        w = [width, 2 * width, 4 * width, 8 * width]

        def stage(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
            return [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)]

        super().__init__(
            nn.Sequential(_stem(in_channels, w[0]), *stage(w[0], w[0], 1)),
            nn.Sequential(*stage(w[0], w[1], 2)),
            nn.Sequential(*stage(w[1], w[2], 2)),
            nn.Sequential(*stage(w[2], w[3], 2), _head(w[3], num_classes)),
        )


class CifarResNet(nn.Sequential):
    """CIFAR ResNet-(6n+2), widths 16/32/64: children are the stem, the 3n residual units and
    the classifier, so that it can be cut between any two units (:meth:`block_counts`).
    """

    def __init__(self, depth: int = 32, num_classes: int = 10, in_channels: int = 3, width: int = 16):
        if (depth - 2) % 6:
            raise ConfigError(f"a CIFAR ResNet has depth 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        w = [width, 2 * width, 4 * width]
        units: list[nn.Module] = [_stem(in_channels, w[0])]
        c_in = w[0]
        for stage, c_out in enumerate(w):
            for i in range(n):
                units.append(BasicBlock(c_in, c_out, 2 if (i == 0 and stage > 0) else 1))
                c_in = c_out
        super().__init__(*units, _head(w[2], num_classes))
        self.depth = depth

    def block_counts(self, k: int, by: str = "equal", sample: Tensor | None = None) -> list[int]:
        """Layer counts cutting the model into ``k`` blocks.

        ``"equal"``: the stem and the 3n units as 3n+1 layers in near-equal groups (the
        classifier joins the last). ``"memory"``: groups of near-equal activation memory
        (bytes saved for backward, measured on ``sample``, default a batch of 8 at 32x32).
        """
        layers = len(self) - 1  # the classifier always joins the last block
        if not 1 <= k <= layers:
            raise ConfigError(f"ResNet-{self.depth} has {layers} cuttable layers; cannot make {k} blocks")
        if by == "equal":
            base, extra = divmod(layers, k)
            counts = [base + (i < extra) for i in range(k)]
        elif by == "memory":
            from ..balance import best_cut
            costs = _saved_bytes_per_layer(list(self)[:layers], sample)
            counts = best_cut(costs, k)
        else:
            raise ConfigError(f"by must be 'equal' or 'memory', got {by!r}")
        counts[-1] += 1
        return counts


def _saved_bytes_per_layer(layers: Sequence[nn.Module], sample: Tensor | None) -> list[float]:
    from ..memory import count_saved_bytes

    if sample is None:  # a batch of 8 at 32x32 with the stem's input channels
        stem_conv = next(m for m in layers[0].modules() if isinstance(m, nn.Conv2d))
        sample = torch.zeros(8, stem_conv.in_channels, 32, 32)
    x = sample
    costs = []
    for layer in layers:
        with count_saved_bytes(layer.parameters()) as counter:
            x = layer(x.detach().requires_grad_())
        costs.append(float(counter.total))
    return costs


def resnet32(**kwargs) -> CifarResNet:
    """CIFAR ResNet-32 (n = 5 units per stage); ``kwargs`` go to :class:`CifarResNet`."""
    return CifarResNet(32, **kwargs)


def resnet110(**kwargs) -> CifarResNet:
    """CIFAR ResNet-110 (n = 18 units per stage); ``kwargs`` go to :class:`CifarResNet`."""
    return CifarResNet(110, **kwargs)
