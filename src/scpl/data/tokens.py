"""Text as model inputs: a tokeniser, a vocabulary, encoding to id tensors, a token data set and
a padding collate function."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Optional

import torch
from torch.utils.data import Dataset

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1


TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:'[^\W_]+)*|[^\w\s]|_")
"""Numbers with decimal points or thousands separators ("3.14", "1,000"); runs of letters and digits,
joined by inner apostrophes ("don't", "o'neill"); any other single non-space character."""


def tokenize(text: str) -> list[str]:
    """Lower-cased tokens of ``text`` (see :data:`TOKEN_RE`): words and numbers, each punctuation
    mark on its own; e.g. ``"Don't panic!"`` -> ``["don't", "panic", "!"]``.
    """
    return TOKEN_RE.findall(text.lower())


class Vocab:
    """Token <-> id map with ``<pad>`` = 0 and ``<unk>`` = 1; ``itos[i]`` is the token of id ``i``."""

    def __init__(self, itos: Sequence[str]) -> None:
        itos = list(itos)
        if itos[:2] != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {itos[:2]}")
        if len(set(itos)) != len(itos):
            raise ValueError("duplicate tokens in the vocabulary")
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(itos)}

    @classmethod
    def build(cls, token_lists: Iterable[Iterable[str]], min_freq: int = 1,
              max_size: Optional[int] = None) -> "Vocab":
        """Vocabulary of the tokens seen at least ``min_freq`` times (build it from training texts only).

        Tokens are ordered by descending count, ties alphabetically; ``max_size`` caps ``len(vocab)``
        including ``<pad>`` and ``<unk>``.
        """
        counts = Counter(t for tokens in token_lists for t in tokens)
        counts.pop(PAD, None)
        counts.pop(UNK, None)
        kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[:max(0, max_size - 2)]
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: object) -> bool:
        return token in self.stoi

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids of ``tokens``; unknown tokens map to ``<unk>`` (1)."""
        return [self.stoi.get(t, UNK_ID) for t in tokens]

    def state_dict(self) -> dict[str, list[str]]:
        """A plain dict to save with a checkpoint; :meth:`from_state` restores it."""
        return {"itos": list(self.itos)}

    @classmethod
    def from_state(cls, state: dict[str, list[str]]) -> "Vocab":
        """The vocabulary saved by :meth:`state_dict`."""
        return cls(state["itos"])


def encode_texts(texts: Iterable[str], vocab: Vocab, max_len: int) -> list[torch.Tensor]:
    """Each text tokenised and encoded as an int64 tensor of at most ``max_len`` ids (first tokens
    kept); a text without tokens becomes ``[<unk>]``.
    """
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    out = []
    for text in texts:
        ids = vocab.encode(tokenize(text)[:max_len]) or [UNK_ID]
        out.append(torch.tensor(ids, dtype=torch.int64))
    return out


class TokenDataset(Dataset):
    """Encoded sequences and their labels; item ``i`` is ``(ids: int64 tensor, label: int)``."""

    def __init__(self, sequences: Sequence[torch.Tensor], labels: Sequence[int]) -> None:
        if len(sequences) != len(labels):
            raise ValueError(f"{len(sequences)} sequences but {len(labels)} labels")
        self.sequences = list(sequences)
        self.labels = [int(y) for y in labels]

    @classmethod
    def from_texts(cls, texts: Sequence[str], labels: Sequence[int], vocab: Vocab,
                   max_len: int) -> "TokenDataset":
        """Shorthand for ``TokenDataset(encode_texts(texts, vocab, max_len), labels)``."""
        return cls(encode_texts(texts, vocab, max_len), labels)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.sequences[i], self.labels[i]


def pad_collate(batch: Sequence[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``DataLoader`` collate: ``(tokens (B, T_max) int64 right-padded with 0, labels (B,) int64)``."""
    seqs = [torch.as_tensor(s, dtype=torch.int64) for s, _ in batch]
    tokens = torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=PAD_ID)
    labels = torch.tensor([int(y) for _, y in batch], dtype=torch.int64)
    return tokens, labels
