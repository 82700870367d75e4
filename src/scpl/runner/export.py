"""What a finished run leaves behind: the selected model, its config, its summary and plots.

Output folder (``out``)::

    model.pt                  plain state_dict of the selected (best validation) epoch's model
    config.yaml               the resolved config
    summary.json              the result (see :func:`summary`) and the config
    vocab.txt                 text sets: the vocabulary, one token per line
    curves.png, timeline.png  loss/accuracy per block; pipeline timeline (threads)
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

from ..block import compile_report
from ..checkpoint import atomic_save, atomic_write_text, merge_blocks
from ..executors import ThreadedExecutor
from .assemble import Run
from .state import Progress, epoch_dir


def environment() -> dict:
    """Versions and the device: scpl, torch and Python versions, and the host's device."""
    from .. import __version__

    if torch.cuda.is_available():
        device = f"cuda: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
    else:
        device = f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    return {"scpl": __version__, "torch": torch.__version__, "python": platform.python_version(),
            "host": platform.node(), "device": device}


def summary(run: Run, progress: Progress, test_accuracy: float, test_exits: list[Optional[float]],
            started: Optional[str] = None) -> dict:
    """The run's result: ``method``, ``dataset``, ``val_accuracy`` (of the selected epoch),
    ``best_epoch``, ``test_accuracy``, ``train_seconds``, ``samples_per_s``, the settings that
    identify it, when it ``started`` (this invocation) and its ``environment``."""
    cfg = run.cfg
    last = {r["name"]: r["value"] for r in progress.rows if r["epoch"] == progress.epoch and r["block"] == ""}
    return {
        "method": cfg.method, "dataset": cfg.dataset, "model": cfg.model, "executor": cfg.executor,
        "num_blocks": len(run.model.blocks),
        "blocks": run.model.balanced_cut.counts if run.model.balanced_cut is not None else cfg.blocks,
        "split_points": run.model.split_points,
        "val_accuracy": progress.best_val if run.val_batches is not None else None,
        "best_epoch": progress.best_epoch,
        "test_accuracy": test_accuracy, "test_exit_accuracy": test_exits or None, "epochs": cfg.epochs,
        "seed": cfg.seed, "train_seconds": progress.train_seconds,
        "samples_per_s": progress.samples / max(progress.train_seconds, 1e-9),
        "precision": cfg.precision, "label_noise": cfg.label_noise, "rank": run.rank, "world_size": run.world,
        "final_train_accuracy": last.get("train_accuracy"),
        "final_train_clean_accuracy": last.get("train_clean_accuracy"),
        "started": started, "environment": environment(),
        "compile": compile_report() if cfg.compile else None,
    }


def export(run: Run, out: Path, result: dict) -> None:
    """Write the selected model and the run's files (rank 0, once every rank got here)."""
    if run.cfg.executor == "distributed":
        dist.barrier()
    if run.rank != 0:
        return
    atomic_save(merge_blocks(epoch_dir(out, result["best_epoch"]), len(run.model.blocks)), out / "model.pt")
    import yaml

    atomic_write_text(yaml.safe_dump(asdict(run.cfg), sort_keys=False), out / "config.yaml")
    atomic_write_text(json.dumps({**result, "config": asdict(run.cfg)}, indent=2), out / "summary.json")
    if run.bundle.vocab is not None:
        atomic_write_text("\n".join(run.bundle.vocab.itos) + "\n", out / "vocab.txt")
    if run.cfg.plots:
        from .. import plots

        plots.plot_curves(plots.read_metrics_csv(out / "metrics.csv"), out / "curves.png")
        if isinstance(run.executor, ThreadedExecutor) and run.executor.events:
            plots.plot_timeline([e for e in run.executor.events if e.step < 8], out / "timeline.png",
                                title=f"{run.cfg.method}, {len(run.model.blocks)} blocks, "
                                      "threads: first 8 steps")
