"""Adaptive inference, user-facing: each sample leaves at the first block that is sure enough.

:func:`early_exit` runs a model with an exit rule (:class:`PatienceCosine`, :class:`Confidence`,
from :mod:`scpl.exit_rules`) and reports accuracy, the exit histogram and the fraction of block
compute saved; :func:`tradeoff` sweeps many rules from one pass over the data.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Optional, Sequence, Union

import torch
from torch import Tensor

from .errors import ConfigError
from .exit_rules import Confidence, ExitState, PatienceCosine, Policy, exit_step, saved_share
from .flow import Flow, flow_to

if TYPE_CHECKING:
    from .executors import Executor

__all__ = ["early_exit", "tradeoff", "simulate", "exit_logits", "block_seconds", "ExitReport",
           "PatienceCosine", "Confidence", "TRADEOFF_POLICIES"]


@dataclass
class ExitReport:
    """The outcome of :func:`early_exit`: accuracy, exit histogram, compute saved, and per sample the
    prediction and exit block.
    """

    accuracy: float
    exits: list[int]  # samples that left at each block
    block_samples: list[int]  # samples each block processed
    compute_saved: float  # 1 - (block work done) / (block work of the full path), weighted by block cost
    predictions: Tensor = field(repr=False)
    exit_block: Tensor = field(repr=False)

    def as_dict(self) -> dict:
        """The summary numbers (without the per-sample tensors), JSON-ready."""
        return {"accuracy": self.accuracy, "exits": self.exits, "block_samples": self.block_samples,
                "compute_saved": self.compute_saved}


def early_exit(model, loader: Iterable, policy: Policy = PatienceCosine(),
               block_costs: Optional[Sequence[float]] = None,
               executor: Union[str, Executor, None] = None) -> ExitReport:
    """Run ``model`` (a DecoupledModel with exit classifiers) with per-sample early exit.

    ``block_costs`` weights the compute saved (e.g. measured seconds or FLOPs per sample of each
    block); by default every block counts the same. With a ``DistributedExecutor`` (given, or the
    one the model trained with) the batches run through the pipeline and exited samples are not
    sent to later ranks.
    """
    model.eval()
    blocks = list(model.blocks)
    costs = list(block_costs) if block_costs is not None else [1.0] * len(blocks)
    preds, labels, exit_block, calls = model.inference_executor(executor).exit_batches(
        blocks, model._checked(loader), policy)
    if labels.numel() == 0:
        raise ConfigError("early_exit() got an empty loader: give it batches of (inputs, labels)")
    return ExitReport(
        accuracy=float((preds == labels).float().mean()),
        exits=[int((exit_block == k).sum()) for k in range(len(blocks))],
        block_samples=calls,
        compute_saved=saved_share(calls, labels.numel(), costs),
        predictions=preds,
        exit_block=exit_block,
    )


@torch.no_grad()
def block_seconds(model, x: Flow, repeats: int = 5) -> list[float]:
    """Median forward seconds of each block of ``model`` (a DecoupledModel) on the batch ``x``, in
    eval mode: the ``block_costs`` that weight the compute :func:`early_exit` saves by time.
    """
    model.eval()
    out, flow = [], x
    for block in model.blocks:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            nxt = block(flow)
            times.append(time.perf_counter() - start)
        out.append(statistics.median(times))
        flow = nxt
    return out


TRADEOFF_POLICIES: tuple[Policy, ...] = (
    *(PatienceCosine(1, t) for t in (0.5, 0.8, 0.9, 0.95, 0.99)),
    *(PatienceCosine(2, t) for t in (0.8, 0.95)),
    *(Confidence(t) for t in (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 0.999)),
)
"""The rules and thresholds :func:`tradeoff` sweeps by default."""


@torch.no_grad()
def exit_logits(model, loader: Iterable) -> tuple[list[Optional[Tensor]], Tensor]:
    """Every exit's logits for every sample of ``loader`` (None for a block without an exit; the
    last block's output is the last exit) and the labels, from one pass over the data."""
    model.eval()
    blocks = list(model.blocks)
    logits: list[list[Tensor]] = [[] for _ in blocks]
    labels = []
    for inputs, batch_labels in model._checked(loader, finite=True):
        flow = inputs
        for k, block in enumerate(blocks):
            flow = block(flow_to(flow, block.device))
            out = flow if k == len(blocks) - 1 else block.exit_logits(flow)
            if out is not None:
                logits[k].append(out.float().cpu())
        labels.append(batch_labels.cpu())
    return [torch.cat(x) if x else None for x in logits], torch.cat(labels)


def simulate(logits: Sequence[Optional[Tensor]], labels: Tensor, policy: Policy,
             block_costs: Optional[Sequence[float]] = None) -> ExitReport:
    """Early exit decided from precomputed exit logits: the same decisions as :func:`early_exit`
    (in eval mode a sample's logits do not depend on the others), for many rules at the cost of
    one pass (see :func:`tradeoff`)."""
    n, k_all = labels.numel(), len(logits)
    costs = list(block_costs) if block_costs is not None else [1.0] * k_all
    preds = torch.empty(n, dtype=torch.long)
    exit_block = torch.empty(n, dtype=torch.long)
    state = ExitState(torch.arange(n), torch.zeros(n, dtype=torch.long))
    calls = [0] * k_all
    for k, block_logits in enumerate(logits):
        if state.ids.numel() == 0:
            break
        calls[k] = int(state.ids.numel())
        if block_logits is None:
            continue
        _, ids, preds[ids], state = exit_step(policy, block_logits[state.ids], state, k == k_all - 1)
        exit_block[ids] = k
    return ExitReport(accuracy=float((preds == labels).float().mean()),
                      exits=[int((exit_block == k).sum()) for k in range(k_all)], block_samples=calls,
                      compute_saved=saved_share(calls, n, costs),
                      predictions=preds, exit_block=exit_block)


def tradeoff(model, loader: Iterable, policies: Sequence[Policy] = TRADEOFF_POLICIES,
             block_costs: Optional[Sequence[float]] = None) -> list[dict]:
    """Accuracy and compute saved of each exit rule in ``policies`` (one pass over the data):
    a list of ``{"rule", "patience", "threshold", "accuracy", "compute_saved", "exits"}``, where
    ``compute_saved`` counts block calls; with ``block_costs`` (e.g. :func:`block_seconds`) each
    row also has ``compute_saved_by_time``, the calls weighted by those costs."""
    logits, labels = exit_logits(model, loader)
    rows = []
    for policy in policies:
        report = simulate(logits, labels, policy)
        rows.append({"rule": "patience" if isinstance(policy, PatienceCosine) else "confidence",
                     "patience": getattr(policy, "patience", None), "threshold": policy.threshold,
                     "accuracy": report.accuracy, "compute_saved": report.compute_saved,
                     "exits": report.exits})
        if block_costs is not None:
            rows[-1]["compute_saved_by_time"] = saved_share(report.block_samples, labels.numel(), block_costs)
    return rows
