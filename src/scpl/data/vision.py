"""Small image data sets available offline: scikit-learn's digits and MNIST/Fashion-MNIST (IDX).

``digits_split`` and ``idx_split`` read the raw splits (the registry in :mod:`.datasets` builds
on them); ``load_digits`` and ``load_fashion_mnist`` are standardised ``TensorDataset`` pairs
for quick experiments (the demo's early-exit benchmark).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from .idx import read_idx

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
"""Where Debian's ``dataset-fashion-mnist`` installs the files; ``$SCPL_DATA/fashion-mnist`` is
searched first.
"""

IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
Split = tuple[Tensor, Tensor, Tensor, Tensor]


def _standardise(train: Tensor, *others: Tensor) -> list[Tensor]:
    """Float32 images standardised with the training set's mean and std (computed in NumPy)."""
    arrays = [t.numpy().astype(np.float32) for t in (train, *others)]
    mean, std = float(arrays[0].mean()), float(arrays[0].std())
    return [torch.from_numpy(((a - mean) / std).astype(np.float32)) for a in arrays]


def digits_split(test_fraction: float = 0.2, seed: int = 0) -> Split:
    """scikit-learn's 1,797 8x8 digits as float (N, 1, 8, 8) images (values 0..16) and int64
    labels, split by a seeded permutation (digits has no official test split).
    """
    images, labels = read_digits()
    x = torch.from_numpy(images)[:, None]
    y = torch.from_numpy(labels)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    n_test = int(round(len(y) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The digits as float32 (1797, 8, 8) images and int64 labels, read from the CSV file that
    scikit-learn ships (64 pixel values and the label per row): importing scikit-learn takes a
    second, which every rank and command paid; its loader is the fallback."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise ImportError("the digits data set needs scikit-learn: pip install 'scpl[data]'")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
        return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits as sk_load_digits  # another layout of the package

    bunch = sk_load_digits()
    return bunch.images.astype(np.float32), bunch.target.astype(np.int64)


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """:func:`digits_split` as (train, test) datasets, standardised with the training mean and std."""
    x_train, y_train, x_test, y_test = digits_split(test_fraction, seed)
    x_train, x_test = _standardise(x_train, x_test)
    return TensorDataset(x_train, y_train), TensorDataset(x_test, y_test)


def find_fashion_mnist(root: Optional[str | Path] = None) -> Optional[Path]:
    """The folder holding Fashion-MNIST's four IDX files, or None if none is found."""
    from .images import data_root

    candidates = [data_root("fashion-mnist", root)] + ([] if root else [Path(d) for d in FASHION_MNIST_DIRS])
    return next((folder for folder in candidates if _has_idx(folder)), None)


def _has_idx(folder: Path) -> bool:
    return (folder / f"{IDX_STEMS[0]}.gz").exists() or (folder / IDX_STEMS[0]).exists()


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder} has no {stem}[.gz]")


def idx_split(folder: Optional[Path], name: str, where: str, how: str) -> Split:
    """MNIST-style IDX files (``.gz`` or not) in ``folder`` as uint8 (N, 1, 28, 28) images and
    int64 labels; ``folder`` None raises FileNotFoundError saying what to put ``where``.
    """
    if folder is None or not _has_idx(folder):
        raise FileNotFoundError(
            f"{name} not found: put {', '.join(s + '.gz' for s in IDX_STEMS)} in {where} ({how}).")
    x_train, y_train, x_test, y_test = (torch.from_numpy(read_idx(_idx_file(folder, s)).copy())
                                        for s in IDX_STEMS)
    return x_train[:, None], y_train.long(), x_test[:, None], y_test.long()


def fashion_mnist_split(root: Optional[str | Path] = None) -> Split:
    """Fashion-MNIST from ``root``, else ``$SCPL_DATA/fashion-mnist`` or ``~/.scpl/data/fashion-mnist``
    (:func:`~scpl.data.images.data_root`), else Debian's install folder."""
    from .images import where_to_put

    where = str(root) if root else where_to_put("fashion-mnist")
    return idx_split(find_fashion_mnist(root), "Fashion-MNIST", where,
                     "on Debian/Ubuntu `apt-get install dataset-fashion-mnist` installs them system-wide; or "
                     "https://github.com/zalandoresearch/fashion-mnist")


def load_fashion_mnist(root: Optional[str | Path] = None,
                       train_limit: Optional[int] = None) -> tuple[TensorDataset, TensorDataset]:
    """Fashion-MNIST as (train, test) datasets of (1, 28, 28) images standardised with the
    training mean and std; ``train_limit`` keeps the first N training images.
    """
    x_train, y_train, x_test, y_test = fashion_mnist_split(root)
    x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    x_train, x_test = _standardise(x_train, x_test)
    return TensorDataset(x_train, y_train), TensorDataset(x_test, y_test)
