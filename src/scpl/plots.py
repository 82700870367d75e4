"""PNG plots of training curves, run comparisons, pipeline timelines and early-exit histograms.

Every function draws on its own :class:`matplotlib.figure.Figure` with the Agg canvas (no
pyplot, no global state, no display needed), writes a PNG to ``path`` and returns it as a
:class:`~pathlib.Path`. Empty or unusable input raises :class:`ValueError`.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

PathLike = Union[str, Path]

CURVES = ("train_loss", "val_accuracy", "lr")
_TITLES = {"train_loss": "train loss", "val_accuracy": "validation accuracy", "lr": "learning rate"}


def read_metrics_csv(path: PathLike) -> list[dict]:
    """Rows of a metrics CSV (header ``epoch,block,name,value``) with types restored.

    ``epoch`` becomes an int, ``block`` an int or None (empty cell: a whole-model metric),
    ``name`` stays a str and ``value`` becomes a float.
    """
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"epoch", "block", "name", "value"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: metrics CSV lacks column(s) {sorted(missing)}; "
                             "expected header epoch,block,name,value")
        return [_metric(row) for row in reader]


def _metric(row: dict) -> dict:
    block = row.get("block")
    block = None if block is None or block == "" else int(block)
    return {"epoch": int(row["epoch"]), "block": block, "name": str(row["name"]),
            "value": float(row["value"])}


def plot_curves(rows: Iterable[dict], path: PathLike) -> Path:
    """One panel per metric among ``train_loss``, ``val_accuracy`` and ``lr`` found in ``rows``.

    ``rows`` are long-format metrics (dicts with ``epoch``, ``block``, ``name``, ``value``; a
    ``block`` of None or "" means the whole model). Each panel has one line per block (label
    ``block k``) plus a ``model`` line for whole-model values, against the epoch; the loss
    panel is log-scaled when every loss is positive. Other metric names are ignored.
    """
    series: dict[str, dict[Optional[int], list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for row in map(_metric, rows):
        if row["name"] in CURVES:
            series[row["name"]][row["block"]].append((row["epoch"], row["value"]))
    names = [n for n in CURVES if n in series]
    if not names:
        raise ValueError(f"plot_curves: no rows named any of {list(CURVES)}; nothing to plot")
    fig = _figure((5.0 * len(names), 3.6))
    for ax, name in zip(fig.subplots(1, len(names), squeeze=False)[0], names):
        lines = series[name]
        for block in sorted(lines, key=lambda b: (b is None, b or 0)):
            points = sorted(lines[block])
            ax.plot([e for e, _ in points], [v for _, v in points], marker="o", markersize=3,
                    label="model" if block is None else f"block {block}",
                    color="black" if block is None else None)
        if name == "train_loss" and all(v > 0 for pts in lines.values() for _, v in pts):
            ax.set_yscale("log")
        ax.set(title=_TITLES[name], xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)


def plot_runs(runs: Mapping[str, Mapping[str, Sequence[float]]], metrics: Sequence[str],
              path: PathLike, titles: Optional[Mapping[str, str]] = None, title: str = "") -> Path:
    """Several runs side by side: one panel per metric, one line per run.

    ``runs`` maps a run's label to its whole-model curves (metric name to one value per epoch,
    epoch 1 first, as in ``benchmarks/results-cache.jsonl``); ``metrics`` picks and orders the
    panels, ``titles`` names them (default: the metric name). A run lacking a metric has no line
    in that panel; a metric no run has raises :class:`ValueError`.
    """
    if not runs or not metrics:
        raise ValueError(f"plot_runs: nothing to plot ({len(runs)} runs, metrics {list(metrics)})")
    missing = [m for m in metrics if not any(run.get(m) for run in runs.values())]
    if missing:
        raise ValueError(f"plot_runs: no run has {missing}; runs: {sorted(runs)}")
    fig = _figure((4.6 * len(metrics), 3.6))
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics):
        for label, curves in runs.items():
            values = curves.get(metric) or []
            ax.plot(range(1, len(values) + 1), values, label=label, linewidth=1.4)
        ax.set(title=(titles or {}).get(metric, metric), xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_tradeoff(curves: Mapping[str, Sequence[dict]], path: PathLike, title: str = "") -> Path:
    """Early exit's trade-off: accuracy against the share of block compute saved, one panel per
    entry of ``curves`` (e.g. ``{"validation": rows, "test": rows}``), one line per rule.

    ``rows`` are :func:`scpl.early_exit.tradeoff`'s (``rule``, ``patience``, ``threshold``,
    ``accuracy``, ``compute_saved``); each point is labelled with its threshold.
    """
    if not curves or not all(curves.values()):
        raise ValueError(f"plot_tradeoff: every panel needs rows, got {[len(r) for r in curves.values()]}")
    fig = _figure((5.2 * len(curves), 3.8))
    for ax, (name, rows) in zip(fig.subplots(1, len(curves), squeeze=False)[0], curves.items()):
        rules: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            label = row["rule"] if row.get("patience") is None else f"{row['rule']} {row['patience']}"
            rules[label].append(row)
        for label, points in rules.items():
            points = sorted(points, key=lambda r: r["compute_saved"])
            xs = [100 * r["compute_saved"] for r in points]
            ys = [100 * r["accuracy"] for r in points]
            ax.plot(xs, ys, marker="o", markersize=3, label=label)
            for x, y, r in zip(xs, ys, points):
                ax.annotate(f"{r['threshold']:g}", (x, y), fontsize=6, xytext=(2, 2),
                            textcoords="offset points")
        ax.set(title=name, xlabel="block compute saved (%)", ylabel="accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_timeline(events: Iterable[Any], path: PathLike, title: str = "") -> Path:
    """Gantt chart of a pipeline trace: one row per stage (stage 0 on top), one bar per event.

    ``events`` are objects or dicts with ``stage``, ``step``, ``micro``, ``start`` and ``end``
    (seconds, e.g. :class:`scpl.executors.threads.TraceEvent`). Bars span start..end in
    milliseconds, are coloured by step (cycling a qualitative colormap) and labelled
    ``step.micro`` when wide enough, so overlap between stages is visible at a glance.
    """
    events = [{k: _field(e, k) for k in ("stage", "step", "micro", "start", "end")} for e in events]
    if not events:
        raise ValueError("plot_timeline: no events to plot (was the executor built with trace=True?)")
    t0 = min(e["start"] for e in events)
    span = max(e["end"] for e in events) - t0 or 1.0
    fig = _figure((10.0, 1.2 + 0.7 * (1 + max(e["stage"] for e in events))))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["tab10"]
    for e in events:
        x, w = (e["start"] - t0) * 1e3, (e["end"] - e["start"]) * 1e3
        ax.broken_barh([(x, w)], (e["stage"] - 0.4, 0.8), facecolors=cmap(e["step"] % cmap.N),
                       edgecolor="white", linewidth=0.5)
        if w > span * 1e3 / 60:
            ax.text(x + w / 2, e["stage"], f"{e['step']}.{e['micro']}", ha="center", va="center", fontsize=7)
    stages = sorted({e["stage"] for e in events})
    ax.set_yticks(stages, [f"stage {s}" for s in stages])
    ax.set_ylim(max(stages) + 0.6, min(stages) - 0.6)
    ax.set(xlabel="time (ms)", title=title or "pipeline timeline (bars: step.micro, colour: step)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def plot_exit_histogram(exits: Sequence[int], path: PathLike,
                        accuracy: Optional[Sequence[float]] = None) -> Path:
    """Bar chart of how many samples exited at each block (``exits[k]``: count at block ``k``).

    Bars are annotated with their share of all samples. ``accuracy`` (one value in [0, 1] per
    block, NaN where no sample exited) is drawn as a line on a second y axis.
    ``exits`` is e.g. :attr:`scpl.early_exit.ExitReport.exits`.
    """
    counts = [int(c) for c in exits]
    if not counts or sum(counts) <= 0 or min(counts) < 0:
        raise ValueError("plot_exit_histogram: need non-negative exit counts with a positive total, "
                         f"got {counts}")
    if accuracy is not None and len(accuracy) != len(counts):
        raise ValueError(f"plot_exit_histogram: {len(accuracy)} accuracies for {len(counts)} blocks")
    fig = _figure((max(4.0, 1.0 + 0.8 * len(counts)), 3.6))
    ax = fig.subplots()
    blocks = range(len(counts))
    bars = ax.bar(blocks, counts, color="tab:blue", alpha=0.8)
    ax.bar_label(bars, [f"{100 * c / sum(counts):.1f}%" for c in counts], fontsize=8)
    ax.set(xlabel="exit block", ylabel="samples", xticks=list(blocks), title="early exits")
    ax.margins(y=0.15)
    if accuracy is not None:
        acc = ax.twinx()
        acc.plot(blocks, [math.nan if a is None else float(a) for a in accuracy], color="tab:red", marker="o")
        acc.set_ylim(0, 1.05)
        acc.set_ylabel("accuracy at exit", color="tab:red")
    return _save(fig, path)


def _field(event: Any, key: str) -> Any:
    return event[key] if isinstance(event, dict) else getattr(event, key)


def plot_depth(accuracy: Mapping[str, Mapping[int, float]], bp: float, path: PathLike,
               title: str = "") -> Path:
    """Test accuracy (%) against the number of blocks K, one line per method (``accuracy``: method
    -> K -> accuracy), BP as a horizontal line; K on a log-2 axis."""
    if not accuracy:
        raise ValueError("plot_depth: no method to plot")
    fig = _figure((6.4, 4.2))
    ax = fig.subplots()
    ks = sorted({k for by_k in accuracy.values() for k in by_k})
    for label, by_k in accuracy.items():
        points = sorted(by_k.items())
        ax.plot([k for k, _ in points], [a for _, a in points], marker="o", linewidth=1.4, label=label)
    ax.axhline(bp, color="black", linestyle="--", linewidth=1.2, label="BP")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(xlabel="blocks K", ylabel="test accuracy %", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    return _save(fig, path)


def _figure(size: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path
