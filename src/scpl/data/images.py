"""Readers for the on-disk formats of the standard image data sets, as their official downloads lay them out.

Every loader returns ``(x_train, y_train, x_test, y_test)``: x are ``torch.uint8`` tensors of shape
(N, C, H, W), channels first in RGB order; y are ``torch.int64`` tensors of shape (N,) with labels
0..num_classes-1. Nothing is normalised and no validation split is made.

Formats (paths relative to the data set's folder, see :func:`data_root`):

- CIFAR-10 (``cifar-10-batches-py/``): ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``, Python
  pickles of dicts with bytes keys; ``b"data"`` is uint8 (N, 3072), each row 1024 R, 1024 G, 1024 B
  values of a row-major 32x32 image; ``b"labels"`` a list of ints 0..9.
- CIFAR-100 (``cifar-100-python/``): ``train`` and ``test`` pickles, ``b"data"`` as CIFAR-10,
  ``b"fine_labels"`` (0..99) and ``b"coarse_labels"`` (0..19).
- SVHN (the folder itself): ``train_32x32.mat``, ``test_32x32.mat`` (and ``extra_32x32.mat``), Matlab v5
  files; ``X`` is uint8 (32, 32, 3, N), ``y`` is (N, 1) with labels 1..10, where 10 is the digit 0.
- STL-10 (``stl10_binary/``): ``train_X.bin``, ``train_y.bin``, ``test_X.bin``, ``test_y.bin``; raw
  uint8, each image 3x96x96 with every channel stored column-major; labels are bytes 1..10.
- Tiny-ImageNet (``tiny-imagenet-200/``): ``wnids.txt`` (label = line index),
  ``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``
  (tab separated: file name, wnid, box). The val split is returned as the test split.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

Split = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
PathLike = Optional[str | os.PathLike]

DEFAULT_DATA_DIR = "~/.scpl/data"


@dataclass(frozen=True)
class _Source:
    title: str
    name: str  # the folder under $SCPL_DATA
    subdir: Optional[str]  # the folder the official archive extracts to, if any
    url: str


CIFAR10 = _Source("CIFAR-10", "cifar10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
CIFAR100 = _Source("CIFAR-100", "cifar100", "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")
SVHN = _Source("SVHN", "svhn", None,
               "http://ufldl.stanford.edu/housenumbers/ (the 'Format 2' files *_32x32.mat)")
STL10 = _Source("STL-10", "stl10", "stl10_binary", "https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz")
TINY_IMAGENET = _Source("Tiny-ImageNet", "tiny-imagenet", "tiny-imagenet-200", "http://cs231n.stanford.edu/tiny-imagenet-200.zip")


def data_root(name: str, root: PathLike = None) -> Path:
    """The folder of data set ``name``: ``root`` if given, else ``$SCPL_DATA/name``, else
    ``~/.scpl/data/name``.
    """
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("SCPL_DATA"):
        return Path(os.environ["SCPL_DATA"]).expanduser() / name
    return Path(DEFAULT_DATA_DIR).expanduser() / name


def where_to_put(name: str) -> str:
    """Where data set ``name`` is looked for, for error messages: the root given (``--data-root``),
    else ``$SCPL_DATA/name`` when $SCPL_DATA is set, else ``~/.scpl/data/name``."""
    if os.environ.get("SCPL_DATA"):
        return (f"$SCPL_DATA/{name} (SCPL_DATA={os.environ['SCPL_DATA']}), or the folder passed as "
                "root= (--data-root)")
    return (f"{DEFAULT_DATA_DIR}/{name} (or $SCPL_DATA/{name} once SCPL_DATA is set), or the folder passed "
            "as root= (--data-root)")


def _not_found(src: _Source, folder: Path, missing: Sequence[str]) -> FileNotFoundError:
    """The error for paths absent from ``folder``, naming them, the official download and where to put it."""
    prefix = f"{src.subdir}/" if src.subdir else ""
    return FileNotFoundError(
        f"{src.title} not found: missing {', '.join(str(folder / m) for m in missing)}. Download {src.url} "
        f"and extract it so that ROOT/{prefix}{missing[0]} exists, where ROOT is {where_to_put(src.name)}."
    )


def _locate(src: _Source, root: PathLike, required: Sequence[str]) -> Path:
    """The folder holding all ``required`` paths: ROOT/<subdir> or ROOT itself; else FileNotFoundError."""
    base = data_root(src.name, root)
    candidates = ([base / src.subdir] if src.subdir else []) + [base]
    for folder in candidates:
        if all((folder / r).exists() for r in required):
            return folder
    # Report against the candidate that holds part of the data set, if any.
    folder = next((c for c in candidates if any((c / r).exists() for r in required)), candidates[0])
    raise _not_found(src, folder, [r for r in required if not (folder / r).exists()])


def _labels(values: Any, num_classes: int, where: Path, offset: int = 0) -> torch.Tensor:
    """``values - offset`` as int64 labels, with a ValueError if any falls outside 0..num_classes-1."""
    y = np.asarray(values, dtype=np.int64).reshape(-1) - offset
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{where}: labels must lie in {offset}..{num_classes - 1 + offset}, "
                         f"got {y.min() + offset}..{y.max() + offset}")
    return torch.from_numpy(y)


def _check_count(x: torch.Tensor, y: torch.Tensor, where: Path) -> None:
    if len(x) != len(y):
        raise ValueError(f"{where}: {len(x)} images but {len(y)} labels")


# --- CIFAR -------------------------------------------------------------------------------------------

class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays only, so a tampered file cannot run code."""

    _NUMPY = {"_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer"}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 pickles written by Python 3 rebuild bytes with _codecs.encode.
        if ((module.split(".")[0] == "numpy" and name in self._NUMPY)
                or (module, name) == ("_codecs", "encode")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            batch = _NumpyUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError) as exc:
        raise ValueError(f"{path}: not a CIFAR pickle ({exc})") from exc
    if not isinstance(batch, dict) or b"data" not in batch:
        raise ValueError(f"{path}: not a CIFAR pickle (expected a dict with b'data')")
    return batch


def _cifar_batches(folder: Path, names: Sequence[str], label_key: bytes,
                   num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = [], []
    for name in names:
        path = folder / name
        batch = _unpickle(path)
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise ValueError(f"{path}: b'data' must have shape (N, 3072), got {data.shape}")
        if label_key not in batch:
            raise ValueError(f"{path}: no {label_key!r} entry")
        xs.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))
        ys.append(_labels(batch[label_key], num_classes, path))
        _check_count(xs[-1], ys[-1], path)
    return torch.cat(xs), torch.cat(ys)


def load_cifar10(root: PathLike = None) -> Split:
    """CIFAR-10: 50,000 train and 10,000 test (3, 32, 32) uint8 images, labels 0..9.

    ``root`` holds ``cifar-10-batches-py/`` (or is that folder); default ``data_root("cifar10")``.
    """
    train = [f"data_batch_{i}" for i in range(1, 6)]
    folder = _locate(CIFAR10, root, train + ["test_batch"])
    return (*_cifar_batches(folder, train, b"labels", 10),
            *_cifar_batches(folder, ["test_batch"], b"labels", 10))


def load_cifar100(root: PathLike = None, label_kind: str = "fine") -> Split:
    """CIFAR-100: 50,000 train and 10,000 test (3, 32, 32) uint8 images.

    ``label_kind`` "fine" gives labels 0..99, "coarse" the 20 superclasses 0..19. ``root`` holds
    ``cifar-100-python/`` (or is that folder); default ``data_root("cifar100")``.
    """
    if label_kind not in ("fine", "coarse"):
        raise ValueError(f"label_kind must be 'fine' or 'coarse', got {label_kind!r}")
    key, num_classes = (b"fine_labels", 100) if label_kind == "fine" else (b"coarse_labels", 20)
    folder = _locate(CIFAR100, root, ["train", "test"])
    return (*_cifar_batches(folder, ["train"], key, num_classes),
            *_cifar_batches(folder, ["test"], key, num_classes))


# --- SVHN --------------------------------------------------------------------------------------------

def _svhn_split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path)
    except (ValueError, TypeError, OSError) as exc:
        raise ValueError(f"{path}: not a Matlab v5 file ({exc})") from exc
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: expected variables 'X' and 'y'")
    images = mat["X"]
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise ValueError(f"{path}: 'X' must have shape (32, 32, 3, N), got {images.shape}")
    # (H, W, C, N) -> (N, C, H, W)
    x = torch.from_numpy(np.ascontiguousarray(images.astype(np.uint8).transpose(3, 2, 0, 1)))
    y = (_labels(mat["y"], 10, path, offset=1) + 1) % 10  # checks 1..10, then maps 10 (the digit 0) to 0
    _check_count(x, y, path)
    return x, y


def load_svhn(root: PathLike = None, extra: bool = False) -> Split:
    """SVHN (cropped digits): 73,257 train and 26,032 test (3, 32, 32) uint8 images, labels 0..9.

    The file label 10 (the digit 0) becomes 0. With ``extra`` the 531,131 images of
    ``extra_32x32.mat`` are appended to the training split. ``root`` is the folder holding the
    .mat files; default ``data_root("svhn")``.
    """
    names = ["train_32x32.mat", "test_32x32.mat"] + (["extra_32x32.mat"] if extra else [])
    folder = _locate(SVHN, root, names)
    x_train, y_train = _svhn_split(folder / names[0])
    if extra:
        x_extra, y_extra = _svhn_split(folder / names[2])
        x_train, y_train = torch.cat([x_train, x_extra]), torch.cat([y_train, y_extra])
    return (x_train, y_train, *_svhn_split(folder / names[1]))


# --- STL-10 ------------------------------------------------------------------------------------------

def _stl10_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x_path, y_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    raw = np.fromfile(x_path, dtype=np.uint8)
    size = 3 * 96 * 96
    if raw.size == 0 or raw.size % size:
        raise ValueError(f"{x_path}: {raw.size} bytes is not a whole number of 3x96x96 images "
                         f"({size} bytes each)")
    # Each channel is stored column-major: swap the last two axes to get (N, C, H, W).
    x = torch.from_numpy(np.ascontiguousarray(raw.reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)))
    y = _labels(np.fromfile(y_path, dtype=np.uint8), 10, y_path, offset=1)
    _check_count(x, y, y_path)
    return x, y


def load_stl10(root: PathLike = None) -> Split:
    """STL-10 (labelled part): 5,000 train and 8,000 test (3, 96, 96) uint8 images, labels 0..9.

    The file labels 1..10 become 0..9; ``unlabeled_X.bin`` is ignored. ``root`` holds
    ``stl10_binary/`` (or is that folder); default ``data_root("stl10")``.
    """
    folder = _locate(STL10, root, ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"])
    return (*_stl10_split(folder, "train"), *_stl10_split(folder, "test"))


# --- Tiny-ImageNet -----------------------------------------------------------------------------------

def _read_jpegs(paths: Sequence[Path], size: int = 64) -> torch.Tensor:
    from PIL import Image

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as img:
            if img.size != (size, size):
                raise ValueError(f"{path}: expected a {size}x{size} image, got {img.size[0]}x{img.size[1]}")
            out[i] = np.asarray(img.convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _tiny_val(folder: Path, index: dict[str, int]) -> tuple[list[Path], list[int]]:
    annotations = folder / "val" / "val_annotations.txt"
    rows = sorted(line.split("\t")[:2] for line in annotations.read_text().splitlines() if line.strip())
    paths, labels = [], []
    for row in rows:
        if len(row) != 2 or row[1] not in index:
            raise ValueError(f"{annotations}: bad line {row!r} "
                             "(expected FILE<TAB>WNID<TAB>box with a wnid from wnids.txt)")
        path = folder / "val" / "images" / row[0]
        if not path.exists():
            raise _not_found(TINY_IMAGENET, folder, [f"val/images/{row[0]}"])
        paths.append(path)
        labels.append(index[row[1]])
    return paths, labels


def load_tiny_imagenet(root: PathLike = None, limit_per_class: Optional[int] = None) -> Split:
    """Tiny-ImageNet: 100,000 train and 10,000 val (3, 64, 64) uint8 images, labels 0..199.

    Labels are line indices in ``wnids.txt``; grayscale JPEGs are converted to RGB. The labelled val
    split is returned as the test split. ``limit_per_class`` keeps the first N train images (by
    sorted file name) of each class. ``root`` holds ``tiny-imagenet-200/`` (or is that folder);
    default ``data_root("tiny-imagenet")``.
    """
    folder = _locate(TINY_IMAGENET, root, ["wnids.txt", "train", "val/images", "val/val_annotations.txt"])
    wnids = [w.strip() for w in (folder / "wnids.txt").read_text().splitlines() if w.strip()]
    index = {w: i for i, w in enumerate(wnids)}
    train_paths: list[Path] = []
    train_labels: list[int] = []
    for label, wnid in enumerate(wnids):
        class_dir = folder / "train" / wnid / "images"
        if not class_dir.is_dir():
            raise _not_found(TINY_IMAGENET, folder, [f"train/{wnid}/images"])
        files = sorted(class_dir.glob("*.JPEG"))[:limit_per_class]
        train_paths += files
        train_labels += [label] * len(files)
    val_paths, val_labels = _tiny_val(folder, index)
    return (
        _read_jpegs(train_paths), torch.tensor(train_labels, dtype=torch.int64),
        _read_jpegs(val_paths), torch.tensor(val_labels, dtype=torch.int64),
    )
