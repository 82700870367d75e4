"""Every reference model at a small size, with one batch; shared by test_models and its torchrun script."""

import torch

from scpl import DecoupledModel, seed_everything
from scpl.models import create_model

IMAGE = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
TOKENS = torch.randint(1, 50, (8, 9), generator=torch.Generator().manual_seed(0))
TOKENS[:3, 6:] = 0  # padding
LABELS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # every micro-batch of 4 has positive pairs

SPECS = {
    "vgg8": (dict(width=0.0625), IMAGE),
    "resnet18": (dict(width=4), IMAGE),
    "resnet32": (dict(width=4), IMAGE),
    "resnet110": (dict(width=2), IMAGE),
    "text_lstm": (dict(vocab_size=50, dim=12, hidden=6), TOKENS),
    "text_transformer": (dict(vocab_size=50, dim=12, heads=2, dropout=0.0), TOKENS),
}


def build(name: str) -> tuple[DecoupledModel, torch.Tensor]:
    kwargs, x = SPECS[name]
    seed_everything(0)
    net = create_model(name, num_classes=4, **kwargs)
    blocks = net.block_counts(4) if hasattr(net, "block_counts") else None
    return DecoupledModel(net, blocks, method="scpl", num_classes=4, example_input=x[:2], exits=True), x
