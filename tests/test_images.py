"""The image-format readers against small files written in each official on-disk layout."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from scpl.data.images import (
    data_root,
    load_cifar10,
    load_cifar100,
    load_stl10,
    load_svhn,
    load_tiny_imagenet,
)


def random_images(n: int, size: int, seed: int) -> np.ndarray:
    """(n, 3, size, size) uint8 noise: a wrong transpose or channel order cannot go unnoticed."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, size, size), dtype=np.uint8)


def check(x: torch.Tensor, y: torch.Tensor, images: np.ndarray, labels) -> None:
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert torch.equal(x, torch.from_numpy(images))
    assert y.tolist() == list(labels)


# --- CIFAR -------------------------------------------------------------------------------------------

def cifar_rows(images: np.ndarray) -> np.ndarray:
    """Each row: the 1024 R values, then G, then B, every plane row-major."""
    return np.stack([np.concatenate([img[0].ravel(), img[1].ravel(), img[2].ravel()]) for img in images])


def write_cifar(path: Path, images: np.ndarray, protocol: int = 2, **labels) -> None:
    batch = {
        b"batch_label": b"training batch 1 of 5",
        b"data": cifar_rows(images),
        b"filenames": [b"img_%d.png" % i for i in range(len(images))],
    }
    batch.update({k.encode(): v for k, v in labels.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


def make_cifar10(root: Path) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    folder = root / "cifar-10-batches-py"
    train, train_labels = random_images(10, 32, seed=1), [i % 10 for i in range(10)]
    for b in range(5):
        part = slice(2 * b, 2 * b + 2)
        write_cifar(folder / f"data_batch_{b + 1}", train[part], labels=train_labels[part])
    test, test_labels = random_images(3, 32, seed=2), [9, 0, 4]
    write_cifar(folder / "test_batch", test, protocol=pickle.HIGHEST_PROTOCOL, labels=test_labels)
    return train, train_labels, test, test_labels


def test_cifar10(tmp_path: Path) -> None:
    train, train_labels, test, test_labels = make_cifar10(tmp_path)
    # The layout itself: the first pixel of the green plane sits at column 1024.
    assert cifar_rows(train)[0, 1024] == train[0, 1, 0, 0]
    for root in (tmp_path, tmp_path / "cifar-10-batches-py"):
        x_train, y_train, x_test, y_test = load_cifar10(root)
        check(x_train, y_train, train, train_labels)
        check(x_test, y_test, test, test_labels)


def test_cifar10_from_scpl_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train, _, _, _ = make_cifar10(tmp_path / "cifar10")
    monkeypatch.setenv("SCPL_DATA", str(tmp_path))
    assert torch.equal(load_cifar10()[0], torch.from_numpy(train))


def test_cifar10_rejects_bad_labels_and_code(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    test_batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    write_cifar(test_batch, random_images(1, 32, seed=3), labels=[10])
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        load_cifar10(tmp_path)
    test_batch.write_bytes(pickle.dumps({b"data": os.getcwd}))
    with pytest.raises(ValueError, match="not a CIFAR pickle"):
        load_cifar10(tmp_path)


def test_cifar100(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    train, test = random_images(4, 32, seed=4), random_images(2, 32, seed=5)
    write_cifar(folder / "train", train, fine_labels=[0, 99, 50, 7], coarse_labels=[0, 19, 10, 1])
    write_cifar(folder / "test", test, fine_labels=[3, 98], coarse_labels=[4, 18])
    x_train, y_train, x_test, y_test = load_cifar100(tmp_path)
    check(x_train, y_train, train, [0, 99, 50, 7])
    check(x_test, y_test, test, [3, 98])
    _, y_train, _, y_test = load_cifar100(folder, label_kind="coarse")
    assert y_train.tolist() == [0, 19, 10, 1] and y_test.tolist() == [4, 18]
    with pytest.raises(ValueError, match="label_kind"):
        load_cifar100(tmp_path, label_kind="medium")


# --- SVHN --------------------------------------------------------------------------------------------

def write_svhn(path: Path, images: np.ndarray, labels: list[int]) -> None:
    from scipy.io import savemat

    x = np.empty((32, 32, 3, len(images)), dtype=np.uint8)  # (H, W, C, N)
    for n, img in enumerate(images):
        for c in range(3):
            x[:, :, c, n] = img[c]
    savemat(path, {"X": x, "y": np.array(labels, dtype=np.float64).reshape(-1, 1)}, format="5")


def test_svhn(tmp_path: Path) -> None:
    train, test, extra = (random_images(4, 32, seed=6), random_images(3, 32, seed=7),
                          random_images(2, 32, seed=8))
    write_svhn(tmp_path / "train_32x32.mat", train, [10, 1, 5, 9])
    write_svhn(tmp_path / "test_32x32.mat", test, [2, 10, 3])
    x_train, y_train, x_test, y_test = load_svhn(tmp_path)
    check(x_train, y_train, train, [0, 1, 5, 9])
    check(x_test, y_test, test, [2, 0, 3])

    with pytest.raises(FileNotFoundError, match="extra_32x32.mat"):
        load_svhn(tmp_path, extra=True)
    write_svhn(tmp_path / "extra_32x32.mat", extra, [10, 7])
    x_train, y_train, _, _ = load_svhn(tmp_path, extra=True)
    check(x_train, y_train, np.concatenate([train, extra]), [0, 1, 5, 9, 0, 7])

    write_svhn(tmp_path / "test_32x32.mat", test, [0, 1, 2])
    with pytest.raises(ValueError, match="labels must lie in 1..10"):
        load_svhn(tmp_path)


# --- STL-10 ------------------------------------------------------------------------------------------

def write_stl10(folder: Path, split: str, images: np.ndarray, labels: list[int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    raw = b"".join(plane.ravel(order="F").tobytes() for img in images for plane in img)  # column-major
    (folder / f"{split}_X.bin").write_bytes(raw)
    (folder / f"{split}_y.bin").write_bytes(bytes(labels))


def test_stl10(tmp_path: Path) -> None:
    folder = tmp_path / "stl10_binary"
    train, test = random_images(3, 96, seed=9), random_images(2, 96, seed=10)
    write_stl10(folder, "train", train, [1, 10, 4])
    write_stl10(folder, "test", test, [10, 2])
    (folder / "unlabeled_X.bin").write_bytes(b"ignored")
    for root in (tmp_path, folder):
        x_train, y_train, x_test, y_test = load_stl10(root)
        check(x_train, y_train, train, [0, 9, 3])
        check(x_test, y_test, test, [9, 1])

    (folder / "test_X.bin").write_bytes(test.tobytes()[:-1])
    with pytest.raises(ValueError, match="not a whole number of 3x96x96 images"):
        load_stl10(tmp_path)
    write_stl10(folder, "test", test, [10, 11])
    with pytest.raises(ValueError, match="labels must lie in 1..10"):
        load_stl10(tmp_path)
    write_stl10(folder, "test", test, [1])
    with pytest.raises(ValueError, match="2 images but 1 labels"):
        load_stl10(tmp_path)


# --- Tiny-ImageNet -----------------------------------------------------------------------------------

WNIDS = ["n01443537", "n09999999"]


def two_tone(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    """A (64, 64, 3) image whose top half is one colour and bottom half another."""
    img = np.empty((64, 64, 3), dtype=np.uint8)
    img[:32], img[32:] = top, bottom
    return img


def write_jpeg(path: Path, img: np.ndarray, gray: bool = False) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pil = Image.fromarray(img[..., 0] if gray else img, "L" if gray else "RGB")
    pil.save(path, "JPEG", quality=95)


def make_tiny_imagenet(root: Path) -> dict[str, np.ndarray]:
    folder = root / "tiny-imagenet-200"
    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    images = {
        "a0": two_tone((200, 40, 10), (10, 90, 220)),
        "a1": two_tone((60, 60, 60), (180, 180, 180)),  # stored as a grayscale JPEG
        "b0": two_tone((30, 220, 120), (250, 250, 0)),
        "v0": two_tone((240, 10, 10), (10, 10, 240)),
        "v1": two_tone((10, 240, 10), (120, 0, 200)),
    }
    write_jpeg(folder / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_0.JPEG", images["a0"])
    write_jpeg(folder / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_1.JPEG", images["a1"], gray=True)
    write_jpeg(folder / "train" / WNIDS[1] / "images" / f"{WNIDS[1]}_0.JPEG", images["b0"])
    (folder / "train" / WNIDS[0] / f"{WNIDS[0]}_boxes.txt").write_text("")
    write_jpeg(folder / "val" / "images" / "val_0.JPEG", images["v0"])
    write_jpeg(folder / "val" / "images" / "val_1.JPEG", images["v1"])
    (folder / "val" / "val_annotations.txt").write_text(
        f"val_1.JPEG\t{WNIDS[0]}\t0\t1\t62\t63\nval_0.JPEG\t{WNIDS[1]}\t5\t5\t60\t60\n"
    )
    return images


def assert_close(x: torch.Tensor, img: np.ndarray, tol: float = 4.0) -> None:
    """JPEG is lossy: compare the per-channel means of the top and bottom halves."""
    assert x.shape == (3, 64, 64)
    for rows in (slice(4, 28), slice(36, 60)):  # away from the edge, where JPEG blurs
        got = x[:, rows].double().mean(dim=(1, 2))
        want = torch.from_numpy(img[rows].astype(np.float64).mean(axis=(0, 1)))
        assert torch.allclose(got, want, atol=tol), (got, want)


def test_tiny_imagenet(tmp_path: Path) -> None:
    images = make_tiny_imagenet(tmp_path)
    x_train, y_train, x_test, y_test = load_tiny_imagenet(tmp_path)
    assert x_train.dtype == torch.uint8 and x_train.shape == (3, 3, 64, 64)
    assert y_train.dtype == torch.int64 and y_train.tolist() == [0, 0, 1]
    for x, name in zip(x_train, ["a0", "a1", "b0"]):
        assert_close(x, images[name])
    # gray -> RGB
    assert torch.equal(x_train[1, 0], x_train[1, 1]) and torch.equal(x_train[1, 1], x_train[1, 2])
    assert x_test.shape == (2, 3, 64, 64) and y_test.tolist() == [1, 0]  # sorted by file name
    assert_close(x_test[0], images["v0"])
    assert_close(x_test[1], images["v1"])

    x_train, y_train, _, _ = load_tiny_imagenet(tmp_path / "tiny-imagenet-200", limit_per_class=1)
    assert y_train.tolist() == [0, 1]
    assert_close(x_train[0], images["a0"])


def test_tiny_imagenet_bad_annotation(tmp_path: Path) -> None:
    make_tiny_imagenet(tmp_path)
    (tmp_path / "tiny-imagenet-200" / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match="wnids.txt"):
        load_tiny_imagenet(tmp_path)


# --- missing data and roots --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "loader, expected, url",
    [
        (load_cifar10, "cifar-10-batches-py/data_batch_1", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
        (load_cifar100, "cifar-100-python/train", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
        (load_svhn, "train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/"),
        (load_stl10, "stl10_binary/train_X.bin", "https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"),
        (load_tiny_imagenet, "tiny-imagenet-200/wnids.txt", "http://cs231n.stanford.edu/tiny-imagenet-200.zip"),
    ],
)
def test_missing_data_names_files_and_url(tmp_path: Path, loader, expected: str, url: str) -> None:
    with pytest.raises(FileNotFoundError) as info:
        loader(tmp_path)
    message = str(info.value)
    assert str(tmp_path / expected) in message
    assert url in message and f"ROOT/{expected}" in message
    assert "root=" in message and "$SCPL_DATA/" in message


def test_missing_single_file_is_named(tmp_path: Path) -> None:
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in message and "data_batch_1" not in message


def test_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCPL_DATA", str(tmp_path))
    assert data_root("svhn") == tmp_path / "svhn"
    assert data_root("svhn", tmp_path / "elsewhere") == tmp_path / "elsewhere"
    assert data_root("svhn", str(tmp_path)) == tmp_path
    monkeypatch.delenv("SCPL_DATA")
    assert data_root("stl10") == Path("~/.scpl/data").expanduser() / "stl10"
    monkeypatch.setenv("SCPL_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError,
                       match=re.escape(str(tmp_path / "stl10" / "stl10_binary" / "train_X.bin"))):
        load_stl10()
