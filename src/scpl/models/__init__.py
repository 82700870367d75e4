"""Reference models, plain ``nn.Module``s, created by name with :func:`create_model`."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from ..errors import ConfigError
from .cnn import SmallCNN
from .ecosystem import create, ecosystem
from .resnet import CifarResNet, ResNet18, resnet32, resnet110
from .text import TextClassifier
from .vgg import VGG8


def _text(kind: str) -> Callable[..., nn.Module]:
    def build(**kwargs: Any) -> nn.Module:
        return TextClassifier(kind=kind, **kwargs)

    signature = inspect.signature(TextClassifier)  # what build accepts: TextClassifier's arguments but kind
    # inspect reads a function's __signature__, which typeshed's function type does not declare
    build.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for n, p in signature.parameters.items() if n != "kind"])
    return build


MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": SmallCNN,
    "vgg8": VGG8,
    "resnet18": ResNet18,
    "resnet32": resnet32,
    "resnet110": resnet110,
    "text_lstm": _text("lstm"),
    "text_transformer": _text("transformer"),
}


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Instantiate the registered model ``name`` with ``kwargs``, or an ecosystem model
    ``timm:NAME`` / ``hf:NAME`` (:mod:`scpl.models.ecosystem`; ``kwargs`` then hold
    ``num_classes`` and the data's sizes, and the rest goes to timm or the configuration)."""
    if ecosystem(name) is not None:
        return create(name, **kwargs)
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODELS)}, timm:NAME or hf:NAME")
    return MODELS[name](**kwargs)


__all__ = ["SmallCNN", "VGG8", "ResNet18", "CifarResNet", "TextClassifier", "MODELS", "create_model"]
