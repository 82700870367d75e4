"""The training methods by name: one table for the library and the command line.

This module imports no torch, so the command line can list the names without loading it.
A method fixes the local objective and head of every block before the last (the last block
outputs class logits and is trained with cross-entropy) and, for the named variants, turns on
exit classifiers, ContSup context or DASCPL's progressive schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Union

from .errors import ConfigError

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
        progressive: DASCPL's dynamic accumulation, blocks switched on one after another: the
            fraction of the epochs within which every block is on (None: all train from the start).
        block_lr: the rule for each block's learning rate, a name of :data:`BLOCK_LR_RULES`
            (see :func:`scpl.optim.block_lr_scales`).
        flat_width: a flat block's projector is at most this many times wider than the block's
            features (None: ``projector_hidden`` whatever the width; see
            :func:`scpl.heads.head_width`).
        about: one line for help texts.
    """

    objective: Optional[str]
    projector: ByKind
    features: ByKind = None
    out_dim: Optional[int] = None
    exits: bool = False
    contsup: Optional[str] = None
    progressive: Optional[float] = None
    block_lr: str = "ramp"
    flat_width: Optional[int] = None
    about: str = ""


BLOCK_LR_RULES = ("ramp", "uniform")
"""Per-block learning-rate rules: ``"ramp"`` multiplies block k's rate by min(1 + k/2, 2) (1, 1.5,
2, 2 for K=4), ``"uniform"`` trains every block at the optimizer's rate (the papers' setting).
"ramp" is every method's default: the later blocks' inputs keep moving while the earlier blocks
learn, and a larger rate lets them follow. It won every ablation it was measured in on
validation accuracy (K=4): Fashion-MNIST at 8 epochs SCPL +1.5, DeInfoReg +1.6, greedy +1.1; at
the converged 20 epochs SCPL +0.95, DeInfoReg +0.17, greedy +0.50, DASCPL +0.79; the Transformer
at 24 epochs SCPL +2.81, DeInfoReg +0.34, greedy +1.12, DASCPL +0.45; the LSTM at 16 epochs
DeInfoReg +4.05, greedy +2.14 (docs/results.md, "Per-block learning rates"). BP is one block at the
optimizer's rate: its default is "uniform" (with one block, "ramp" gives the same 1x)."""


def is_multiplier(value: object) -> bool:
    """Whether ``value`` can be one block's learning-rate multiplier: a finite number > 0."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    return 0 < value < math.inf  # NaN compares False; no float() of a huge int


METHODS: dict[str, Method] = {
    "bp": Method(objective=None, projector="identity", block_lr="uniform",
               about="end-to-end backpropagation, one block"),
    # flat_width 2: on a narrow MLP (8-16-16-8-4, benchmarks/narrow_blocks.py, 3 seeds) a projector
    # twice as wide as the block's 16 units beat 64, 128 and 512 on validation (87.20 against
    # 85.27, 84.67, 83.53; DeInfoReg 84.53 against 83.13, 82.80, 81.53); greedy's cross-entropy
    # head did not care (86.73 to 87.80), so it keeps its width
    "scpl": Method(objective="supcon", projector="mlp", out_dim=128, flat_width=2,
                   about="supervised contrastive local losses"),
    # DeInfoReg's own projector (512-512-512 with BatchNorm) on every kind of output: it beat an
    # MLP 512-128 and a linear one on Fashion-MNIST (validation 86.10 / 82.20 / 80.10, 8 epochs)
    # and on the Transformer (74.47 / 69.97 / 63.67), and the MLP at both text parity budgets
    # (LSTM -5.1 over 3 seeds, Transformer -2.25); the MLP won only on the plain BiLSTM, whose
    # outputs shrink (docs/results.md, ablations)
    "deinforeg": Method(objective="deinforeg", projector="deinforeg", flat_width=2,
                        about="invariance + variance + covariance local losses"),
    # conv maps: DGL's auxiliary net (a 3x3 conv, then 2x2 pooling and the MLP): +1.6 points of
    # validation accuracy over 2x2 pooling alone on Fashion-MNIST (mean of 2 seeds, 8 epochs);
    # it did not help SCPL or DeInfoReg (docs/results.md, ablations)
    "greedy": Method(objective="ce", projector="mlp", features={"conv": "conv"},
                     about="local cross-entropy heads"),
    "contsup": Method(objective="ce", projector="mlp", features={"conv": "conv"}, contsup="R1E",
                      about="greedy + ContSup R1E context (input encoder and skip, detached)"),
    # progressive 0.25: block k starts at epoch floor(k * E / 16) of E (K=4). The paper's spacing
    # (0.25 of the epochs per block, progressive=1.0) left the last block 1/4 of the training and
    # cost 6.4 points on Fashion-MNIST at 8 epochs; 0.25 keeps the accumulation and is within 0.5
    # of SCPL (docs/results.md, ablations).
    "dascpl": Method(objective="supcon", projector="mlp", out_dim=128, exits=True, progressive=0.25,
                     flat_width=2, about="SCPL + exit classifiers + blocks switched on progressively"),
}


def get_method(name: str) -> Method:
    """The :class:`Method` called ``name``, or ConfigError listing the names."""
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


def resolve(spec: ByKind, kind: str) -> Optional[str]:
    """The entry of a per-kind default for a block output of ``kind``; a plain name as is."""
    if spec is None or isinstance(spec, str):
        return spec
    return spec.get(kind)
