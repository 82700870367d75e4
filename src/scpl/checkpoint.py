"""Checkpoints: one file per block (so each pipeline rank writes its own), written atomically.

``save_blocks`` writes ``block-{k}.pt`` holding block k's parameters, optimizer and scheduler
state and step count; ``load_blocks`` restores them; ``merge_blocks`` assembles the plain
``state_dict`` of the whole model from the per-block files (e.g. after a distributed run).

Every file written by :func:`atomic_save` gets a ``.sha256`` file beside it (written after it,
also atomically); :func:`load` checks it, so a corrupted or truncated file is named instead of
being loaded (or failing with a torch error about zip archives).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Optional, Union

import torch

from .errors import ConfigError, WriteError


def _atomic_write(path: str | Path, mode: str, write: Callable[[IO], object]) -> None:
    """Call ``write`` on a temporary file in ``path``'s folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise WriteError(f"could not write {path} ({exc.strerror or exc})") from exc
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        os.unlink(tmp)
        if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "write" in str(exc)):
            why = getattr(exc, "strerror", None) or str(exc).splitlines()[0][:200]
            raise WriteError(f"could not write {path} ({why}; is the disk full?)") from exc
        raise


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``;
    then the file's SHA-256 to ``path.sha256`` (see :func:`load`)."""
    _atomic_write(path, "wb", lambda f: torch.save(obj, f))
    atomic_write_text(sha256(path) + "\n", checksum_path(path))


def sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_path(path: str | Path) -> Path:
    """Where :func:`atomic_save` records ``path``'s SHA-256."""
    return Path(f"{path}.sha256")


def verify(path: str | Path) -> None:
    """Raise :class:`ConfigError` naming ``path`` if it is missing or differs from its recorded
    SHA-256. A file without a ``.sha256`` beside it (copied without it, or written by other code)
    is loaded with a warning that names it: it cannot be checked, and refusing it would refuse
    every plain ``state_dict`` a user saves."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} is missing")
    recorded = checksum_path(path)
    if not recorded.exists():
        warnings.warn(f"{path} has no {recorded.name} beside it: it is loaded unchecked (a damaged file "
                      "would load silently); copy the checksum file with it", RuntimeWarning, stacklevel=3)
    elif recorded.read_text().strip() != sha256(path):
        raise ConfigError(f"{path} is corrupted: its SHA-256 differs from the one recorded when it was "
                          f"written ({recorded.name}); restore it from a copy or use an earlier checkpoint")


def load(path: str | Path, weights_only: bool = True) -> Any:
    """``torch.load`` of a file written by :func:`atomic_save`, checked first (:func:`verify`);
    an unreadable file raises :class:`ConfigError` naming it."""
    verify(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # truncated, not a torch file, ...
        raise ConfigError(f"{path} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                          "it is damaged or not a checkpoint") from exc


def read_json(path: str | Path) -> Any:
    """A JSON file's content; a missing, empty or damaged file raises :class:`ConfigError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"{path} is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is damaged (not valid JSON: {exc}); it was cut short or edited") from exc


def atomic_write_text(text: str, path: str | Path) -> None:
    """Write ``text`` atomically (as :func:`atomic_save`)."""
    _atomic_write(path, "w", lambda f: f.write(text))


def block_path(directory: str | Path, index: int) -> Path:
    """The file of block ``index`` in ``directory``."""
    return Path(directory) / f"block-{index}.pt"


def _indices(blocks: Union[int, Iterable[int], None], num_blocks: int) -> list[int]:
    if blocks is None:
        return list(range(num_blocks))
    indices = [blocks] if isinstance(blocks, int) else list(blocks)
    bad = [k for k in indices if not isinstance(k, int) or not 0 <= k < num_blocks]
    if bad:
        raise ConfigError(f"block indices must lie in [0, {num_blocks}), got {bad}")
    return indices


def save_blocks(model, directory: str | Path, blocks: Union[int, Iterable[int], None] = None) -> list[Path]:
    """Write the given blocks (an index, several, default all) of a DecoupledModel, one atomic
    file each (with its checksum)."""
    if Path(directory).exists() and not Path(directory).is_dir():
        raise ConfigError(f"save_blocks writes one file per block into a folder, and {directory} is a file; "
                          "give a folder (it is created if needed)")
    written = []
    for k in _indices(blocks, len(model.blocks)):
        block = model.blocks[k]
        atomic_save({
            "index": k,
            "num_blocks": len(model.blocks),
            "method": model.method,
            "state": block.state_dict(),
            "optimizer": block.optimizer.state_dict() if block.optimizer is not None else None,
            "scheduler": block.scheduler.state_dict() if block.scheduler is not None else None,
            "steps": block.steps,
        }, block_path(directory, k))
        written.append(block_path(directory, k))
    return written


def _read(directory: str | Path, k: int, num_blocks: int, method: Optional[str] = None) -> dict:
    path = block_path(directory, k)
    if not path.exists():
        raise ConfigError(f"{path} is missing: every rank must save its block "
                          "before the model can be merged or loaded")
    data = load(path)
    if data["num_blocks"] != num_blocks:
        raise ConfigError(f"{path} belongs to a model of {data['num_blocks']} blocks, not {num_blocks}")
    if method is not None and data.get("method", method) != method:
        raise ConfigError(f"{path} holds a block of a {data['method']!r} model; "
                          f"this model's method is {method!r}")
    return data


def load_blocks(model, directory: str | Path, blocks: Union[int, Iterable[int], None] = None,
                weights_only: bool = False) -> None:
    """Restore parameters, optimizer, scheduler and step count of the given blocks (an index,
    several, default all); with ``weights_only`` only the parameters and buffers. Files are
    checked against their checksums; a block of another method or shape raises
    :class:`ConfigError` naming the file.
    """
    k_all = len(model.blocks)
    for k in _indices(blocks, k_all):
        data, block = _read(directory, k, k_all, model.method), model.blocks[k]
        try:
            block.load_state_dict(data["state"])
        except RuntimeError as exc:
            raise ConfigError(f"{block_path(directory, k)} does not fit block {k} of this model (a model of "
                              f"other layers or heads): {str(exc).splitlines()[0][:300]}") from exc
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

