"""``scpl eval``: test a trained run's exported model, optionally with per-sample early exit."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import yaml

from .checkpoint import load, read_json
from .early_exit import Confidence, PatienceCosine, block_seconds, early_exit, tradeoff
from .errors import ConfigError
from .exit_rules import Policy
from .runner import TrainConfig, build
from .runner.config import legacy_config


def load_run(folder: str | Path, **overrides):
    """Rebuild a finished run from ``folder`` (its config.yaml and summary.json) and load model.pt.

    The block cut is taken from the summary (an ``auto`` cut is not re-profiled); the executor
    is sequential unless ``overrides`` say otherwise.
    """
    folder = Path(folder)
    for name in ("config.yaml", "summary.json", "model.pt"):
        if not (folder / name).exists():
            raise ConfigError(f"{folder / name} not found: "
                              "give the --out folder of a finished `scpl train` run")
    try:
        values = yaml.safe_load((folder / "config.yaml").read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{folder / 'config.yaml'} is not valid YAML: {exc}") from exc
    summary = read_json(folder / "summary.json")
    saved = summary.get("config", {})
    edited = sorted(k for k in saved if isinstance(values, dict) and values.get(k) != saved[k])
    if not isinstance(values, dict) or edited:
        raise ConfigError(f"{folder / 'config.yaml'} differs from the config the run trained with "
                          f"(summary.json) in {edited or 'its structure'}; "
                          "it was edited: restore it, or retrain")
    values.update(blocks=summary["blocks"], executor="sequential", replicas=1, out=None, resume=False,
                  progress=False, num_blocks=None)  # model.pt holds every block: one process runs it
    values.update(overrides)
    cfg = TrainConfig.from_dict(legacy_config(values))
    run = build(cfg)
    try:
        run.model.load_state_dict(load(folder / "model.pt"))
    except RuntimeError as exc:
        raise ConfigError(f"{folder / 'model.pt'} does not fit the model its config describes: "
                          f"{str(exc).splitlines()[0][:300]}") from exc
    return run


def per_class(predictions: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> list[dict]:
    """For each class: its share of the samples, its recall (None for a class with no samples),
    and the share of predictions naming it.

    The recalls weighted by the shares add up to the accuracy (a None recall has weight 0).
    """
    n = max(labels.numel(), 1)
    rows = []
    for c, name in enumerate(names):
        members = labels == c
        count = int(members.sum())
        rows.append({"class": c, "name": name, "share": count / n,
                     "recall": float((predictions[members] == c).float().mean()) if count else None,
                     "predicted_share": int((predictions == c).sum()) / n})
    return rows


def evaluate_run(folder: str | Path, split: str = "test", policy: Optional[str] = None, patience: int = 1,
                 cosine: float = 0.8, threshold: float = 0.9, histogram: Optional[str | Path] = None,
                 by_class: bool = False, sweep: bool = False) -> dict:
    """Accuracy of the exported model on ``split``; with ``by_class`` also :func:`per_class`;
    with ``policy`` (``"patience"`` or ``"confidence"``) also early exit's accuracy, exit
    histogram and block compute saved (per block call, and weighted by each block's measured
    forward time); with ``sweep`` also the early-exit trade-off of every rule and threshold of
    :data:`scpl.early_exit.TRADEOFF_POLICIES` (``tradeoff``: accuracy, block calls saved and the
    calls weighted by each block's measured forward time).
    """
    rules: dict[str, Callable[[], Policy]] = {"patience": lambda: PatienceCosine(patience, cosine),
                                              "confidence": lambda: Confidence(threshold)}
    if policy is not None and policy not in rules:
        raise ConfigError(f"policy must be 'patience' or 'confidence', got {policy!r}")
    rule = rules[policy]() if policy is not None else None  # a rule out of range fails before the model loads
    run = load_run(folder)
    batches = {"test": run.test_batches, "val": run.val_batches}.get(split)
    if batches is None:
        raise ConfigError(f"split must be 'test' or 'val' (with a validation split), got {split!r}")
    result = {"split": split, "accuracy": run.model.evaluate(batches)["accuracy"],
              "method": run.cfg.method, "dataset": run.cfg.dataset}
    if by_class:
        labels = torch.cat([y.cpu() for _, y in batches])
        names = run.bundle.class_names or [str(c) for c in range(run.bundle.num_classes)]
        result["per_class"] = per_class(run.model.predict(batches), labels, names)
    if sweep:
        if run.model.blocks[0].classifier is None:
            raise ConfigError("the early-exit trade-off needs exit classifiers: "
                              "train with method dascpl or exits: true")
        result["tradeoff"] = tradeoff(run.model, batches,
                                      block_costs=block_seconds(run.model, next(iter(batches))[0]))
    if rule is None:
        return result
    if run.model.blocks[0].classifier is None:
        raise ConfigError("early exit needs exit classifiers: train with method dascpl or exits: true")
    calls = early_exit(run.model, batches, rule)
    costs = block_seconds(run.model, next(iter(batches))[0])
    timed = early_exit(run.model, batches, rule, block_costs=costs)
    result.update(policy=dataclasses.asdict(rule) | {"name": policy}, exit_accuracy=calls.accuracy,
                  exits=calls.exits, compute_saved=calls.compute_saved,
                  compute_saved_by_time=timed.compute_saved,
                  exit_accuracy_per_block=run.model.evaluate_exits(batches))
    if histogram:
        from .plots import plot_exit_histogram

        plot_exit_histogram(calls.exits, histogram,
                            accuracy=[a or 0.0 for a in result["exit_accuracy_per_block"]])
    return result
