"""Counting the activation memory autograd holds for backward, exactly, on any device."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import torch
from torch import Tensor, nn


@dataclass
class SavedBytes:
    """Bytes of tensors saved for backward while the context was open (parameters excluded)."""

    total: int = 0
    _seen: set = field(default_factory=set, repr=False)


@contextlib.contextmanager
def count_saved_bytes(exclude: Iterable[Tensor] = ()) -> Iterator[SavedBytes]:
    """Count the bytes autograd saves for backward inside the block.

    Each storage is counted once (a tensor saved by two ops is held once); tensors in
    ``exclude`` (typically the parameters, which exist anyway) are not counted.
    """
    counter = SavedBytes()
    skip = {t.untyped_storage().data_ptr() for t in exclude}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        key = (storage.data_ptr(), t.device)
        if storage.data_ptr() not in skip and key not in counter._seen:
            counter._seen.add(key)
            counter.total += storage.nbytes()
        # A detached alias (same storage): packing ``t`` itself would tie a node's output to the
        # node and leak the whole graph when no backward runs.
        return t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield counter


def parameters_of(*modules: nn.Module) -> list[Tensor]:
    """All parameters of ``modules``, in order."""
    return [p for m in modules for p in m.parameters()]
