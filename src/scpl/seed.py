"""Seeding for runs that repeat bit for bit on CPU."""

from __future__ import annotations

import contextlib
import random
import threading
from typing import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a fresh generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


_RNG_LOCKS: dict[str, threading.Lock] = {}
_RNG_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def seeded_rng(device: torch.device, key: tuple[int, ...]) -> Iterator[None]:
    """Run the body with ``device``'s default generator seeded from ``key``, then restore it.

    The generator is process-wide, so the body holds a lock per generator: blocks that share
    one (several blocks on the CPU, or on one GPU) run their seeded parts one at a time, which
    keeps their random numbers independent of the executor.
    """
    seed = hash(key) & 0x7FFF_FFFF_FFFF_FFFF
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        gen, name = torch.cuda.default_generators[index], f"cuda:{index}"
    else:
        gen, name = torch.random.default_generator, "cpu"
    with _RNG_LOCKS_GUARD:
        lock = _RNG_LOCKS.setdefault(name, threading.Lock())
    with lock:
        state = gen.get_state()
        gen.manual_seed(seed)
        try:
            yield
        finally:
            gen.set_state(state)
