"""scpl: decoupled, pipeline-parallel training for PyTorch models.

The names below are loaded on first use, so that ``import scpl`` (and the command line's
help) does not pay for importing torch until something needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import (
    BlockInputError,
    ConfigError,
    LabelError,
    NonFiniteLossError,
    ScplError,
    StageError,
    TrainingDiverged,
)
from .methods import METHODS

__version__ = "0.1.0"

_ATTRIBUTES = {
    "DecoupledModel": "model", "Block": "block", "split_model": "partition", "auto_cut": "model",
    "Balance": "balance", "PooledFeatures": "heads", "build_projector": "heads", "seed_everything": "seed",
}
_SUBMODULES = ("checkpoint", "context", "executors", "extension", "inference", "models", "objectives",
               "progressive", "runner", "data")

__all__ = [
    "DecoupledModel", "Block", "METHODS", "split_model", "auto_cut", "Balance", "PooledFeatures",
    "build_projector", "seed_everything", *_SUBMODULES,
    "ScplError", "ConfigError", "LabelError", "BlockInputError", "NonFiniteLossError", "StageError",
    "TrainingDiverged",
]


def __getattr__(name: str) -> Any:
    if name in _ATTRIBUTES:
        value = getattr(importlib.import_module(f".{_ATTRIBUTES[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'scpl' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
