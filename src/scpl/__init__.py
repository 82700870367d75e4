"""scpl: decoupled, pipeline-parallel training for PyTorch models."""

from . import checkpoint, context, executors, extension, inference, models, objectives, schedule
from .block import Block
from .errors import BlockInputError, ConfigError, LabelError, NonFiniteLossError, ScplError
from .heads import PooledFeatures, build_projector
from .model import METHODS, DecoupledModel
from .partition import split_model
from .seed import seed_everything

__version__ = "0.1.0"

__all__ = [
    "DecoupledModel",
    "Block",
    "METHODS",
    "split_model",
    "objectives",
    "models",
    "schedule",
    "context",
    "extension",
    "executors",
    "checkpoint",
    "inference",
    "PooledFeatures",
    "build_projector",
    "seed_everything",
    "ScplError",
    "ConfigError",
    "LabelError",
    "BlockInputError",
    "NonFiniteLossError",
]
