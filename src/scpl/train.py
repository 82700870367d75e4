"""``scpl train``: one training run from the command line, in any executor (also under torchrun)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from .checkpoint import atomic_save, merge_blocks, save_blocks
from .demo import load_demo_data
from .errors import ConfigError
from .executors import EXECUTORS
from .executors.distributed import init_from_env
from .model import DecoupledModel
from .models import create_model
from .seed import seed_everything


@dataclass
class TrainConfig:
    model: str = "small_cnn"
    dataset: str = "digits"
    method: str = "scpl"
    blocks: Optional[str] = None  # "auto", "2,2" (layer counts) or None (the model's children)
    num_blocks: Optional[int] = None
    executor: str = "sequential"
    epochs: int = 5
    batch_size: int = 64
    micro_batches: int = 1
    lr: float = 1e-3
    seed: int = 0
    train_limit: Optional[int] = None
    threads: Optional[int] = None  # intra-op threads (the distributed executor uses 1 per rank)
    out: Optional[str] = None


def _blocks(spec: Optional[str]):
    if spec is None or spec == "auto":
        return spec
    try:
        return [int(c) for c in spec.split(",")]
    except ValueError:
        return [s for s in spec.split(",")]


def run(cfg: TrainConfig) -> dict:
    """Train and evaluate; return the summary (the same on every rank)."""
    rank, world = 0, 1
    if cfg.executor == "distributed":
        rank, world = init_from_env()
        torch.set_num_threads(cfg.threads or 1)
    elif cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {cfg.executor!r}; choose one of {sorted(EXECUTORS)}")
    runner = EXECUTORS[cfg.executor](micro_batches=cfg.micro_batches)
    train, test, dataset = load_demo_data(cfg.dataset, cfg.train_limit)
    generator = seed_everything(cfg.seed)
    loader = DataLoader(train, batch_size=cfg.batch_size, shuffle=True, generator=generator, drop_last=True)
    test_loader = DataLoader(test, batch_size=512)
    example = torch.stack([train[i][0] for i in range(min(cfg.batch_size, len(train)))])
    blocks = _blocks(cfg.blocks)
    num_blocks = cfg.num_blocks or (world if cfg.executor == "distributed" else None)
    if blocks == "auto" and num_blocks is None:
        raise ConfigError("--blocks auto needs --num-blocks K (or the distributed executor, where K is the world size)")
    model = DecoupledModel(
        create_model(cfg.model, in_channels=example.shape[1], num_classes=10), blocks, num_blocks=num_blocks,
        method=cfg.method, num_classes=10, example_input=example,
        optimizer=lambda params: torch.optim.Adam(params, lr=cfg.lr),
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs),
    )
    start = time.perf_counter()
    model.fit(loader, epochs=cfg.epochs, executor=runner)
    seconds = time.perf_counter() - start
    metrics = model.evaluate(test_loader, executor=runner)
    summary = {
        "method": cfg.method, "dataset": dataset, "executor": cfg.executor, "num_blocks": len(model.blocks),
        "blocks": model.balance.counts if model.balance is not None else blocks,
        "test_accuracy": metrics["accuracy"], "epochs": cfg.epochs, "train_seconds": seconds,
        "samples_per_s": cfg.epochs * len(loader) * cfg.batch_size / seconds, "rank": rank, "world_size": world,
    }
    if cfg.out:
        save_blocks(model, cfg.out, [rank] if cfg.executor == "distributed" else None)
        if cfg.executor == "distributed":
            dist.barrier()
        if rank == 0:
            atomic_save(merge_blocks(cfg.out, len(model.blocks)), Path(cfg.out) / "model.pt")
            (Path(cfg.out) / "summary.json").write_text(json.dumps({**summary, "config": asdict(cfg)}, indent=2))
    if cfg.executor == "distributed":
        dist.barrier()
        dist.destroy_process_group()
    return summary

