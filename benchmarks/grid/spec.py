"""A run of the results grid: its cache name, where its number goes, its command."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

CACHE = Path(__file__).resolve().parents[1] / "results-cache.jsonl"
"""Every finished run's summary and curves, one JSON line per run (committed)."""
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Spec:
    """One run: its cache name, where its number goes (tier, table, row) and its arguments."""

    name: str
    tier: str
    table: str
    row: str
    args: tuple[str, ...]
    seed: int = 0
    note: str = ""
    eval_of: Optional[str] = None  # ``scpl eval`` of this run's folder instead of a training run

    def command(self, out: Path) -> list[str]:
        if self.eval_of is not None:
            return ["scpl", "eval", str(out / self.eval_of), *self.args, "--json"]
        return ["scpl", "train", *self.args, "--out", str(out / self.name), "--json", "--no-progress"]



def ablation_name(workload: str, method: str, extra: list[str]) -> str:
    """A run's cache name from its arguments (stable: the same command, the same name)."""
    text = "-".join(a.lstrip("-") for a in extra) or "baseline"
    return "ablation-" + re.sub(r"[^a-z0-9.]+", "-", f"{workload}-{method}-{text}".lower()).strip("-")



def _seed(args: list[str]) -> int:
    """The ``--seed`` among a run's arguments (0 when absent: the recipes' seed)."""
    return int(args[args.index("--seed") + 1]) if "--seed" in args else 0


def parity_name(grid: str, method: str, seed: int, suffix: str = "") -> str:
    """A parity run's cache name; ``suffix`` (e.g. :data:`BEFORE`) marks a pinned older default.
    BP is one block, the same run under every ``block_lr``: it has no suffix."""
    return f"{grid}-{method}-s{seed}" + (f"-{suffix}" if suffix and method != "bp" else "")



def portable(command: str) -> str:
    """A command with its output folder shown as ``results/NAME``, wherever it ran."""
    return re.sub(r"\S*/results/", "results/", command)

