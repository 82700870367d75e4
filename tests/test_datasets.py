"""The data set registry: validation split, statistics and vocabulary from the training part only."""

from pathlib import Path

import numpy as np
import pytest
import torch

from scpl import ConfigError
from scpl.data import text, tokens
from scpl.data.datasets import channel_stats, load_dataset, split_indices


def test_split_is_seeded_disjoint_and_complete():
    tr, va = split_indices(1000, 0.1, seed=3)
    assert len(va) == 100 and len(np.intersect1d(tr, va)) == 0 and len(np.union1d(tr, va)) == 1000
    tr2, va2 = split_indices(1000, 0.1, seed=3)
    assert np.array_equal(va, va2) and not np.array_equal(va, split_indices(1000, 0.1, seed=4)[1])
    with pytest.raises(ConfigError, match="val_fraction"):
        split_indices(10, 1.0)


def test_digits_read_from_the_shipped_file_equal_scikit_learns_loader():
    from sklearn.datasets import load_digits

    from scpl.data.vision import read_digits

    images, labels = read_digits()
    bunch = load_digits()
    assert images.dtype == np.float32 and labels.dtype == np.int64
    assert np.array_equal(images, bunch.images) and np.array_equal(labels, bunch.target)


def test_image_bundle_normalises_with_training_statistics():
    b = load_dataset("digits", val_fraction=0.2)
    x_train = torch.stack([b.train[i][0] for i in range(len(b.train))])
    assert x_train.dtype == torch.uint8 and b.shape == (1, 8, 8)
    assert b.mean == pytest.approx([float(x_train.double().mean() / 255)])
    assert b.std == pytest.approx([float((x_train.double() / 255).std(unbiased=False))])
    assert len(b.train) + len(b.val) == 1438 and len(b.test) == 359
    mean, std = channel_stats(torch.tensor([[[[0]], [[255]]], [[[255]], [[255]]]], dtype=torch.uint8))
    assert mean == pytest.approx([0.5, 1.0]) and std == pytest.approx([0.5, 0.0], abs=1e-5)


def test_text_vocabulary_comes_from_the_training_part_only():
    b = load_dataset("debian", val_fraction=0.1, max_len=32)
    assert (b.kind == "text" and b.num_classes == 16 and len(b.train) + len(b.val) == 8888
            and len(b.test) == 2399)
    train_texts, _, test_texts, _, _ = text.load_debian()
    tr, va = split_indices(len(train_texts), 0.1, 0)
    train_words = {t for i in tr for t in tokens.tokenize(train_texts[i])}
    held_out = ({t for i in va for t in tokens.tokenize(train_texts[i])}
                | {t for s in test_texts for t in tokens.tokenize(s)})
    only_held_out = held_out - train_words
    assert only_held_out, "the held-out texts should contain words the training part lacks"
    assert not only_held_out & set(b.vocab.itos)
    assert set(b.vocab.itos) == train_words | {tokens.PAD, tokens.UNK}
    ids, labels = b.collate([b.train[0], b.train[1]])
    assert ids.shape[0] == 2 and ids.shape[1] <= 32 and labels.dtype == torch.int64


def test_unknown_data_set_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown data set 'mnist3'.*cifar10"):
        load_dataset("mnist3")


def test_mnist_reads_idx_files_from_its_folder(tmp_path, monkeypatch):
    import gzip
    import struct

    def idx(path, array):
        dims = array.shape
        header = struct.pack(">HBB", 0, 0x08, len(dims)) + b"".join(struct.pack(">I", d) for d in dims)
        with gzip.open(path, "wb") as f:
            f.write(header + array.astype(np.uint8).tobytes())

    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train_x, test_x = rng.integers(0, 256, (20, 28, 28)), rng.integers(0, 256, (5, 28, 28))
    idx(folder / "train-images-idx3-ubyte.gz", train_x)
    idx(folder / "train-labels-idx1-ubyte.gz", np.arange(20) % 10)
    idx(folder / "t10k-images-idx3-ubyte.gz", test_x)
    idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(5))
    monkeypatch.setenv("SCPL_DATA", str(tmp_path))
    b = load_dataset("mnist", val_fraction=0.0)
    assert torch.equal(torch.stack([b.train[i][0][0] for i in range(20)]),
                       torch.from_numpy(train_x.astype(np.uint8)))
    assert [int(b.test[i][1]) for i in range(5)] == [0, 1, 2, 3, 4] and b.val is None
    monkeypatch.setenv("SCPL_DATA", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError,
                       match=r"mnist not found: put train-images-idx3-ubyte.gz.* in \$SCPL_DATA/mnist "
                             r"\(SCPL_DATA=.*elsewhere\)"):
        load_dataset("mnist")
    monkeypatch.delenv("SCPL_DATA")  # unset: the message names the default folder, not $SCPL_DATA as if set
    if Path("~/.scpl/data/mnist").expanduser().exists():
        pytest.skip("~/.scpl/data/mnist exists on this machine")
    with pytest.raises(FileNotFoundError,
                       match=r"in ~/.scpl/data/mnist \(or \$SCPL_DATA/mnist once SCPL_DATA"):
        load_dataset("mnist")


def test_a_train_limit_that_leaves_out_classes_says_so():
    with pytest.warns(UserWarning, match=r"train_limit=600 keeps the first 600 .* hold 1 of its 16 classes"):
        bundle = load_dataset("debian", train_limit=600, max_len=8)
    assert len(bundle.train) + len(bundle.val) == 600
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("digits", train_limit=512)  # the first 512 digits hold every class
