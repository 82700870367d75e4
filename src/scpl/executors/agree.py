"""What the ranks of a distributed run must agree on before they train, checked at the start:
the model and its cut (every rank builds the whole model and trains its own block; ranks built
with other block counts would run layers twice or skip them), and, for replicated stages, each
stage's whole block (its replicas average their gradients and may gather their objective's
inputs: a head or an objective of another kind on one replica would run other collectives than
its twin's, which then waits) and the data (the first stage's replicas must read the same batches
in the same order and each take its share; a different order or number of batches would train on
a mix or leave a replica waiting).
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Iterable, Optional, Sequence

import torch.distributed as dist
from torch import Tensor, nn

from ..block import Block
from ..errors import ConfigError
from ..flow import Flow


def model_fingerprint(blocks: Sequence[Block]) -> str:
    """The layer structure and cut of a model: the modules (types) and parameter shapes of each
    block's layers (its part of the network; heads and objectives may differ between ranks)."""
    digest = hashlib.sha256()
    for k, block in enumerate(blocks):
        digest.update(f"block {k}\n".encode())
        _add_structure(digest, block.layers)
    return f"{len(blocks)} blocks, {digest.hexdigest()[:16]}"


def _add_structure(digest, module: nn.Module) -> None:
    """Feed ``module``'s structure to ``digest``: every submodule's type and parameter's shape."""
    for name, sub in module.named_modules():
        digest.update(f"{name}:{type(sub).__name__}\n".encode())
    for name, param in module.named_parameters():
        digest.update(f"{name}:{tuple(param.shape)}\n".encode())


def same_model(blocks: Sequence[Block], group: Optional[dist.ProcessGroup] = None) -> None:
    """ConfigError on every rank unless all ranks of ``group`` hold the same model and cut."""
    mine = model_fingerprint(blocks)
    found: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(found, mine, group=group)
    if len(set(found)) > 1:
        ranks = ", ".join(f"rank {r}: {f}" for r, f in enumerate(found))
        raise ConfigError(f"the ranks hold different models or cuts ({ranks}); build the same model with the "
                          "same blocks on every rank (a fingerprint of each block's layers and parameter "
                          "shapes differs)")


def block_fingerprint(block: Block) -> str:
    """The whole block, heads and objective included: every module's type and every parameter's
    shape. What the replicas of a stage must share."""
    digest = hashlib.sha256()
    _add_structure(digest, block)
    return digest.hexdigest()[:16]


def same_replicas(block: Block, stage_ranks: Sequence[Sequence[int]]) -> None:
    """ConfigError on every rank unless the replicas of every stage (``stage_ranks[k]``: the ranks
    of stage k) hold the same block, heads and objective included; ``block`` is this rank's. A
    collective over all ranks."""
    found: list = [None] * dist.get_world_size()
    dist.all_gather_object(found, block_fingerprint(block))
    for k, ranks in enumerate(stage_ranks):
        if len({found[r] for r in ranks}) > 1:
            which = ", ".join(f"rank {r}: {found[r]}" for r in ranks)
            raise ConfigError(f"the replicas of stage {k} hold different blocks ({which}); build the same "
                              "block, with the same heads and objective, on every replica of a stage (a "
                              "fingerprint of each module's type and parameter shapes differs)")


def _batch_fingerprint(inputs: Flow, labels: Tensor) -> str:
    digest = hashlib.sha256(labels.detach().cpu().numpy().tobytes())
    for t in (inputs if isinstance(inputs, tuple) else (inputs,)):
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.detach().cpu().flatten()[:64].numpy().tobytes())
    return digest.hexdigest()[:16]


def same_data(batches: Iterable, readers: Sequence[int]) -> Iterable:
    """``batches`` as they are, after every rank learnt whether the ranks in ``readers`` (the first
    stage's replicas, which read the data) got the same number of batches (where the loader has a
    length) and the same first batch; ConfigError on every rank otherwise. Runs its collective
    at once, on every rank (the others only learn the outcome)."""
    reading = dist.get_rank() in readers
    iterator = iter(batches) if reading else iter(())
    first = next(iterator, None)
    try:
        length: Optional[int] = len(batches)  # type: ignore[arg-type]
    except TypeError:  # a loader without a length: only the first batch is compared
        length = None
    mine = (length, None if first is None else _batch_fingerprint(first[0], first[1])) if reading else None
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, mine)
    found = [gathered[r] for r in readers]
    if len({f[0] for f in found}) > 1:
        raise ConfigError(f"the replicas of the first stage were given different numbers of batches "
                          f"({', '.join(f'rank {r}: {f[0]}' for r, f in zip(readers, found))}): give every "
                          "replica the same loader (each takes its share of every batch)")
    if len({f[1] for f in found}) > 1:
        raise ConfigError("the replicas of the first stage were given different batches (their first batches "
                          "differ): give every replica the same loader in the same order, seeded alike (each "
                          "takes its share of every micro-batch), not a sampler that shards the data")
    return itertools.chain([] if first is None else [first], iterator) if reading else batches
