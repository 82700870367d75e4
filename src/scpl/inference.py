"""Adaptive inference: each sample leaves at the first block that is sure enough.

Two policies decide per sample, on the exit logits of each block (the exit classifier of a
block, or the last block's output):

* :class:`PatienceCosine` (DASCPL/DeInfoReg rule, defaults patience 1, cosine 0.8): after
  block k, a sample's counter grows when blocks k-1 and k agree on the class *and* the cosine
  similarity of their logit vectors exceeds the threshold, and is reset otherwise; the sample
  exits when the counter reaches ``patience``, with block k's prediction.
* :class:`Confidence`: exit when the maximum softmax probability reaches ``threshold``.

Exited samples are removed from the batch, so later blocks never run on them. The report
gives accuracy, the exit histogram and the fraction of block compute saved.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .executors import Executor
from .flow import Flow, flow_to, map_flow


@dataclass(frozen=True)
class PatienceCosine:
    """Exit when ``patience`` successive blocks each agree with the block before them (same class,
    cosine similarity of the logits above ``threshold``).
    """

    patience: int = 1
    threshold: float = 0.8


@dataclass(frozen=True)
class Confidence:
    """Exit once the maximum softmax probability reaches ``threshold``."""

    threshold: float = 0.9


Policy = Union[PatienceCosine, Confidence]


@dataclass
class ExitState:
    """Per-sample state of the samples still in the batch (all tensors indexed alike)."""

    ids: Tensor  # position of each sample in the original batch
    counter: Tensor  # patience counter
    previous: Optional[Tensor] = None  # previous exit's logits

    def keep(self, mask: Tensor) -> "ExitState":
        """The state of the samples where ``mask`` holds."""
        return ExitState(self.ids[mask], self.counter[mask],
                         None if self.previous is None else self.previous[mask])


def decide(policy: Policy, logits: Tensor, state: ExitState) -> tuple[Tensor, ExitState]:
    """Which samples exit on ``logits`` (a bool mask) and the updated state of all samples."""
    if isinstance(policy, Confidence):
        return torch.softmax(logits.float(), dim=1).amax(dim=1) >= policy.threshold, state
    counter = state.counter
    if state.previous is not None:
        agree = (logits.argmax(dim=1) == state.previous.argmax(dim=1)) & (
            nn.functional.cosine_similarity(logits.float(), state.previous.float(), dim=1) > policy.threshold)
        counter = torch.where(agree, counter + 1, torch.zeros_like(counter))
    new_state = ExitState(state.ids, counter, logits)
    return counter >= policy.patience, new_state


def select(flow: Flow, mask: Tensor) -> Flow:
    """The rows of a flow (tensor or tuple) where ``mask`` holds."""
    return map_flow(lambda t: t[mask.to(t.device)], flow)


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


@torch.no_grad()
def exit_batch(blocks: Sequence[nn.Module], inputs: Flow, policy: Policy) -> tuple[Tensor, Tensor, list[int]]:
    """(predictions, exit block of each sample, samples processed per block) for one batch."""
    first = inputs if isinstance(inputs, Tensor) else inputs[0]
    n = first.shape[0]
    preds = torch.empty(n, dtype=torch.long)
    exit_block = torch.empty(n, dtype=torch.long)
    state = ExitState(torch.arange(n), torch.zeros(n, dtype=torch.long))
    calls = [0] * len(blocks)
    flow = inputs
    for k, block in enumerate(blocks):
        if state.ids.numel() == 0:
            break
        flow = block(flow_to(flow, block.device))
        calls[k] = int(state.ids.numel())
        last = k == len(blocks) - 1
        logits = flow if last else block.exit_logits(flow)
        if logits is None:
            continue
        logits = logits.cpu()
        leave, state = decide(policy, logits, state)
        if last:
            leave = torch.ones_like(leave)
        preds[state.ids[leave]] = logits[leave].argmax(dim=1)
        exit_block[state.ids[leave]] = k
        stay = ~leave
        state = state.keep(stay)
        flow = select(flow, stay)
    return preds, exit_block, calls


def saved_share(calls: Sequence[int], samples: int, costs: Sequence[float]) -> float:
    """The share of block compute saved when block k ran ``calls[k]`` of ``samples`` samples,
    block k costing ``costs[k]`` per sample (all ones: the share of block calls saved)."""
    return 1.0 - sum(c * w for c, w in zip(calls, costs)) / (samples * sum(costs))


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
        here = block_logits[state.ids]
        leave, state = decide(policy, here, state)
        if k == k_all - 1:
            leave = torch.ones_like(leave)
        preds[state.ids[leave]] = here[leave].argmax(dim=1)
        exit_block[state.ids[leave]] = k
        state = state.keep(~leave)
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
