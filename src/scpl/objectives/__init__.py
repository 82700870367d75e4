"""Local objectives: ``nn.Module``s taking ``(features, labels)`` and returning a scalar.

``features`` are already projected (N x D; logits for cross-entropy). Build one by name with
:func:`build_objective`, or pass any module or callable with that signature.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Union

from torch import Tensor, nn

from ..errors import ConfigError
from .cross_entropy import CrossEntropyLoss
from .deinforeg import DeInfoRegLoss
from .supcon import SupConLoss

ObjectiveSpec = Union[str, nn.Module, Callable[[Tensor, Tensor], Tensor]]

__all__ = ["SupConLoss", "DeInfoRegLoss", "CrossEntropyLoss", "CallableObjective", "build_objective",
           "OBJECTIVES"]


class CallableObjective(nn.Module):
    """Wraps a plain function ``fn(features, labels) -> scalar`` as a module."""

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]):
        super().__init__()
        self.fn = fn

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """``fn(features, labels)``."""
        return self.fn(features, labels)


def _supcon(num_classes: int, **kwargs: Any) -> nn.Module:
    return SupConLoss(**kwargs)


def _deinforeg(num_classes: int, **kwargs: Any) -> nn.Module:
    return DeInfoRegLoss(num_classes, **kwargs)


def _cross_entropy(num_classes: int, **kwargs: Any) -> nn.Module:
    return CrossEntropyLoss(**kwargs)


OBJECTIVES: dict[str, Callable[..., nn.Module]] = {
    "supcon": _supcon,
    "deinforeg": _deinforeg,
    "ce": _cross_entropy,
}


def build_objective(spec: ObjectiveSpec, num_classes: int, **kwargs: Any) -> nn.Module:
    """Return the objective named by ``spec`` (see :data:`OBJECTIVES`), or wrap a module/callable."""
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        if spec not in OBJECTIVES:
            raise ConfigError(f"unknown objective {spec!r}; choose one of {sorted(OBJECTIVES)} "
                              "or pass a module/callable")
        try:
            return OBJECTIVES[spec](num_classes, **kwargs)
        except TypeError as exc:
            accepted = {"supcon": SupConLoss, "deinforeg": DeInfoRegLoss, "ce": CrossEntropyLoss}[spec]
            names = sorted(p for p in inspect.signature(accepted).parameters if p != "num_classes")
            raise ConfigError(f"objective_args for {spec!r}: {exc}; it accepts {names}") from exc
    if callable(spec):
        return CallableObjective(spec)
    raise ConfigError(f"objective must be a name, an nn.Module or a callable, got {type(spec).__name__}")
