"""The results page's headline: each method's gap to BP on every workload, and the targets with
their verdicts, computed from the cache (the tables below it on the page hold the runs)."""

from __future__ import annotations

import statistics
from typing import NamedTuple, Optional

from .depth import depth_name
from .spec import SEEDS, parity_name

METHODS = ("scpl", "deinforeg", "greedy", "contsup", "dascpl")
WORKLOADS = {  # column -> (title, how a method's runs are named, seeds)
    "fmnist": ("Fashion-MNIST CNN, 4 blocks", "fmnist-cnn-parity"),
    "transformer": ("Debian Transformer, 4 blocks", "debian-transformer-parity"),
    "lstm": ("Debian LSTM, 4 blocks", "debian-lstm-parity"),
    "k8": ("ResNet-32, K=8", 8),
    "k16": ("ResNet-32, K=16", 16),
}
DEPTH_METHODS = {"contsup": "contsup R1E"}
"""The depth grid's row for a method where its name differs (ContSup's default mode)."""


def run_name(workload: str, method: str, seed: int) -> str:
    """The cache name of ``method``'s run at ``seed`` on ``workload`` (BP: one run for the depths)."""
    where = WORKLOADS[workload][1]
    if isinstance(where, int):
        return depth_name(method if method == "bp" else DEPTH_METHODS.get(method, method), where, seed)
    return parity_name(where, method, seed)


def gap(runs: dict[str, dict], workload: str, method: str,
        split: str = "test_accuracy") -> Optional[tuple[float, int]]:
    """``method``'s mean gap to BP at the same seed (points) and the number of seeds, or None."""
    pairs = [(run_name(workload, method, s), run_name(workload, "bp", s)) for s in SEEDS]
    found = [100 * (runs[a]["summary"][split] - runs[b]["summary"][split]) for a, b in pairs
             if a in runs and b in runs]
    return (statistics.mean(found), len(found)) if found else None


class Target(NamedTuple):
    """``method`` at most ``margin`` points below ``against`` (``"bp"``, another method, or
    ``"best"``: the method with the best validation gap to BP must be within ``margin`` of BP on
    test) on ``workload``."""

    workload: str
    method: str
    margin: float
    against: str = "bp"


TARGETS = (
    Target("fmnist", "scpl", 0.5), Target("fmnist", "deinforeg", 0.5), Target("fmnist", "contsup", 0.5),
    Target("fmnist", "greedy", 1.0), Target("fmnist", "dascpl", 1.0, "scpl"),
    Target("transformer", "scpl", 1.5), Target("transformer", "deinforeg", 1.5),
    *(Target("lstm", m, 0.0) for m in ("scpl", "dascpl", "greedy", "deinforeg")),
    Target("k8", "best", 0.5), *(Target("k8", m, 2.0) for m in METHODS),
    Target("k16", "best", 1.0), Target("k16", "scpl", 2.0), Target("k16", "contsup", 2.0),
)
"""The targets of the parity and depth issues: test accuracy, gap to BP at the same seed."""


def verdict(runs: dict[str, dict], target: Target) -> Optional[tuple[str, str]]:
    """(measured, verdict) of ``target``, or None before its runs are cached."""
    if target.method == "best":  # the best on validation (never chosen on test), judged on test
        chosen = {m: g for m in METHODS if (g := gap(runs, target.workload, m, "val_accuracy")) is not None}
        if not chosen:
            return None
        method = max(chosen, key=lambda m: chosen[m][0])
        found = gap(runs, target.workload, method)
        assert found is not None  # a run with a validation score has a test score
        value, seeds = found
        measured = f"{method} {value:+.2f}"
    else:
        mine = gap(runs, target.workload, target.method)
        other = gap(runs, target.workload, target.against) if target.against != "bp" else (0.0, 0)
        if mine is None or other is None:
            return None
        value, seeds = mine[0] - other[0], mine[1]
        measured = f"{value:+.2f}"
    measured += f" ({seeds} seed{'s' if seeds > 1 else ''})"
    held = value >= -target.margin - 1e-9
    return measured, "holds" if held else f"**missed by {-target.margin - value:.2f}**"


def headline(runs: dict[str, dict]) -> list[str]:
    """The gap table and the targets table (empty before any run of a workload is cached)."""
    columns = [w for w in WORKLOADS if any(gap(runs, w, m) for m in METHODS)]
    if not columns:
        return []
    bp = []
    for w in columns:
        names = [n for s in SEEDS if (n := run_name(w, "bp", s)) in runs]
        tests = [runs[n]["summary"]["test_accuracy"] for n in names]
        bp.append(f"{100 * statistics.mean(tests):.2f}" if tests else "-")
    lines = ["Each decoupled method's test accuracy against BP trained with the same seed (points, mean over "
             "the seeds where both are cached: 3 for the parity workloads; the depth grid's seed 0 unless "
             "more are cached), with the defaults a user gets:", "",
             "| method | " + " | ".join(WORKLOADS[w][0] for w in columns) + " |",
             "| --- |" + " ---: |" * len(columns),
             "| BP's test accuracy % | " + " | ".join(bp) + " |"]
    for method in METHODS:
        cells = ["-" if (c := gap(runs, w, method)) is None else f"{c[0]:+.2f}" for w in columns]
        lines.append(f"| {method} | {' | '.join(cells)} |")
    rows = [(t, found) for t in TARGETS if (found := verdict(runs, t)) is not None]
    if rows:
        lines += ["", "| target (test, gap to BP at the same seed) | measured | verdict |",
                  "| --- | ---: | --- |"]
        for target, (measured, outcome) in rows:
            who = "the best method on validation" if target.method == "best" else target.method
            against = "BP" if target.against == "bp" else target.against.upper()
            bound = f">= {against} - {target.margin:g}" if target.margin else f">= {against}"
            lines.append(f"| {WORKLOADS[target.workload][0]}: {who} {bound} | {measured} | {outcome} |")
    return lines + [""]
