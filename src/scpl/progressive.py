"""DASCPL's dynamic layer accumulation: blocks switched on (or frozen) progressively by epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from .errors import ConfigError

TRAIN, FROZEN, INACTIVE = "train", "frozen", "inactive"


@dataclass(frozen=True)
class BlockSchedule:
    """When each block trains.

    Args:
        activate: epoch (0-based) at which block k starts; before it the block is not run
            (it passes its input through untouched). Non-decreasing, and block 0 starts at 0.
        freeze: epoch from which block k is frozen (runs forward in eval mode, no updates);
            None or a missing entry: never. The reverse variant freezes from the front.
    """

    activate: Optional[Sequence[int]] = None
    freeze: Optional[Sequence[Optional[int]]] = None

    @classmethod
    def progressive(cls, num_blocks: int, epochs: int, span: float = 1.0) -> "BlockSchedule":
        """DASCPL's dynamic accumulation: block k starts at epoch ``floor(k * span * epochs / K)``.

        ``span=1`` is the paper's spacing (0, 50, 100, 150 of 200 epochs for K=4): the last
        block trains for the last 1/K of the epochs. A smaller span switches every block on
        within the first ``span`` fraction of the epochs.
        """
        if not 0.0 <= span <= 1.0:
            raise ConfigError(f"the progressive span is a fraction of the epochs in [0, 1], got {span}")
        return cls(activate=[math.floor(k * span * epochs / num_blocks + 1e-9) for k in range(num_blocks)])

    def validate(self, num_blocks: int) -> None:
        """ConfigError unless the schedule has one entry per block and ``activate`` is valid."""
        for name, values in (("activate", self.activate), ("freeze", self.freeze)):
            if values is not None and len(values) != num_blocks:
                raise ConfigError(f"schedule.{name} has {len(values)} entries for {num_blocks} blocks")
        if self.activate is not None:
            if self.activate[0] != 0 or any(b < a for a, b in zip(self.activate, self.activate[1:])):
                raise ConfigError("schedule.activate must start at 0 and never decrease, "
                                  f"got {list(self.activate)}")

    def mode(self, block: int, epoch: int) -> str:
        """``"train"``, ``"frozen"`` or ``"inactive"`` for ``block`` during ``epoch``."""
        if self.activate is not None and epoch < self.activate[block]:
            return INACTIVE
        frozen_from = self.freeze[block] if self.freeze is not None else None
        if frozen_from is not None and epoch >= frozen_from:
            return FROZEN
        return TRAIN
