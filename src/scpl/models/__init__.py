"""Reference models, plain ``nn.Module``s, created by name with :func:`create_model`."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from ..errors import ConfigError
from .cnn import SmallCNN

MODELS: dict[str, Callable[..., nn.Module]] = {"small_cnn": SmallCNN}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the registered model ``name`` with ``kwargs``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = ["SmallCNN", "MODELS", "create_model"]
