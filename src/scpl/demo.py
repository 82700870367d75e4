"""``scpl demo``: BP and the decoupled methods on one small CNN, side by side."""

from __future__ import annotations

import time
from typing import Optional

import torch
from torch.utils.data import DataLoader

from .errors import ConfigError
from .data import find_fashion_mnist, load_digits, load_fashion_mnist
from .model import DecoupledModel
from .models import SmallCNN
from .seed import seed_everything

DEMO_METHODS = ("bp", "scpl", "deinforeg", "greedy")


def load_demo_data(dataset: str, train_limit: Optional[int] = None):
    """(train, test, name) for ``digits``, ``fashion-mnist`` or ``auto`` (Fashion-MNIST if present)."""
    if dataset == "auto":
        dataset = "fashion-mnist" if find_fashion_mnist() is not None else "digits"
    if dataset == "digits":
        train, test = load_digits()
    elif dataset == "fashion-mnist":
        train, test = load_fashion_mnist(train_limit=train_limit)
    else:
        raise ConfigError(f"unknown demo data set {dataset!r}; choose digits, fashion-mnist or auto")
    return train, test, dataset


def run_method(method: str, train, test, epochs: int, batch_size: int, seed: int, lr: float = 1e-3) -> dict:
    """Train a fresh SmallCNN with ``method``; return test accuracy and training+evaluation seconds."""
    generator = seed_everything(seed)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, generator=generator, drop_last=True)
    test_loader = DataLoader(test, batch_size=512)
    example = train[0][0].unsqueeze(0)
    start = time.perf_counter()
    model = DecoupledModel(
        SmallCNN(in_channels=example.shape[1], num_classes=10),
        method=method,
        num_classes=10,
        example_input=example,
        optimizer=lambda params: torch.optim.Adam(params, lr=lr),
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs),
    )
    model.fit(loader, epochs=epochs)
    accuracy = model.evaluate(test_loader)["accuracy"]
    return {"method": method, "test_accuracy": accuracy, "seconds": time.perf_counter() - start}
