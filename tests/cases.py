"""Models and data shared by the executor-equivalence tests and the torchrun scripts."""

import torch
from torch import nn

from conftest import synthetic_loader, tiny_cnn
from scpl import DecoupledModel, seed_everything
from scpl.heads import masked_mean
from scpl.progressive import BlockSchedule


def cnn_case():
    seed_everything(0)
    model = DecoupledModel(tiny_cnn(), [3, 3, 2], method="scpl", num_classes=4,
                           example_input=torch.zeros(2, 1, 8, 8), exits=True)
    return model, synthetic_loader(n=96, batch_size=16), 2, 2


def dropout_case():
    seed_everything(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.3),
                        nn.Linear(32, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 4))
    model = DecoupledModel(net, [4, 4], method="greedy", num_classes=4, example_input=torch.zeros(2, 1, 8, 8))
    for block in model.blocks:
        block.rng_seed = 123
    return model, synthetic_loader(n=64, batch_size=16), 2, 1


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 8, padding_idx=0)

    def forward(self, tokens):
        return self.emb(tokens), tokens != 0


class Mixer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, seq, mask):
        return torch.relu(self.lin(seq)) * mask.unsqueeze(-1), mask


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, seq, mask):
        return self.fc(masked_mean(seq, mask))


class VariableLengthBatches:
    """Token batches whose sequence length changes from batch to batch (padding id 0)."""

    def __init__(self, seed=0, batches=6):
        g = torch.Generator().manual_seed(seed)
        self.data = []
        for b in range(batches):
            length = 3 + b % 4
            tokens = torch.randint(1, 30, (8, length), generator=g)
            tokens[:4, length - 1] = 0
            self.data.append((tokens, torch.arange(8) % 3))

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)


def text_case():
    seed_everything(0)
    model = DecoupledModel([Embed(), Mixer(), Head()], method="scpl", num_classes=3,
                           example_input=torch.ones(2, 4, dtype=torch.long))
    return model, VariableLengthBatches(), 2, 1


def contsup_case():
    seed_everything(0)
    model = DecoupledModel(tiny_cnn(), [3, 3, 2], method="scpl", num_classes=4,
                           example_input=torch.zeros(2, 1, 8, 8), contsup="R1E")
    return model, synthetic_loader(n=64, batch_size=16), 2, 2


def extension_case():
    """The cnn case trained for an epoch, then extended by two blocks (five blocks, three frozen)."""
    from scpl.extension import extend

    base, loader, _, _ = cnn_case()
    base.fit(loader, epochs=1)
    seed_everything(1)
    model = extend(base, [nn.Sequential(nn.Linear(4, 16), nn.ReLU()), nn.Linear(16, 4)],
                   example_input=torch.zeros(2, 1, 8, 8), method="greedy")
    return model, loader, 2, 2


CASES = {"extension": extension_case, "cnn": cnn_case, "dropout": dropout_case, "text": text_case,
         "contsup": contsup_case, "dascpl": cnn_case}

# Extra arguments of fit() per case: DASCPL switches block 2 on in epoch 1 and freezes block 0 then.
FIT_KWARGS = {"dascpl": dict(block_schedule=BlockSchedule(activate=[0, 0, 1], freeze=[1, None, None]))}
