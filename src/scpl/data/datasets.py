"""Data sets by name, with a validation split carved from the training set.

``load_dataset(name)`` returns a :class:`DataBundle`: train / val / test datasets, the number
of classes, and what a model needs to consume them. Image sets keep uint8 (N, C, H, W)
tensors (4x smaller than float); the training loop turns batches into normalised floats on
the device (:mod:`scpl.data.augment`) with the per-channel mean and std of the *training*
part. Text sets are tokenised, and their vocabulary is built from the training part only
(never the validation or test texts); batches are padded per batch with id 0.

The validation split is a seeded permutation of the training set (``split_seed``, fixed
across training seeds so that runs with different seeds select on the same data).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional, Sequence, Sized

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from ..errors import ConfigError
from . import images, text, tokens
from .vision import digits_split, fashion_mnist_split, idx_split


@dataclass
class DataBundle:
    """Everything a run needs from a data set.

    ``kind`` is ``"image"`` (batches of uint8 (B, C, H, W); ``mean``/``std`` per channel on the
    [0, 1] scale) or ``"text"`` (batches of padded int64 token ids; ``vocab`` and ``collate``).
    """

    name: str
    kind: str
    train: Dataset
    val: Optional[Dataset]
    test: Dataset
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    vocab: Optional[tokens.Vocab] = None
    collate: Optional[Callable] = None

    @property
    def shape(self) -> tuple[int, ...]:
        """One sample's input shape ((C, H, W) for images)."""
        return tuple(self.train[0][0].shape)


def num_samples(dataset: Dataset) -> int:
    """The length of a map-style data set (torch's ``Dataset`` does not declare ``__len__``)."""
    if not isinstance(dataset, Sized):
        raise ConfigError(f"a data set needs a length (__len__), and {type(dataset).__name__} has none")
    return len(dataset)


def split_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) index arrays: a seeded permutation, ``round(n * val_fraction)`` go to val."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def channel_stats(x: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images on the [0, 1] scale."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1)
    mean = torch.zeros(x.shape[1], dtype=torch.float64)
    sq = torch.zeros(x.shape[1], dtype=torch.float64)
    for chunk in flat.split(1 << 24, dim=1):  # bounded memory on large sets
        c = chunk.double() / 255.0
        mean += c.sum(1)
        sq += (c * c).sum(1)
    count = flat.shape[1]
    mean /= count
    std = (sq / count - mean * mean).clamp(min=1e-12).sqrt()
    return mean.tolist(), std.tolist()


# --------------------------------------------------------------------------- image sets

def _mnist(root: Optional[str]) -> images.Split:
    folder = images.data_root("mnist", root)
    where = str(folder) if root else images.where_to_put("mnist")
    return idx_split(folder, "mnist", where, "from https://yann.lecun.com/exdb/mnist/ or a mirror")


def _digits(root: Optional[str]) -> images.Split:
    x_train, y_train, x_test, y_test = digits_split()  # values 0..16, a fixed 20% test split

    def to_uint8(x: Tensor) -> Tensor:
        return torch.round(x * (255.0 / 16.0)).to(torch.uint8)

    return to_uint8(x_train), y_train, to_uint8(x_test), y_test


IMAGE_SETS: dict[str, tuple[Callable[[Optional[str]], images.Split], int]] = {
    "digits": (_digits, 10),
    "fashion-mnist": (fashion_mnist_split, 10),
    "mnist": (_mnist, 10),
    "cifar10": (images.load_cifar10, 10),
    "cifar100": (images.load_cifar100, 100),
    "svhn": (images.load_svhn, 10),
    "stl10": (images.load_stl10, 10),
    "tiny-imagenet": (images.load_tiny_imagenet, 200),
}

TEXT_SETS: dict[str, Callable[..., text.TextSplits]] = {
    "debian": text.load_debian,
    "ag-news": text.load_ag_news,
    "dbpedia": text.load_dbpedia,
    "imdb": text.load_imdb,
    "sst2": text.load_sst2,
}

DATASETS = sorted([*IMAGE_SETS, *TEXT_SETS])


def _limit(x: Tensor, y: Tensor, n: Optional[int]) -> tuple[Tensor, Tensor]:
    return (x, y) if n is None else (x[:n], y[:n])


def _warn_missing_classes(name: str, labels: Sequence[int], num_classes: int, n: Optional[int]) -> None:
    """Warn when ``train_limit`` kept training samples of only some classes (a file sorted by
    class, as the Debian set's is): such a model cannot be tested on every class."""
    if n is None:
        return
    held = len(set(int(v) for v in labels))
    if held < num_classes:
        warnings.warn(f"train_limit={n} keeps the first {n} training samples of {name}, which hold {held} of "
                      f"its {num_classes} classes (its training file is sorted by class): test accuracy "
                      "will be low for that reason alone. Use all of the training set (train_limit: null) "
                      "to compare methods.", UserWarning, stacklevel=3)


def _warn_untrained_classes(name: str, train_labels: Sequence[int], test_labels: Sequence[int],
                            classes: Sequence[str]) -> None:
    """Warn when the test split holds classes the training split lacks: the model has an output
    for each that it never trains, and test accuracy is capped by their share."""
    missing = sorted(set(int(v) for v in test_labels) - set(int(v) for v in train_labels))
    if missing:
        share = sum(int(v) in missing for v in test_labels) / max(len(test_labels), 1)
        warnings.warn(f"{name}: the test split has classes the training split lacks ("
                      f"{', '.join(str(classes[c]) for c in missing)}): the model never trains them, so test "
                      f"accuracy is at most {100 * (1 - share):.1f} %; check the files or drop those classes",
                      UserWarning, stacklevel=3)


def _image_bundle(name: str, root: Optional[str], val_fraction: float, split_seed: int,
                  train_limit: Optional[int]) -> DataBundle:
    loader, num_classes = IMAGE_SETS[name]
    x_train, y_train, x_test, y_test = loader(root)
    x_train, y_train = _limit(x_train, y_train, train_limit)
    _warn_missing_classes(name, y_train.tolist(), num_classes, train_limit)
    tr, va = split_indices(len(y_train), val_fraction, split_seed)
    mean, std = channel_stats(x_train[tr])
    val = TensorDataset(x_train[va], y_train[va]) if len(va) else None
    return DataBundle(name, "image", TensorDataset(x_train[tr], y_train[tr]), val,
                      TensorDataset(x_test, y_test), num_classes,
                      [str(i) for i in range(num_classes)], mean, std)


def _text_bundle(name: str, root: Optional[str], val_fraction: float, split_seed: int,
                 train_limit: Optional[int], max_len: int, min_freq: int,
                 max_vocab: Optional[int]) -> DataBundle:
    train_texts, train_labels, test_texts, test_labels, classes = TEXT_SETS[name](root)
    if train_limit is not None:
        train_texts, train_labels = train_texts[:train_limit], train_labels[:train_limit]
        _warn_missing_classes(name, train_labels, len(classes), train_limit)
    else:
        _warn_untrained_classes(name, train_labels, test_labels, classes)
    tr, va = split_indices(len(train_labels), val_fraction, split_seed)
    vocab = tokens.Vocab.build([tokens.tokenize(train_texts[i]) for i in tr], min_freq=min_freq,
                               max_size=max_vocab)  # training part only

    def dataset(idx: Iterable[int], texts: Sequence[str], labels: Sequence[int]) -> tokens.TokenDataset:
        return tokens.TokenDataset.from_texts([texts[i] for i in idx], [labels[i] for i in idx], vocab,
                                              max_len)

    val = dataset(va, train_texts, train_labels) if len(va) else None
    return DataBundle(name, "text", dataset(tr, train_texts, train_labels), val,
                      dataset(range(len(test_labels)), test_texts, test_labels), len(classes), list(classes),
                      vocab=vocab, collate=tokens.pad_collate)


def load_dataset(name: str, root: Optional[str] = None, *, val_fraction: float = 0.1, split_seed: int = 0,
                 train_limit: Optional[int] = None, max_len: int = 256, min_freq: int = 1,
                 max_vocab: Optional[int] = None) -> DataBundle:
    """The data set ``name`` (one of :data:`DATASETS`) as a :class:`DataBundle`.

    ``train_limit`` keeps the first N official training samples before the validation split (a
    warning says so when they do not hold every class, e.g. of the Debian set, sorted by class);
    ``max_len``/``min_freq``/``max_vocab`` apply to text sets (tokens per sample, vocabulary).
    Missing files raise ``FileNotFoundError`` saying where to put them or how to get them.
    """
    if name in IMAGE_SETS:
        return _image_bundle(name, root, val_fraction, split_seed, train_limit)
    if name in TEXT_SETS:
        return _text_bundle(name, root, val_fraction, split_seed, train_limit, max_len, min_freq, max_vocab)
    raise ConfigError(f"unknown data set {name!r}; choose one of {DATASETS}")
