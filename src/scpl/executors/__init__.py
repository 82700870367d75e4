"""Executors run the blocks' training steps: in order (the oracle), or as a pipeline."""

from __future__ import annotations

from ..errors import ConfigError
from .base import Executor, StepCallback, StepLosses
from .distributed import DistributedExecutor
from .sequential import SequentialExecutor
from .threads import ThreadedExecutor

EXECUTORS = {"sequential": SequentialExecutor, "threads": ThreadedExecutor,
             "distributed": DistributedExecutor}


def get_executor(spec: "str | Executor") -> Executor:
    """An executor instance from a name in :data:`EXECUTORS` or an instance (returned as is)."""
    if isinstance(spec, str):
        if spec not in EXECUTORS:
            raise ConfigError(f"unknown executor {spec!r}; choose one of {sorted(EXECUTORS)}")
        return EXECUTORS[spec]()
    if not isinstance(spec, Executor):
        raise ConfigError(f"an executor must be a name ({sorted(EXECUTORS)}) or an object with train_epoch, "
                          "forward_batches and exit_batches (scpl.executors.Executor), "
                          f"got {type(spec).__name__}")
    return spec


__all__ = ["Executor", "StepCallback", "StepLosses", "SequentialExecutor", "ThreadedExecutor",
           "DistributedExecutor", "EXECUTORS", "get_executor"]
