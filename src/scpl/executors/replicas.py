"""Replicated pipeline stages: K stages x R replicas on K*R ranks (data x pipeline parallelism).

Layout (stage-major, like a (stage, replica) device mesh)::

    rank = stage * R + replica          stage k's replicas: ranks kR .. kR + R - 1
                                        replica r's pipeline: ranks r, R + r, 2R + r, ...

    stage 0        stage 1        stage K-1
    rank 0    ->   rank R    ->   ...  rank (K-1)R          replica 0 (its shard of every batch)
    rank 1    ->   rank R+1  ->   ...  rank (K-1)R+1        replica 1
     ...
    rank R-1  ->   rank 2R-1 ->   ...  rank KR-1            replica R-1
      |_ gradients averaged by DistributedDataParallel in each stage's process group _|

Every replica pipeline reads its own shard of every (micro-)batch (rows ``r*b/R .. (r+1)*b/R`` of a
micro-batch of b rows) and runs it through its ranks as the plain pipeline does. Each stage's
replicas average their gradients with torch's ``DistributedDataParallel`` over a process group of
their own (its reducer overlaps the all-reduce with backward). A local loss that compares samples
with each other (SupCon, DeInfoReg) sees the whole global batch: the projected features are gathered
across the stage's replicas with the autograd-aware ``torch.distributed.nn.functional.all_gather``,
so every replica computes the loss of the whole batch, and its gradients, after DDP's average, are
those of one rank on the whole batch (up to the order of floating-point sums).
BatchNorm normalises with each replica's own statistics (as DDP does by default; on CUDA,
``sync_batchnorm=True`` synchronises them with torch's ``SyncBatchNorm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..block import Block
from ..errors import ConfigError
from ..flow import Flow, split_flow


@dataclass(frozen=True)
class Layout:
    """Where this rank sits among K stages x R replicas (see the module docstring)."""

    rank: int
    stages: int
    replicas: int

    @property
    def stage(self) -> int:
        """This rank's stage."""
        return self.rank // self.replicas

    @property
    def replica(self) -> int:
        """This rank's replica index within its stage."""
        return self.rank % self.replicas

    @property
    def prev(self) -> Optional[int]:
        """The rank this one receives from (None at the first stage)."""
        return self.rank - self.replicas if self.stage > 0 else None

    @property
    def next(self) -> Optional[int]:
        """The rank this one sends to (None at the last stage)."""
        return self.rank + self.replicas if self.stage < self.stages - 1 else None

    @property
    def first(self) -> bool:
        """Whether this rank is at the first stage."""
        return self.stage == 0

    @property
    def last(self) -> bool:
        """Whether this rank is at the last stage."""
        return self.stage == self.stages - 1

    def stage_ranks(self, stage: int) -> list[int]:
        """The ranks of stage ``stage``'s replicas."""
        return [stage * self.replicas + r for r in range(self.replicas)]

    def stage_of(self, rank: int) -> int:
        """The stage of rank ``rank``."""
        return rank // self.replicas


_GROUPS: dict[tuple, list] = {}


def stage_groups(stages: int, replicas: int, timeout: float) -> list:
    """One process group per stage holding its replicas (created once per default group, by every
    rank, in order, as ``torch.distributed.new_group`` requires). Their collectives (DDP's
    all-reduce, the gathered losses) give up after ``timeout`` seconds: a replica whose peer
    failed inside a collective is not left waiting for gloo's default of 30 minutes."""
    key = (id(dist.group.WORLD), stages, replicas, timeout)
    if key not in _GROUPS:
        _GROUPS.clear()  # groups of an earlier default group are gone with it
        _GROUPS[key] = [dist.new_group([k * replicas + r for r in range(replicas)],
                                       timeout=timedelta(seconds=timeout))
                        for k in range(stages)]
    return _GROUPS[key]


def average_buffers(module: nn.Module, group) -> None:
    """Average ``module``'s floating-point buffers (BatchNorm's running statistics) over the
    replicas of ``group``, in place: each replica updated its own from its own shards, and the
    model that is evaluated and exported must be one model, the same on every replica."""
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).cpu() for b in buffers])
    dist.all_reduce(flat, group=group)
    flat /= dist.get_world_size(group)
    start = 0
    for b in buffers:
        b.copy_(flat[start:start + b.numel()].view_as(b).to(b.device))
        start += b.numel()


def shard(pieces: Iterable[tuple], replica: int, replicas: int, equal: bool = True) -> Iterator[tuple]:
    """Replica ``replica``'s rows of every (micro-)batch ``(step, micro, inputs, labels[, extras])``
    (extras, e.g. sample ids, are cut alike). Each micro-batch is shared out, so the replicas'
    shards of micro-batch j, gathered in replica order, are micro-batch j of one rank. Training
    needs equal shards (``equal``); inference takes shards that differ by one row."""
    for step, micro, inputs, labels, *extras in pieces:
        n = labels.shape[0]
        if equal and n % replicas:
            raise ConfigError(f"a (micro-)batch of {n} samples does not split into {replicas} equal replica "
                              f"shards; use a batch size divisible by {replicas} x micro_batches "
                              "(and drop_last=True)")
        cut = [t.tensor_split(replicas)[replica] for t in (extras[0] if extras else [])]
        yield (step, micro, split_flow(inputs, replicas)[replica], labels.tensor_split(replicas)[replica],
               *([cut] if extras else []))


class GatheredObjective(nn.Module):
    """An objective computed on the features and labels of all the stage's replicas (in replica
    order, so the rows are the global batch's). The gather is autograd-aware: the gradient of the
    shared loss reaches each replica's own features."""

    def __init__(self, inner: nn.Module, group):
        super().__init__()
        self.inner = inner
        self.group = group

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        """The inner objective on the features and labels gathered from all the stage's replicas."""
        import torch.distributed.nn.functional as dnn

        all_features = torch.cat(dnn.all_gather(features.contiguous(), group=self.group))
        gathered = [torch.empty_like(labels) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(gathered, labels.contiguous(), group=self.group)
        return self.inner(all_features, torch.cat(gathered))


class LocalStep(nn.Module):
    """A block's whole local step as one call, ``(inputs, labels) -> (outputs, loss)``: what
    DistributedDataParallel wraps (and ``torch.compile`` compiles)."""

    def __init__(self, block: Block):
        super().__init__()
        self.block = block

    def forward(self, inputs: Flow, labels: Tensor):
        """The block's ``(outputs, loss)`` on ``inputs`` (its ``forward_loss``)."""
        return self.block.forward_loss(inputs, labels)


def replicate(block: Block, group, device: torch.device, sync_batchnorm: bool = False) -> None:
    """Make ``block`` train as one of its stage's replicas: objectives that compare samples are
    gathered over ``group`` and the whole local step runs under DistributedDataParallel (which
    also makes every replica start from the group's first replica's parameters and buffers)."""
    if block.replica is not None:
        return
    if sync_batchnorm:
        if device.type != "cuda":
            raise ConfigError("sync_batchnorm needs CUDA devices (torch's SyncBatchNorm); on CPU the "
                              "replicas normalise with their own statistics")
        block.layers = nn.SyncBatchNorm.convert_sync_batchnorm(block.layers, group)
    if getattr(block.objective, "pairwise", True):
        block.objective = GatheredObjective(block.objective, group)
    ddp = DistributedDataParallel(LocalStep(block), process_group=group,
                                  device_ids=[device.index] if device.type == "cuda" else None)
    object.__setattr__(block, "replica", ddp)  # not a submodule: the block owns its parameters
    if block.compile_options is not None:  # compiled before it was replicated: compile the replica
        block.compile(**block.compile_options)


def mean_over(table: Tensor, group) -> Tensor:
    """The element-wise mean of ``table`` over the ranks of ``group``."""
    total = table.clone()
    dist.all_reduce(total, group=group)
    return total / dist.get_world_size(group)


def interleave(pieces: Sequence[Sequence[Tensor]]) -> Tensor:
    """Rows back in data order from per-replica lists of per-batch shards:
    ``pieces[r][b]`` is replica r's shard of batch b."""
    return torch.cat([torch.cat([p[b] for p in pieces]) for b in range(len(pieces[0]))]) if pieces[0] else \
        torch.empty(0)
