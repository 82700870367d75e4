"""DASCPL's dynamic layer accumulation: blocks switched on (or frozen) progressively by epoch."""

from __future__ import annotations

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

    def validate(self, num_blocks: int) -> None:
        for name, values in (("activate", self.activate), ("freeze", self.freeze)):
            if values is not None and len(values) != num_blocks:
                raise ConfigError(f"schedule.{name} has {len(values)} entries for {num_blocks} blocks")
        if self.activate is not None:
            if self.activate[0] != 0 or any(b < a for a, b in zip(self.activate, self.activate[1:])):
                raise ConfigError(f"schedule.activate must start at 0 and never decrease, got {list(self.activate)}")

    def mode(self, block: int, epoch: int) -> str:
        """``"train"``, ``"frozen"`` or ``"inactive"`` for ``block`` during ``epoch``."""
        if self.activate is not None and epoch < self.activate[block]:
            return INACTIVE
        if self.freeze is not None and self.freeze[block] is not None and epoch >= self.freeze[block]:
            return FROZEN
        return TRAIN
