"""The training methods by name: one table for the library and the command line.

This module imports no torch, so the command line can list the names without loading it.
A method fixes the local objective and head of every block before the last (the last block
outputs class logits and is trained with cross-entropy) and, for the named variants, turns on
exit classifiers, ContSup context or DASCPL's progressive schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Union

KINDS = ("conv", "sequence", "flat")
"""Kinds of block output a default can depend on: (B, C, H, W) maps, (B, T, D) sequences
(alone or with a mask), anything else (flattened)."""

ByKind = Union[str, Mapping[str, str], None]


@dataclass(frozen=True)
class Method:
    """Defaults of a training method.

    Args:
        objective: local objective name of the blocks before the last (None: BP, one block).
        projector: projector name, or one per kind of block output (see :data:`KINDS`).
        features: feature extractor name (``scpl.heads.FEATURES``), or one per kind.
        out_dim: projector output width (None: ``num_classes``, a classifier head).
        exits: exit classifiers on detached features (DASCPL).
        contsup: ContSup context mode (e.g. ``"R1E"``), or None.
        progressive: DASCPL's dynamic accumulation: blocks switched on one after another.
        about: one line for help texts.
    """

    objective: Optional[str]
    projector: ByKind
    features: ByKind = None
    out_dim: Optional[int] = None
    exits: bool = False
    contsup: Optional[str] = None
    progressive: bool = False
    about: str = ""


METHODS: dict[str, Method] = {
    "bp": Method(objective=None, projector="identity", about="end-to-end backpropagation, one block"),
    "scpl": Method(objective="supcon", projector="mlp", out_dim=128, about="supervised contrastive local losses"),
    "deinforeg": Method(objective="deinforeg", projector="deinforeg",
                        about="invariance + variance + covariance local losses"),
    "greedy": Method(objective="ce", projector="mlp", about="local cross-entropy heads"),
    "contsup": Method(objective="ce", projector="mlp", contsup="R1E",
                      about="greedy + ContSup R1E context (input encoder and skip, detached)"),
    "dascpl": Method(objective="supcon", projector="mlp", out_dim=128, exits=True, progressive=True,
                     about="SCPL + exit classifiers + blocks switched on progressively"),
}


def resolve(spec: ByKind, kind: str) -> Optional[str]:
    """The entry of a per-kind default for a block output of ``kind``; a plain name as is."""
    if spec is None or isinstance(spec, str):
        return spec
    return spec.get(kind)
