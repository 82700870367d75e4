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
    DataError,
    LabelError,
    NonFiniteLossError,
    ScplError,
    StageError,
    TrainingDiverged,
    WriteError,
)
from .methods import METHODS

__version__ = "0.1.0"

_ATTRIBUTES = {"DecoupledModel": "model", "auto_cut": "model", "split_model": "partition",
               "seed_everything": "seed"}
_SUBMODULES = ("checkpoint", "context", "data", "early_exit", "executors", "extension", "models",
               "objectives", "progressive", "runner")

__all__ = [
    "DecoupledModel", "auto_cut", "split_model", "seed_everything", "METHODS", *_SUBMODULES,
    "ScplError", "ConfigError", "DataError", "LabelError", "BlockInputError", "NonFiniteLossError",
    "StageError", "TrainingDiverged", "WriteError",
]
"""What a user writes as ``scpl.X``; everything else lives in its module (``scpl.block.Block``,
``scpl.heads.build_projector``, ...)."""


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
