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


class Mlp(nn.Module):
    """A pre-norm residual unit, as in a ViT block."""

    def __init__(self, dim, p=0.1):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(dim), nn.Linear(dim, 2 * dim), nn.Linear(2 * dim, dim)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        return x + self.drop(self.fc2(torch.relu(self.fc1(self.norm(x)))))


class TinyViT(nn.Module):
    """A user's ViT-like model: its class token and position embedding are parameters used
    outside any submodule, its units an nn.Sequential (traced by torch.fx)."""

    def __init__(self, dim=8, depth=3, num_classes=4, p=0.1):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 4, 4)  # 8x8 images: 4 patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 5, dim) * 0.02)
        self.blocks = nn.Sequential(*[Mlp(dim, p) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def traced_case():
    seed_everything(0)
    model = DecoupledModel(TinyViT(), ["blocks.1", "blocks.2"], method="scpl", num_classes=4,
                           example_input=torch.zeros(2, 1, 8, 8))
    for block in model.blocks:
        block.rng_seed = 7
    return model, synthetic_loader(n=64, batch_size=16), 2, 2


def tiny_bert(num_classes=3):
    """A 3-layer BERT from its configuration (no download), dropout on."""
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=num_classes, pad_token_id=0))


class NamedBatches(VariableLengthBatches):
    """The token batches as Hugging Face keyword inputs."""

    def __iter__(self):
        return iter([({"input_ids": t, "attention_mask": (t != 0).long()}, y) for t, y in self.data])


def bert_case():
    seed_everything(0)
    ones = torch.ones(2, 4, dtype=torch.long)
    example = {"input_ids": ones, "attention_mask": ones}
    model = DecoupledModel(tiny_bert(), ["bert.encoder.layer.1", "bert.encoder.layer.2"], method="scpl",
                           num_classes=3, example_input=example)
    for block in model.blocks:
        block.rng_seed = 7
    return model, NamedBatches(), 2, 1


CASES = {"extension": extension_case, "cnn": cnn_case, "dropout": dropout_case, "text": text_case,
         "contsup": contsup_case, "dascpl": cnn_case, "traced": traced_case, "bert": bert_case}

# Extra arguments of fit() per case: DASCPL switches block 2 on in epoch 1 and freezes block 0 then.
FIT_KWARGS = {"dascpl": dict(block_schedule=BlockSchedule(activate=[0, 0, 1], freeze=[1, None, None]))}
