"""Local heads: how a block's output becomes the B x D vector its local loss sees.

A head is ``features`` (block output -> B x D) followed by a ``projector`` (B x D -> B x out).
Conv maps are pooled to a small grid before flattening so that projectors stay small (the SCPL
and DeInfoReg research code flattened full-resolution maps and built heads of 34M and 142M
parameters for one block). :class:`HeadFactory` builds a block's whole head (features,
projector, objective, exit classifier) from the method's defaults and the user's overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from . import names
from .errors import ConfigError
from .flow import Flow
from .methods import Method, resolve
from .objectives import ObjectiveSpec, build_objective


def masked_mean(seq: Tensor, mask: Optional[Tensor]) -> Tensor:
    """Mean over positions of ``seq`` (B, T, D); ``mask`` (B, T) is True at valid positions."""
    if mask is None:
        return seq.mean(dim=1)
    weights = mask.to(seq.dtype).unsqueeze(-1)
    return (seq * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def output_kind(out: Flow) -> str:
    """``"conv"`` for (B, C, H, W) maps, ``"sequence"`` for (B, T, D) (alone or with a mask),
    ``"flat"`` otherwise: the kinds of :data:`scpl.methods.KINDS`."""
    main, _ = _main(out)
    return {4: "conv", 3: "sequence"}.get(main.dim(), "flat")


def _main(out: Flow) -> tuple[Tensor, Optional[Tensor]]:
    """The main tensor of a flow and its mask (the second tensor of a tuple), if any."""
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


class PooledFeatures(nn.Module):
    """Default feature extractor.

    * (B, C, H, W) conv maps: adaptive average pooling to ``grid`` x ``grid``, then flatten.
    * (B, T, D) sequences: mean over positions; with a tuple ``(seq, mask, ...)`` the mean is
      masked (mask True at valid tokens).
    * (B, D): unchanged. Anything else: flattened.
    """

    def __init__(self, grid: int = 2):
        super().__init__()
        self.grid = grid

    def forward(self, out: Flow) -> Tensor:
        """(B, D) features of a block output (see the class docstring)."""
        out, mask = _main(out)
        if out.dim() == 4:
            return nn.functional.adaptive_avg_pool2d(out, self.grid).flatten(1)
        if out.dim() == 3:
            return masked_mean(out, mask)
        if out.dim() == 2:
            return out
        return out.flatten(1)

    def extra_repr(self) -> str:
        """The grid, for ``print(model)``."""
        return f"grid={self.grid}"


class ConvFeatures(nn.Module):
    """A small convolutional auxiliary head, as in DGL (Belilovsky et al., ICML 2020): ``depth``
    3x3 convs + BatchNorm + ReLU keeping the channel count, then :class:`PooledFeatures`. Only
    for (B, C, H, W) maps. A deeper head for the early blocks of a deep cut is AugLocal's idea
    (Ma et al., ICLR 2024: auxiliary depth decaying with the block's position)."""

    def __init__(self, channels: int, grid: int = 2, depth: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.conv = nn.Sequential(*layers)
        self.pool = PooledFeatures(grid)

    def forward(self, out: Flow) -> Tensor:
        """Pooled features of the conv head applied to the block's maps."""
        return self.pool(self.conv(_main(out)[0]))


class Leading(nn.Module):
    """Applies ``inner`` to the leading tensors ``flow[:stop]`` of a tuple flow (one tensor is
    passed alone; a plain tensor flow as is). ``stop=1``: the main tensor of a ContSup flow;
    ``stop=-n``: a flow without its last n side inputs (dynamic extension)."""

    def __init__(self, inner: nn.Module, stop: int = 1):
        super().__init__()
        self.inner, self.stop = inner, stop

    def forward(self, flow: Flow):
        """``inner`` of the flow's leading part."""
        if not isinstance(flow, (tuple, list)):
            return self.inner(flow)
        part = flow[: self.stop]
        return self.inner(part[0] if len(part) == 1 else tuple(part))

    def extra_repr(self) -> str:
        """The cut, for ``print(model)``."""
        return f"stop={self.stop}"


FEATURES = names.FEATURE_NAMES
"""Feature extractors by name: average pooling of conv maps to a 1x1, 2x2 or 4x4 grid, or one
(``conv``) or two (``conv2``) 3x3 convs (+BN+ReLU) then 2x2 pooling. Sequences are mean-pooled
and flat outputs kept by all."""

FeatureSpec = Union[str, nn.Module, None]


def build_features(spec: FeatureSpec, output: Flow) -> nn.Module:
    """The feature extractor named by ``spec`` (see :data:`FEATURES`) for a block whose layers
    give ``output``; a module is used as is."""
    if isinstance(spec, nn.Module):
        return spec
    if spec is None or spec == "pool2":
        return PooledFeatures(2)
    if spec in ("pool1", "pool4"):
        return PooledFeatures(int(spec[-1]))
    if spec in ("conv", "conv2"):
        main, _ = _main(output)
        depth = 2 if spec == "conv2" else 1
        return ConvFeatures(main.shape[1], depth=depth) if main.dim() == 4 else PooledFeatures(2)
    raise ConfigError(f"unknown features {spec!r}; choose one of {list(FEATURES)} or pass a module")


def mlp(dims: Sequence[int], batch_norm: bool = False) -> nn.Sequential:
    """Linear layers through ``dims`` with (BatchNorm +) ReLU between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(d_in, d_out))
        if i < len(dims) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(d_out))
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


ProjectorSpec = Union[str, nn.Module, Callable[[int], nn.Module], None]

PROJECTORS = names.PROJECTOR_NAMES


def build_projector(spec: ProjectorSpec, in_dim: int, out_dim: int, hidden: int = 512) -> nn.Module:
    """Build a projector from ``in_dim`` features.

    ``spec``: ``"identity"`` (or None), ``"linear"`` (in->out), ``"mlp"`` (in->hidden->out, ReLU),
    ``"mlp_bn"`` (same with BatchNorm), ``"deinforeg"`` (in->hidden->hidden->hidden with
    BatchNorm+ReLU between, as in DeInfoReg with a configurable width instead of 2048), an
    ``nn.Module`` (used as is) or a factory ``in_dim -> nn.Module``.
    """
    if spec is None or spec == "identity":
        return nn.Identity()
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        if spec == "linear":
            return nn.Linear(in_dim, out_dim)
        if spec == "mlp":
            return mlp([in_dim, hidden, out_dim])
        if spec == "mlp_bn":
            return mlp([in_dim, hidden, out_dim], batch_norm=True)
        if spec == "deinforeg":
            return mlp([in_dim, hidden, hidden, hidden], batch_norm=True)
        raise ConfigError(f"unknown projector {spec!r}; choose one of {list(PROJECTORS)} or pass a "
                          "module/factory")
    if callable(spec):
        module = spec(in_dim)
        if not isinstance(module, nn.Module):
            raise ConfigError(f"projector factory must return an nn.Module, got {type(module).__name__}")
        return module
    raise ConfigError(f"projector must be a name, an nn.Module or a factory, got {type(spec).__name__}")


def head_width(hidden: int, features: int, kind: str, flat_width: Optional[int]) -> int:
    """The hidden width of a projector reading ``features`` values of a block output of ``kind``:
    ``hidden``, but for flat outputs (an MLP's hidden units) at most ``flat_width`` times the
    features (the method's :attr:`~scpl.methods.Method.flat_width`; None: no limit). On a narrow
    MLP (8-16-16-8-4 in 3 blocks, ``benchmarks/narrow_blocks.py``, 3 seeds, validation) a
    projector 2x as wide as the block's 16 units raised SCPL from 83.5 to 87.2 % and DeInfoReg
    from 81.5 to 84.5 % against 512 (BP 87.1). Conv maps and sequences keep ``hidden`` (the
    reference models' heads read 50 to 1,024 features, where the ablations chose it)."""
    return min(hidden, flat_width * features) if kind == "flat" and flat_width else hidden


class Head(NamedTuple):
    """What a block adds to its layers: features, projector, objective, optional exit classifier."""

    features: nn.Module
    projector: nn.Module
    objective: nn.Module
    classifier: Optional[nn.Module]


def per_block(value: Any, k: int, what: str) -> list:
    """``value`` repeated for ``k`` blocks, or a list/tuple with exactly ``k`` entries."""
    if isinstance(value, (list, tuple)):
        if len(value) != k:
            raise ConfigError(f"{what} has {len(value)} entries for {k} blocks; give one per block or a "
                              "single value")
        return list(value)
    return [value] * k


def _by_kind(spec: Any, kind: str) -> Any:
    return resolve(spec, kind) if isinstance(spec, Mapping) else spec


@dataclass
class HeadFactory:
    """Builds the head of each block before the last from per-block specs.

    ``projector_dim`` None means: ``hidden`` for the ``"deinforeg"`` projector, ``num_classes``
    for a classifier objective (``default_dim`` None) and ``default_dim`` otherwise.
    ``wrap`` adapts the feature extractor to the block's flow (e.g. ContSup's context tuple).
    """

    num_classes: int
    objectives: list[ObjectiveSpec]
    projectors: list[ProjectorSpec]
    features: list[FeatureSpec]
    default_dim: Optional[int] = None
    projector_dim: Optional[int] = None
    hidden: int = 512
    objective_kwargs: dict = field(default_factory=dict)
    exits: bool = False
    wrap: Optional[Callable[[nn.Module], nn.Module]] = None
    flat_width: Optional[int] = None

    def __call__(self, i: int, output: Flow) -> Head:
        """The head of block ``i``, whose layers give ``output`` (an example, used for sizes).
        A per-kind spec (a mapping) takes the entry of the output's kind."""
        kind = output_kind(output)
        feat = build_features(_by_kind(self.features[i], kind), output)
        if self.wrap is not None:
            feat = self.wrap(feat)
        with torch.no_grad():
            was_training = feat.training
            feat.eval()
            feat_dim = feat(output).shape[1]
            feat.train(was_training)
        proj = _by_kind(self.projectors[i], kind)
        hidden = head_width(self.hidden, feat_dim, kind, self.flat_width)
        return Head(feat, build_projector(proj, feat_dim, self._out_dim(proj, hidden), hidden),
                    self._objective(_by_kind(self.objectives[i], kind)),
                    nn.Linear(feat_dim, self.num_classes) if self.exits else None)

    def _out_dim(self, projector: ProjectorSpec, hidden: int) -> int:
        dim = self.projector_dim or self.default_dim
        if dim:
            return dim
        return hidden if projector == "deinforeg" else self.num_classes

    def _objective(self, spec: ObjectiveSpec) -> nn.Module:
        return build_objective(spec, self.num_classes, **self.objective_kwargs)

    @classmethod
    def for_method(cls, method: Method, num_classes: int, n: int, *, objective: Any = None,
                   projector: Any = None, features: Any = None, projector_dim: Optional[int] = None,
                   projector_hidden: int = 512, objective_kwargs: Optional[dict] = None,
                   exits: Optional[bool] = None,
                   wrap: Optional[Callable[[nn.Module], nn.Module]] = None) -> "HeadFactory":
        """The factory for ``n`` blocks of ``method``, each spec overriding the method's default
        (a single value, or a list with one per block)."""
        return cls(num_classes,
                   objectives=per_block(objective or method.objective, n, "objective"),
                   projectors=per_block(projector or method.projector, n, "projector"),
                   features=per_block(features or method.features, n, "features"),
                   default_dim=method.out_dim, projector_dim=projector_dim, hidden=projector_hidden,
                   objective_kwargs=dict(objective_kwargs or {}),
                   exits=method.exits if exits is None else exits, wrap=wrap,
                   flat_width=method.flat_width)

    def contrastive_last(self, classifier: nn.Linear) -> Head:
        """SCPL's original last block: the local objective of the blocks before it on the input
        of its final classifier layer, and that layer trained with cross-entropy on the detached
        input (see :class:`ClassifierInput`)."""
        proj = _by_kind(self.projectors[-1], "flat")
        width = classifier.in_features
        return Head(ClassifierInput(classifier),
                    build_projector(proj, width, self._out_dim(proj, self.hidden), self.hidden),
                    self._objective(_by_kind(self.objectives[-1], "flat")), classifier)


class ClassifierInput(nn.Module):
    """The input of a block's final classifier layer, as that block's features.

    A forward pre-hook on ``classifier`` keeps its input during the block's forward pass; the
    block's local loss reads it here. Used for SCPL's original last block, trained with the
    local objective, whose classifier learns from the detached input (``Block.classifier``).
    """

    def __init__(self, classifier: nn.Linear):
        super().__init__()
        self._captured: Optional[Tensor] = None
        classifier.register_forward_pre_hook(self._capture)

    def _capture(self, module: nn.Module, args: tuple) -> None:
        self._captured = args[0]

    def forward(self, outputs: Flow) -> Tensor:
        """The classifier input captured during the block's forward pass (``outputs`` unused)."""
        if self._captured is None:
            raise RuntimeError("ClassifierInput read before its block ran forward")
        captured, self._captured = self._captured, None
        return captured


def final_linear(layers: nn.Module, num_classes: int) -> nn.Linear:
    """The last ``nn.Linear`` with ``num_classes`` outputs among ``layers``' submodules."""
    found = [m for m in layers.modules() if isinstance(m, nn.Linear) and m.out_features == num_classes]
    if not found:
        raise ConfigError(f"last_block='contrastive' needs the last block to end in an nn.Linear with "
                          f"{num_classes} outputs (its classifier); none was found")
    return found[-1]
