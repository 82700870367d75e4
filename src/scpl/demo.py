"""``scpl demo``: BP and the decoupled methods on one small CNN, side by side."""

from __future__ import annotations

import time
from typing import Optional

from .data import find_fashion_mnist, load_digits, load_fashion_mnist
from .errors import ConfigError
from .runner import TrainConfig, run

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


def run_method(method: str, dataset: str, epochs: int, batch_size: int, seed: int,
               train_limit: Optional[int] = None, lr: float = 1e-3) -> dict:
    """Train SmallCNN (4 blocks) with ``method`` through ``scpl train``'s runner, on the data set's own
    training split (no validation split: the demo keeps the last epoch); return test accuracy and
    training+evaluation seconds. One intra-op thread: this small model gains little from more, and
    a busy machine slows several threads down far more than one.
    """
    start = time.perf_counter()
    summary = run(TrainConfig(dataset=dataset, method=method, epochs=epochs, batch_size=batch_size,
                              seed=seed, train_limit=train_limit if dataset != "digits" else None, lr=lr,
                              val_fraction=0.0, progress=False, plots=False, threads=1))
    return {"method": method, "test_accuracy": summary["test_accuracy"],
            "seconds": time.perf_counter() - start}
