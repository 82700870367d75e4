"""Training recipes shipped with scpl, as YAML files of :class:`scpl.runner.TrainConfig` keys.

``*-paper`` recipes follow the original papers (see docs/methods.md); the others are fast settings for a
small CPU machine. Use them with ``scpl train --config NAME`` (flags override their values).
"""

from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).parent


def names() -> list[str]:
    """The names of the shipped recipes."""
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


def path(name: str) -> Path:
    """The file of the shipped recipe ``name`` (it may not exist)."""
    return FOLDER / f"{name}.yaml"
