"""Small image data sets available offline: scikit-learn's digits and Fashion-MNIST (IDX)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .idx import read_idx

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
"""Where Debian's ``dataset-fashion-mnist`` installs the files; ``$SCPL_DATA/fashion-mnist`` is searched first."""


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[torch.Tensor]:
    mean, std = float(train.mean()), float(train.std())
    return [torch.from_numpy(((a - mean) / std).astype(np.float32)) for a in (train, *others)]


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 1,797 8x8 digits as (train, test) datasets of (1, 8, 8) float images.

    The split is a seeded permutation; images are standardised with the training mean and std.
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise ImportError("the digits data set needs scikit-learn: pip install 'scpl[data]'") from exc
    bunch = sk_load_digits()
    images = bunch.images.astype(np.float32)[:, None]
    labels = bunch.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    test_idx, train_idx = order[:n_test], order[n_test:]
    x_train, x_test = _standardise(images[train_idx], images[test_idx])
    return (
        TensorDataset(x_train, torch.from_numpy(labels[train_idx])),
        TensorDataset(x_test, torch.from_numpy(labels[test_idx])),
    )


def find_fashion_mnist(root: Optional[str | Path] = None) -> Optional[Path]:
    """The folder holding Fashion-MNIST's four IDX files, or None if none is found."""
    candidates = [Path(root)] if root else []
    if os.environ.get("SCPL_DATA"):
        candidates.append(Path(os.environ["SCPL_DATA"]) / "fashion-mnist")
    candidates += [Path(d) for d in FASHION_MNIST_DIRS]
    for folder in candidates:
        if (folder / "train-images-idx3-ubyte.gz").exists() or (folder / "train-images-idx3-ubyte").exists():
            return folder
    return None


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder} has no {stem}[.gz]")


def load_fashion_mnist(root: Optional[str | Path] = None, train_limit: Optional[int] = None) -> tuple[TensorDataset, TensorDataset]:
    """Fashion-MNIST as (train, test) datasets of (1, 28, 28) standardised images.

    ``root`` (or ``$SCPL_DATA/fashion-mnist``, or Debian's install folder) must hold the four
    IDX files. ``train_limit`` keeps the first N training images.
    """
    folder = find_fashion_mnist(root)
    if folder is None:
        raise FileNotFoundError(
            "Fashion-MNIST not found. On Debian/Ubuntu: `apt-get install dataset-fashion-mnist`; or put "
            "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
            "t10k-labels-idx1-ubyte.gz in $SCPL_DATA/fashion-mnist or pass root=."
        )
    x_train = read_idx(_idx_file(folder, "train-images-idx3-ubyte"))[:train_limit, None].astype(np.float32)
    y_train = read_idx(_idx_file(folder, "train-labels-idx1-ubyte"))[:train_limit].astype(np.int64)
    x_test = read_idx(_idx_file(folder, "t10k-images-idx3-ubyte"))[:, None].astype(np.float32)
    y_test = read_idx(_idx_file(folder, "t10k-labels-idx1-ubyte")).astype(np.int64)
    x_train_t, x_test_t = _standardise(x_train, x_test)
    return (
        TensorDataset(x_train_t, torch.from_numpy(y_train)),
        TensorDataset(x_test_t, torch.from_numpy(y_test)),
    )
