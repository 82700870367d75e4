"""What a user sees while a model trains: a bar per epoch, then one line per epoch.

The bar (tqdm, on stderr, only on a terminal) shows each block's running local loss and
samples/s; the line gives the epoch's mean losses, validation accuracy and seconds. Blocks
that did not train in the epoch (DASCPL's blocks not yet switched on) show ``-``.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Iterable, Optional, Sequence, Sized

from tqdm import tqdm


def format_losses(losses: Sequence[Optional[float]]) -> str:
    """Losses as ``0.123 0.456 -`` (``-`` for a block that did not train)."""
    return " ".join("-" if v is None else f"{v:.3f}" for v in losses)


class EpochBar:
    """One epoch's progress: ``step`` after every step, ``close`` at the end.

    Args:
        epoch, epochs: 1-based epoch and the total, for the label.
        loader: the epoch's batches: its length (steps) and ``batch_size`` (samples per step, for
            samples/s) are shown when it has them.
        enabled: draw the bar (it is drawn only when stderr is a terminal).
    """

    def __init__(self, epoch: int, epochs: int, loader: Iterable, enabled: bool = True):
        total = len(loader) if isinstance(loader, Sized) else None
        size = getattr(loader, "batch_size", None)
        self.sums: list[float] = []
        self.count, self.start = 0, time.perf_counter()
        self.batch_size = size if isinstance(size, int) else None
        self.bar: Optional[tqdm] = None  # no tqdm object (nor its monitor thread) unless it is drawn
        if enabled and sys.stderr.isatty():
            self.bar = tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False,
                            file=sys.stderr)

    def step(self, losses: Sequence[float]) -> None:
        """Count one step and add its per-block ``losses`` to the sums (the bar shows their means)."""
        self.count += 1
        self.sums = [s + v for s, v in zip(self.sums, losses)] if self.sums else list(losses)
        if self.bar is not None:
            rate = ""
            if self.batch_size:
                rate = f" | {self.count * self.batch_size / (time.perf_counter() - self.start):.0f} samples/s"
            self.bar.set_postfix_str(format_losses([s / self.count for s in self.sums]) + rate, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        """Close the bar, if one is drawn."""
        if self.bar is not None:
            self.bar.close()


def epoch_line(epoch: int, epochs: int, losses: Sequence[Optional[float]], val_accuracy: Optional[float],
               seconds: float, label: str = "") -> str:
    """``scpl: epoch 3/20  losses 0.512 0.430 -  val 0.8812  41.2 s`` (no ``val`` without a
    validation split, no label without one)."""
    val = "" if val_accuracy is None else f"  val {val_accuracy:.4f}"
    prefix = f"{label}: " if label else ""
    return f"{prefix}epoch {epoch}/{epochs}  losses {format_losses(losses)}{val}  {seconds:.1f} s"


def chain(*callbacks: Optional[Callable[[int, list[float]], None]]
          ) -> Optional[Callable[[int, list[float]], None]]:
    """One ``on_step`` callback calling each given one (None when none is given)."""
    given = [c for c in callbacks if c is not None]
    if not given:
        return None

    def on_step(step: int, losses: list[float]) -> None:
        for callback in given:
            callback(step, losses)

    return on_step
