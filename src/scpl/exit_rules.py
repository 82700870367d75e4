"""Early exit's mechanics: the exit rules, the state of the samples still running, and the one
exit step that every path takes (one process, the distributed pipeline, the simulation of
many rules from stored logits; :mod:`scpl.early_exit` is the user-facing part).

Two rules decide per sample, on the exit logits of each block (the exit classifier of a block,
or the last block's output):

* :class:`PatienceCosine` (DASCPL/DeInfoReg rule, defaults patience 1, cosine 0.8): after
  block k, a sample's counter grows when blocks k-1 and k agree on the class *and* the cosine
  similarity of their logit vectors exceeds the threshold, and is reset otherwise; the sample
  exits when the counter reaches ``patience``, with block k's prediction.
* :class:`Confidence`: exit when the maximum softmax probability reaches ``threshold``.

Exited samples are removed from the batch, so later blocks never run on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from .errors import ConfigError
from .flow import Flow, flow_to, map_flow

if TYPE_CHECKING:
    from .block import Block


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_threshold(rule: str, threshold: float) -> None:
    if not (_number(threshold) and 0.0 <= threshold <= 1.0):
        raise ConfigError(f"{rule}: threshold is in [0, 1], got {threshold!r}")


@dataclass(frozen=True)
class PatienceCosine:
    """Exit when ``patience`` (>= 1) successive blocks each agree with the block before them (same
    class, cosine similarity of the logits above ``threshold``, in [0, 1]).
    """

    patience: int = 1
    threshold: float = 0.8

    def __post_init__(self) -> None:
        if not (_number(self.patience) and int(self.patience) == self.patience and self.patience >= 1):
            raise ConfigError(f"PatienceCosine: patience counts agreeing blocks, a whole number >= 1, got "
                              f"{self.patience!r}")
        _check_threshold("PatienceCosine", self.threshold)


@dataclass(frozen=True)
class Confidence:
    """Exit once the maximum softmax probability reaches ``threshold`` (in [0, 1])."""

    threshold: float = 0.9

    def __post_init__(self) -> None:
        _check_threshold("Confidence", self.threshold)


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


def exit_step(policy: Policy, logits: Tensor, state: ExitState,
         last: bool = False) -> tuple[Tensor, Tensor, Tensor, ExitState]:
    """The exit step after a block: ``(leave, ids, predictions, state)``: which samples leave
    (all of them after the ``last`` block), their positions in the batch and their predicted
    classes, and the state of the samples that stay."""
    leave, state = decide(policy, logits, state)
    if last:
        leave = torch.ones_like(leave)
    return leave, state.ids[leave], logits[leave].argmax(dim=1), state.keep(~leave)


@torch.no_grad()
def exit_batch(blocks: Sequence[Block], inputs: Flow, policy: Policy) -> tuple[Tensor, Tensor, list[int]]:
    """(predictions, exit block of each sample, samples processed per block) for one batch, the
    blocks run in order in this process."""
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
        leave, ids, preds[ids], state = exit_step(policy, logits.cpu(), state, last)
        exit_block[ids] = k
        flow = select(flow, ~leave)
    return preds, exit_block, calls


def saved_share(calls: Sequence[int], samples: int, costs: Sequence[float]) -> float:
    """The share of block compute saved when block k ran ``calls[k]`` of ``samples`` samples,
    block k costing ``costs[k]`` per sample (all ones: the share of block calls saved)."""
    return 1.0 - sum(c * w for c, w in zip(calls, costs)) / (samples * sum(costs))
