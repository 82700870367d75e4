"""Training runs (``scpl train``): one experiment from a config, with logs, checkpoints and resume.

A run loads a data set (with a validation split), builds a reference model, cuts it into
blocks with a method's local objectives, and trains it on an executor (also under torchrun).
After every epoch it evaluates on the validation split, logs metrics and writes a complete
checkpoint set atomically; the model of the best validation epoch is the one tested, once, at
the end. ``resume=True`` continues an interrupted run bit for bit on CPU.

* :mod:`~scpl.runner.config`: :class:`TrainConfig`, recipes;
* :mod:`~scpl.runner.assemble`: :func:`build` (data, model, executor);
* :mod:`~scpl.runner.state`: checkpoint sets, random streams, resume;
* :mod:`~scpl.runner.metrics`, :mod:`~scpl.runner.export`: what a run writes;
* :mod:`~scpl.runner.loop`: the epoch loop and its :class:`Hook` s.
"""


from __future__ import annotations

import importlib
from typing import Any

from .config import TrainConfig, load_recipe

_ATTRIBUTES = {"Run": "assemble", "build": "assemble", "Hook": "loop", "EpochRecord": "loop", "Loop": "loop",
               "train": "loop", "run": "loop"}

__all__ = ["TrainConfig", "load_recipe", "Run", "build", "Hook", "EpochRecord", "Loop", "train", "run"]


def __getattr__(name: str) -> Any:  # torch is imported only when the training parts are used
    if name not in _ATTRIBUTES:
        raise AttributeError(f"module 'scpl.runner' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_ATTRIBUTES[name]}", __name__), name)
    globals()[name] = value
    return value
