"""A run's metrics: long rows ``epoch, block, name, value`` in ``metrics.csv``, and TensorBoard."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Iterable, Optional

from ..checkpoint import atomic_write_text
from ..errors import ConfigError

FIELDS = ["epoch", "block", "name", "value"]


class MetricsLog:
    """Per-epoch metrics as long rows ``epoch, block, name, value`` to ``metrics.csv`` (rewritten
    atomically each epoch, so it always matches the checkpoint) and, optionally, TensorBoard."""

    def __init__(self, out: Optional[Path], tensorboard: bool, rows: Optional[list] = None):
        self.out, self.rows = out, list(rows or [])
        self.writer = None
        if tensorboard and out:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ConfigError("tensorboard logging needs the tensorboard package: pip install "
                                  "tensorboard (or pip install 'scpl[logs]')") from exc
            self.writer = SummaryWriter(str(out / "tensorboard"))

    def add(self, rows: Iterable[tuple]) -> None:
        """Append ``(epoch, block, name, value)`` rows (also to TensorBoard) and rewrite ``metrics.csv``."""
        for epoch, block, name, value in rows:
            self.rows.append({"epoch": epoch, "block": block, "name": name, "value": float(value)})
            if self.writer is not None:
                tag = f"{name}/block{block}" if block != "" else name
                self.writer.add_scalar(tag, float(value), epoch)
        if self.out:
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
            atomic_write_text(text.getvalue(), self.out / "metrics.csv")

    def close(self) -> None:
        """Close the TensorBoard writer, if any."""
        if self.writer is not None:
            self.writer.close()
