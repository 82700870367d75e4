"""``scpl bench memory``: activation memory held for backward, BP against K decoupled blocks.

Bytes are counted exactly with saved-tensor hooks (:func:`scpl.memory.count_saved_bytes`):
every tensor autograd keeps for backward, once per storage, parameters excluded. The count
does not depend on the device. BP holds the whole network's activations until its single
backward; a decoupled block frees its graph after its own backward, so with blocks run one
after another on one device the peak is the largest block (its head and ContSup branches
included). Inputs are synthetic (the count depends on shapes only).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

from ..errors import ConfigError
from ..flow import Flow
from ..memory import count_saved_bytes
from ..model import DecoupledModel
from ..models import CifarResNet, create_model
from ..seed import seed_everything


def block_bytes(model: DecoupledModel, x: Flow, labels: torch.Tensor) -> list[int]:
    """Bytes each block saves for backward in one training step (its layers, head and loss).

    Each block's graph is dropped before the next block runs (as in training, where its
    backward frees it); the hand-over to the next block is computed without a graph.
    """
    out, flow = [], x
    for block in model.blocks:
        block.train()
        with count_saved_bytes(block.parameters()) as counter:
            loss = block.local_loss(block(flow), labels)
        out.append(counter.total)
        del loss
        with torch.no_grad():
            flow = block(flow)
    return out


def measure(name: str, ks: Sequence[int], batch: int, contsup: Optional[str], cut_by: str = "equal") -> dict:
    """Bytes saved for backward by model ``name`` on a synthetic batch: BP's peak (only without
    ``contsup``) and, for each K in ``ks``, the per-block bytes and peak of K greedy blocks.
    """
    seed_everything(0)
    x, labels = torch.randn(batch, 3, 32, 32), torch.arange(batch) % 10
    result: dict = {"decoupled_peak_bytes": {}, "decoupled_block_bytes": {}}
    if contsup is None:
        bp = DecoupledModel(create_model(name), method="bp", num_classes=10, example_input=x[:2])
        result["bp_peak_bytes"] = block_bytes(bp, x, labels)[0]
    for k in ks:
        net = create_model(name)
        if not isinstance(net, CifarResNet):
            raise ConfigError(f"bench memory cuts CIFAR ResNets (resnet32, resnet110) by their units, "
                              f"not {name}")
        model = DecoupledModel(net, net.block_counts(k, cut_by), method="greedy", num_classes=10,
                               example_input=x[:2], contsup=contsup)
        per_block = block_bytes(model, x, labels)
        result["decoupled_block_bytes"][k] = per_block
        result["decoupled_peak_bytes"][k] = max(per_block)
    return result


def run(models: Sequence[str] = ("resnet32", "resnet110"), ks: Sequence[int] = (2, 4, 8, 16),
        batch: int = 1024, cut_by: str = "equal", log: Callable[[str], None] = print) -> dict:
    """:func:`measure` each of ``models`` without and with ContSup R1E; log a line for each, return all."""
    out: dict = {"batch_size": batch, "method": "greedy", "cut_by": cut_by, "models": {}}
    for name in models:
        plain = measure(name, ks, batch, None, cut_by)
        log(f"{name}: BP {plain['bp_peak_bytes'] / 2**30:.2f} GiB; " + ", ".join(
            f"K={k} {v / 2**30:.2f} GiB" for k, v in plain["decoupled_peak_bytes"].items()))
        ctx = measure(name, ks, batch, "R1E", cut_by)
        log(f"{name} + ContSup R1E: " + ", ".join(
            f"K={k} {v / 2**30:.2f} GiB" for k, v in ctx["decoupled_peak_bytes"].items()))
        out["models"][name] = {
            "bp_peak_bytes": plain["bp_peak_bytes"],
            "decoupled_peak_bytes": plain["decoupled_peak_bytes"],
            "decoupled_block_bytes": plain["decoupled_block_bytes"],
            "contsup_r1e_peak_bytes": ctx["decoupled_peak_bytes"],
            "contsup_r1e_block_bytes": ctx["decoupled_block_bytes"],
        }
    return out


PAGE_BATCH = 128
"""The batch of docs/memory.md's tables (``benchmarks/memory_page.py`` renders them)."""


def markdown(result: dict) -> list[str]:
    """A :func:`run` result as the page's table: MiB held for backward, BP and each K, and K=4
    against BP."""
    ks = sorted(next(iter(result["models"].values()))["decoupled_peak_bytes"], key=int)
    lines = ["| model | BP | " + " | ".join(f"K={k}" for k in ks) + " | K=4 / BP |",
             "| --- | ---: |" + " ---: |" * len(ks) + " ---: |"]
    for name, m in result["models"].items():
        bp = m["bp_peak_bytes"]
        rows = ((name, m["decoupled_peak_bytes"]), (f"{name} + ContSup R1E", m["contsup_r1e_peak_bytes"]))
        for label, peaks in rows:
            cells = " | ".join(f"{peaks[k] / 2**20:.1f}" for k in ks)
            lines.append(f"| {label} | {bp / 2**20:.1f} | {cells} | {peaks[4] / bp:.2f} |" if 4 in peaks
                         else f"| {label} | {bp / 2**20:.1f} | {cells} | - |")
    return lines
