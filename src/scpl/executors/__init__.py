"""Executors run the blocks' training steps: in order (the oracle), or as a pipeline."""

from __future__ import annotations

from ..errors import ConfigError
from .sequential import SequentialExecutor
from .threads import ThreadedExecutor
from .distributed import DistributedExecutor

EXECUTORS = {"sequential": SequentialExecutor, "threads": ThreadedExecutor, "distributed": DistributedExecutor}


def get_executor(spec):
    """An executor instance from a name in :data:`EXECUTORS` or an instance (returned as is)."""
    if isinstance(spec, str):
        if spec not in EXECUTORS:
            raise ConfigError(f"unknown executor {spec!r}; choose one of {sorted(EXECUTORS)}")
        return EXECUTORS[spec]()
    return spec


__all__ = ["SequentialExecutor", "ThreadedExecutor", "DistributedExecutor", "EXECUTORS", "get_executor"]
