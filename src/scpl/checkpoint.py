"""Checkpoints: one file per block (so each pipeline rank writes its own), written atomically.

``save_blocks`` writes ``block-{k}.pt`` holding block k's parameters, optimizer and scheduler
state and step count; ``load_blocks`` restores them; ``merge_blocks`` assembles the plain
``state_dict`` of the whole model from the per-block files (e.g. after a distributed run).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Optional

import torch

from .errors import ConfigError


def _atomic_write(path: str | Path, mode: str, write: Callable[[IO], None]) -> None:
    """Call ``write`` on a temporary file in ``path``'s folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    _atomic_write(path, "wb", lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write ``text`` atomically (as :func:`atomic_save`)."""
    _atomic_write(path, "w", lambda f: f.write(text))


def block_path(directory: str | Path, index: int) -> Path:
    return Path(directory) / f"block-{index}.pt"


def save_blocks(model, directory: str | Path, blocks: Optional[Iterable[int]] = None) -> list[Path]:
    """Write the given blocks (default: all) of a DecoupledModel, one atomic file each."""
    written = []
    for k in blocks if blocks is not None else range(len(model.blocks)):
        block = model.blocks[k]
        atomic_save({
            "index": k,
            "num_blocks": len(model.blocks),
            "state": block.state_dict(),
            "optimizer": block.optimizer.state_dict() if block.optimizer is not None else None,
            "scheduler": block.scheduler.state_dict() if block.scheduler is not None else None,
            "steps": block.steps,
        }, block_path(directory, k))
        written.append(block_path(directory, k))
    return written


def _read(directory: str | Path, k: int, num_blocks: int) -> dict:
    path = block_path(directory, k)
    if not path.exists():
        raise ConfigError(f"{path} is missing: every rank must save its block before the model can be merged or loaded")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if data["num_blocks"] != num_blocks:
        raise ConfigError(f"{path} belongs to a model of {data['num_blocks']} blocks, not {num_blocks}")
    return data


def load_blocks(model, directory: str | Path, blocks: Optional[Iterable[int]] = None, weights_only: bool = False) -> None:
    """Restore parameters, optimizer, scheduler and step count of the given blocks (default: all);
    with ``weights_only`` only the parameters and buffers."""
    k_all = len(model.blocks)
    for k in blocks if blocks is not None else range(k_all):
        data, block = _read(directory, k, k_all), model.blocks[k]
        block.load_state_dict(data["state"])
        if weights_only:
            continue
        if data["optimizer"] is not None and block.optimizer is not None:
            block.optimizer.load_state_dict(data["optimizer"])
        if data["scheduler"] is not None and block.scheduler is not None:
            block.scheduler.load_state_dict(data["scheduler"])
        block.steps = data["steps"]


def merge_blocks(directory: str | Path, num_blocks: int) -> dict[str, torch.Tensor]:
    """The whole model's ``state_dict`` (keys ``blocks.{k}.…``) from the per-block files."""
    merged = {}
    for k in range(num_blocks):
        for name, value in _read(directory, k, num_blocks)["state"].items():
            merged[f"blocks.{k}.{name}"] = value
    return merged

