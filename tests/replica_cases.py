"""Models for the replicated-stage tests: no BatchNorm, so that R replicas on their shards
compute what one rank computes on the whole batch (BatchNorm would use each shard's statistics)."""

import torch
from torch import nn

from conftest import synthetic_loader
from scpl import DecoupledModel, seed_everything

METHODS = {"scpl": dict(method="scpl", exits=True), "deinforeg": dict(method="deinforeg", projector="mlp"),
           "greedy": dict(method="greedy", features="pool2")}  # greedy's default conv head has BatchNorm


def build(method: str) -> DecoupledModel:
    """The model of ``method``; ``"traced"``: a ViT-like model (no dropout: each replica would draw
    its own masks) cut by name, with SCPL and exits."""
    seed_everything(0)
    if method == "traced":
        from cases import TinyViT

        return DecoupledModel(TinyViT(p=0.0), ["blocks.1"], num_classes=4,
                              example_input=torch.zeros(2, 1, 8, 8), method="scpl", exits=True)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(96, 4))
    return DecoupledModel(net, [2, 5], num_classes=4, example_input=torch.zeros(2, 1, 8, 8),
                          **METHODS[method])


def loader():
    return synthetic_loader(n=96, batch_size=16)
