"""What travels between blocks: a tensor, or a tuple of tensors (sequence, mask, hidden state...).

A tuple flow is passed to the next block's layers as positional arguments.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Union

import torch
from torch import Tensor, nn

Flow = Union[Tensor, tuple]


def map_flow(fn: Callable[[Tensor], Any], flow: Flow) -> Any:
    """``fn`` applied to a tensor, or to every tensor of a (nested) tuple or of a mapping of
    named inputs, keeping the structure."""
    if isinstance(flow, Tensor):
        return fn(flow)
    if isinstance(flow, Mapping):
        return {k: map_flow(fn, v) for k, v in flow.items()}
    return tuple(map_flow(fn, x) for x in flow)


def detach_flow(flow: Flow) -> Flow:
    """Stop-gradient on a tensor or on every tensor of a tuple."""
    return map_flow(Tensor.detach, flow)


def flow_to(flow: Flow, device: torch.device, non_blocking: bool = False) -> Flow:
    """Move a tensor or a tuple of tensors to ``device``.

    ``non_blocking`` applies only to copies onto a CUDA device: a non-blocking copy to the CPU
    could be read before it completes.
    """
    non_blocking = non_blocking and torch.device(device).type == "cuda"
    return map_flow(lambda t: t.to(device, non_blocking=non_blocking), flow)


def flow_shape(flow: Flow) -> object:
    """Shapes of a flow, for error messages."""
    return map_flow(lambda t: tuple(t.shape), flow)


def call_with_flow(module: nn.Module, flow: Flow) -> Flow:
    """Call ``module`` on a flow: a tensor is one argument, a tuple is unpacked into arguments."""
    if isinstance(flow, Tensor):
        return module(flow)
    return module(*flow)


def split_flow(flow: Flow, pieces: int) -> list[Flow]:
    """Cut a flow into ``pieces`` micro-batches along dim 0 (sizes differ by at most one)."""
    if isinstance(flow, Tensor):
        return list(torch.tensor_split(flow, pieces))
    parts = [split_flow(x, pieces) for x in flow]
    return [tuple(p[i] for p in parts) for i in range(pieces)]


def micro_batches(inputs: Flow, labels: Tensor, pieces: int) -> list[tuple[Flow, Tensor]]:
    """``(inputs, labels)`` as ``pieces`` micro-batches; one piece returns the batch unchanged."""
    if pieces == 1:
        return [(inputs, labels)]
    if labels.shape[0] < pieces:
        raise ValueError(f"a batch of {labels.shape[0]} cannot be cut into {pieces} micro-batches")
    return list(zip(split_flow(inputs, pieces), torch.tensor_split(labels, pieces)))
