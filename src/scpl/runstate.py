"""A training run's checkpoints as complete sets, one per epoch.

``OUT/epochs/{e}/`` holds epoch e's block files (``block-{k}.pt``, see :mod:`scpl.checkpoint`)
and every rank's trainer state (``trainer-{rank}.pt``: progress, metrics, random streams).
Only after all of them are on disk (all ranks past a barrier) does rank 0 replace
``OUT/latest.json`` (atomically) to name epoch e; so a crash at any moment leaves the previous
complete set in charge, never a mix of epochs. Sets other than the latest and the best
(validation) epoch's are then deleted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from .checkpoint import atomic_save, atomic_write_text, save_blocks

LATEST = "latest.json"


def epoch_dir(out: Path, epoch: int) -> Path:
    return out / "epochs" / str(epoch)


def write(model, out: Path, epoch: int, rank: int, blocks: Optional[Iterable[int]], trainer: dict[str, Any]) -> None:
    """This rank's part of epoch ``epoch``'s set: its blocks and its trainer state."""
    folder = epoch_dir(out, epoch)
    save_blocks(model, folder, blocks)
    atomic_save(trainer, folder / f"trainer-{rank}.pt")


def commit(out: Path, epoch: int, keep: Iterable[int]) -> None:
    """Name ``epoch`` the latest complete set (call once, after every rank wrote); drop sets not in ``keep``."""
    atomic_write_text(json.dumps({"epoch": epoch}), out / LATEST)
    keep = {str(e) for e in (*keep, epoch)}
    for folder in (out / "epochs").iterdir():
        if folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def latest(out: Path) -> Optional[int]:
    """The epoch of the latest complete set, or None if there is none."""
    path = out / LATEST
    return json.loads(path.read_text())["epoch"] if path.exists() else None


def read_trainer(out: Path, epoch: int, rank: int) -> dict[str, Any]:
    return torch.load(epoch_dir(out, epoch) / f"trainer-{rank}.pt", map_location="cpu", weights_only=False)
