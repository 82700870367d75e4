"""Distributed executor: one process per block on ``torch.distributed`` (gloo on CPU, NCCL on GPU),
optionally with every block replicated on several ranks.

Launch one rank per block, e.g. ``torchrun --nproc-per-node=K your_script.py``; every rank
builds the same :class:`~scpl.DecoupledModel` (same seed, hence the same initial parameters)
and calls ``fit`` / ``evaluate`` / ``predict`` with ``executor=DistributedExecutor()``.
Rank k trains block k only. Rank 0 alone reads the data; activations (tensor or tuple), labels
and the losses so far travel k -> k+1 as :mod:`~scpl.executors.p2p` messages, sent and received
by one thread each so that communication overlaps compute (:mod:`~scpl.executors.stage`).
Nothing travels backward.

After ``train_epoch`` every rank holds the same per-step loss history (broadcast from the last
rank) and block k's parameters equal the sequential engine's (bitwise on CPU).

``DistributedExecutor(replicas=R)`` on K*R ranks runs R replica pipelines, each on its shard of
every batch, and averages each stage's gradients over its replicas with DistributedDataParallel
(:mod:`~scpl.executors.replicas`); the parameters then equal the sequential engine's on the
whole batches up to the order of floating-point sums (1e-5 relative).

Failure: a rank that raises writes the error to the process group's store; every other rank
polls the store and raises :class:`~scpl.errors.StageError` naming the failed stage. A rank
that dies closes its sockets, so its neighbours' receives fail and they raise in turn, and its
heartbeat stops, which every rank notices within ``peer_timeout`` seconds even where no socket
breaks (see :mod:`scpl.executors.watch`); under ``torchrun`` the agent also stops the remaining
workers. No rank waits forever. A rank that sees a link break names that neighbour, unless the
store holds another rank's announced failure; if the store is gone too (its host, rank 0,
stopped), the error says that the neighbour may have stopped because of another rank.
"""

from __future__ import annotations

import inspect
import os
import warnings
from typing import Iterator, Optional, Sequence, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..block import Block
from ..errors import ConfigError
from ..exit_rules import ExitState, exit_step, select
from ..flow import Flow, flow_to
from . import p2p
from .agree import same_data, same_model, same_replicas
from .base import FlowBatches, StepCallback, StepLosses, check_sizes, pieces
from .replicas import Layout, average_buffers, interleave, mean_over, replicate, shard, stage_groups
from .stage import run_stage
from .watch import DEFAULT_TIMEOUT_S, Watch

if dist.is_available():
    import torch.distributed.nn.functional  # noqa: F401  (before any process group exists: see below)

# Why torch.distributed.nn.functional is imported above: its functions take ``group=group.WORLD``
# as default arguments, evaluated when the module is first imported. torch._dynamo imports it,
# and every optimizer imports torch._dynamo. Imported after init_process_group, those defaults
# keep the default group alive after destroy_process_group(), so gloo's worker threads run on
# into interpreter shutdown, where one that releases a tensor aborts the process (SIGABRT,
# "terminate called without an active exception"; about 1 in 8 runs of our six-case distributed
# test). Imported with scpl, before any group exists, the defaults are None. Scripts that call
# init_process_group themselves should import scpl first.


def _warn_if_group_kept_alive() -> None:
    """Warn when torch.distributed.nn.functional was imported after the group (see above)."""
    default = inspect.signature(torch.distributed.nn.functional.broadcast).parameters["group"].default
    if default is not None:
        warnings.warn("torch.distributed.nn.functional was first imported after init_process_group, so the "
                      "process group outlives destroy_process_group() and a rank may abort at exit "
                      "(SIGABRT). Import scpl before calling init_process_group.",
                      RuntimeWarning, stacklevel=3)


def _move_optimizer_state(block: nn.Module, device: torch.device) -> None:
    """Optimizer state follows its parameters (``Module.to`` moves parameters, not optimizer
    buffers, e.g. after a checkpoint was loaded on the CPU)."""
    optimizer = getattr(block, "optimizer", None)
    if optimizer is None:
        return
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.device != device and value.dim() > 0:
                state[key] = value.to(device)


def init_from_env(backend: Optional[str] = None) -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment; return (rank, world size).

    The backend defaults to NCCL when CUDA is available (each rank then uses GPU
    ``LOCAL_RANK``), gloo otherwise. A no-op when the group already exists. End your script
    with ``dist.destroy_process_group()``: a gloo process that exits without it can abort.
    """
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))  # one GPU per rank
        try:
            dist.init_process_group(backend)
        except dist.DistNetworkError as exc:
            if "EADDRINUSE" not in str(exc):
                raise
            where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
            raise ConfigError(f"the process group's port {where} is in use (another torchrun or service "
                              "holds it); choose another: torchrun --master-port=PORT, or another "
                              "--rdzv-endpoint HOST:PORT") from exc
    return dist.get_rank(), dist.get_world_size()


class DistributedExecutor:
    """Run this rank's block (and, with replicas, its share of every batch); see the module
    docstring for the contract.

    Args:
        micro_batches: cut each batch (each replica's shard) into this many pieces (one
            optimizer step per batch).
        device: where this rank's block runs; default ``cuda:LOCAL_RANK`` under NCCL, else CPU.
        queue_size: messages buffered between the compute thread and each communication thread.
        peer_timeout: seconds without a heartbeat after which a peer rank is taken for dead
            (killed or hung) and every rank stops (see :mod:`scpl.executors.watch`).
        replicas: R replicas of every stage on K*R ranks (rank = stage * R + replica); batches
            must split into R equal shards.
        sync_batchnorm: with replicas on CUDA, synchronise BatchNorm statistics over each
            stage's replicas (torch's SyncBatchNorm); otherwise each replica uses its own.
    """

    name = "distributed"

    def __init__(self, micro_batches: int = 1, device: Optional[str] = None, queue_size: int = 2,
                 peer_timeout: float = DEFAULT_TIMEOUT_S, replicas: int = 1, sync_batchnorm: bool = False):
        check_sizes(micro_batches, queue_size)
        if not peer_timeout > 0:
            raise ConfigError(f"peer_timeout must be a positive number of seconds, got {peer_timeout}")
        if not isinstance(replicas, int) or replicas < 1:
            raise ConfigError(f"replicas must be an integer >= 1, got {replicas!r}")
        self.micro_batches = micro_batches
        self.device = torch.device(device) if device else None
        self.queue_size = queue_size
        self.peer_timeout = peer_timeout
        self.replicas = replicas
        self.sync_batchnorm = sync_batchnorm
        self._agreed = False  # the ranks checked that they hold the same model (agree.same_model)

    # -- set-up ---------------------------------------------------------------------------
    def layout(self, num_blocks: int) -> Layout:
        """This rank's place among ``num_blocks`` stages x ``replicas`` (checks the world size)."""
        if not dist.is_initialized():
            raise ConfigError(
                "the distributed executor needs torch.distributed: launch with "
                "`torchrun --nproc-per-node=K ...` and call scpl.executors.distributed.init_from_env() first"
            )
        world = dist.get_world_size()
        if world != num_blocks * self.replicas:
            need = f"{num_blocks} x {self.replicas} replicas = " if self.replicas > 1 else ""
            raise ConfigError(f"{num_blocks} blocks need {need}{num_blocks * self.replicas} ranks, but the "
                              f"world size is {world}")
        return Layout(dist.get_rank(), num_blocks, self.replicas)

    def _setup(self, blocks: Sequence[Block],
               training: bool = False) -> tuple[Layout, Block, torch.device, torch.device, Watch]:
        _warn_if_group_kept_alive()
        layout = self.layout(len(blocks))
        nccl = dist.get_backend() == "nccl"
        device = self.device or (torch.device("cuda", torch.cuda.current_device()) if nccl
                                 else torch.device("cpu"))
        block = blocks[layout.stage]
        if training and not self._agreed:  # once per executor: every rank built the same model and cut
            same_model(blocks)
            if self.replicas > 1:
                same_replicas(block, [layout.stage_ranks(k) for k in range(layout.stages)])
            self._agreed = True
        block.to(device)
        _move_optimizer_state(block, device)
        if self.replicas > 1:
            # every rank creates every group
            groups = stage_groups(layout.stages, self.replicas, self.peer_timeout)
            if training and block.optimizer is not None:
                replicate(block, groups[layout.stage], device, self.sync_batchnorm)
        comm_device = device if nccl else torch.device("cpu")
        watch = Watch(layout.rank, dist.get_world_size(), self.peer_timeout, stage_of=layout.stage_of)
        return layout, block, device, comm_device, watch

    def _source(self, batches: FlowBatches, layout: Layout, m: int, numbered: bool) -> Iterator:
        """The first stage's (micro-)batches (this replica's share of them), with global sample
        numbers as an extra when ``numbered`` (inference)."""
        if not layout.first:
            return iter(())
        source = _numbered(pieces(batches, m)) if numbered else pieces(batches, m)
        if self.replicas > 1:
            return shard(source, layout.replica, self.replicas, equal=not numbered)
        return source

    def _stage(self, layout: Layout, comm: torch.device, compute, sink, batches: FlowBatches, m: int,
               watch: Watch, numbered: bool = False) -> None:
        run_stage(layout.rank, layout.prev, layout.next, comm, compute, sink,
                  self._source(batches, layout, m, numbered), watch, self.queue_size, layout.stage_of)

    def _last_rank(self) -> int:
        return dist.get_world_size() - 1

    # -- the public operations ------------------------------------------------------------
    def train_epoch(
        self, blocks: Sequence[Block], batches: FlowBatches, on_step: Optional[StepCallback] = None
    ) -> list[list[float]]:
        """Train this rank's block on every batch; return the per-step losses of all blocks
        (with replicas: each block's loss averaged over its replicas).

        ``on_step`` is called on the last rank only (where a step's losses are complete; with
        replicas, that replica's losses); every rank returns the full history.
        """
        layout, block, device, comm, watch = self._setup(blocks, training=True)
        m = self.micro_batches
        if self.replicas > 1:  # the first stage's replicas must read the same batches
            batches = same_data(batches, layout.stage_ranks(0))

        def compute(step: int, micro: int, flow: Flow, labels: Tensor, extras: list[Tensor]):
            out, loss = block.train_step(flow, labels, micro, m)
            losses = extras[0].tolist() if extras else []
            return out, labels, [torch.tensor(losses + [loss], dtype=torch.float64)]

        record = StepLosses(layout.stages, m, on_step if layout.rank == self._last_rank() else None)

        def sink(step: int, micro: int, out: Flow, labels: Tensor, extras: list[Tensor]) -> None:
            record.add(step, micro, extras[0].tolist())

        self._stage(layout, comm, compute, sink, batches, m, watch)
        table = watch.meet(
            lambda: torch.tensor(record.history, dtype=torch.float64).reshape(-1, layout.stages), layout.last)
        if self.replicas > 1:
            group = stage_groups(layout.stages, self.replicas, self.peer_timeout)[layout.stage]
            with torch.no_grad():  # one model again: the replicas' BatchNorm statistics averaged
                average_buffers(block, group)
            if table is not None:  # the last stage's table (meet computed it there)
                table = mean_over(table, group)
        return _broadcast_tensor(table, self._last_rank(), comm).tolist()

    @torch.no_grad()
    def forward_batches(self, blocks: Sequence[Block],
                        batches: FlowBatches) -> Iterator[tuple[Tensor, Tensor]]:
        """Logits and labels of every batch, run through the pipeline in eval mode.

        Yields one pair: the concatenated (logits, labels) in data order, on every rank
        (gathered at the last stage and broadcast from the last rank).
        """
        layout, block, device, comm, watch = self._setup(blocks)
        block.eval()

        def compute(step: int, micro: int, flow: Flow, labels: Tensor, extras: list[Tensor]):
            return block(flow_to(flow, device)), labels, []  # (the sample numbers are not needed here)

        logits, labels_out = [], []

        def sink(step: int, micro: int, out: Flow, labels: Tensor, extras: list[Tensor]) -> None:
            logits.append(cast(Tensor, out).float().cpu())  # the last block's output: logits
            labels_out.append(labels.cpu())

        self._stage(layout, comm, compute, sink, batches, 1, watch, numbered=True)

        def gather() -> tuple[Tensor, Tensor]:
            if not logits:
                raise ConfigError("evaluate()/predict() got an empty loader")
            return self._in_data_order(layout, logits), self._in_data_order(layout, labels_out)

        result = watch.meet(gather, layout.last)
        last = self._last_rank()
        all_logits = _broadcast_tensor(result[0] if result else None, last, comm)
        all_labels = _broadcast_tensor(result[1] if result else None, last, comm)
        yield all_logits, all_labels

    def _in_data_order(self, layout: Layout, pieces: list[Tensor]) -> Tensor:
        """The last stage's per-batch results back in data order (interleaving the replicas')."""
        if self.replicas == 1:
            return torch.cat(pieces)
        gathered: list = [None] * self.replicas
        dist.all_gather_object(gathered, pieces, group=stage_groups(layout.stages, self.replicas,
                                                                    self.peer_timeout)[layout.stage])
        return interleave(gathered)

    @torch.no_grad()
    def exit_batches(self, blocks: Sequence[Block], batches: FlowBatches,
                     policy) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """Early exit on the pipeline: samples that exit at stage k are not sent to k+1.

        Returns (predictions, labels, exit block per sample, samples processed per block), the
        same on every rank, samples in data order.
        """
        layout, block, device, comm, watch = self._setup(blocks)
        block.eval()
        exited: list[tuple[Tensor, Tensor, Tensor]] = []  # (global ids, predictions, labels)
        processed = [0]

        def compute(step: int, micro: int, flow: Flow, labels: Tensor, extras: list[Tensor]):
            if len(extras) == 1:  # the first stage: a fresh batch of numbered samples
                extras = [extras[0], torch.zeros(extras[0].numel(), dtype=torch.long)]
            state = ExitState(extras[0], extras[1], extras[2] if len(extras) > 2 else None)
            out = block(flow_to(flow, device))
            processed[0] += int(state.ids.numel())
            logits = out if layout.last else block.exit_logits(out)
            if logits is None:
                return out, labels, extras
            leave, ids, predicted, state = exit_step(policy, logits.float().cpu(), state, layout.last)
            exited.append((ids, predicted, labels.cpu()[leave]))
            if state.ids.numel() == 0:
                return None
            stay = ~leave
            return (select(out, stay), labels[stay.to(labels.device)],
                    [state.ids, state.counter, state.previous])

        self._stage(layout, comm, compute, lambda *args: None, batches, 1, watch, numbered=True)
        watch.meet(lambda: None, False)
        gathered = _gather_all({"ids": _cat(e[0] for e in exited), "preds": _cat(e[1] for e in exited),
                                "labels": _cat(e[2] for e in exited), "processed": processed[0]})
        n = sum(g["ids"].numel() for g in gathered)
        preds, labels, exit_block = (torch.empty(n, dtype=torch.long) for _ in range(3))
        for rank, g in enumerate(gathered):
            preds[g["ids"]], labels[g["ids"]], exit_block[g["ids"]] = (g["preds"], g["labels"],
                                                                       layout.stage_of(rank))
        processed_per_stage = [sum(gathered[r]["processed"] for r in layout.stage_ranks(k))
                               for k in range(layout.stages)]
        return preds, labels, exit_block, processed_per_stage

    @torch.no_grad()
    def exit_predictions(self, blocks: Sequence[Block],
                         batches: FlowBatches) -> tuple[list[Optional[Tensor]], Tensor]:
        """Every exit's predictions for every sample (each rank predicts with its block's exit),
        and the labels; the same on every rank, samples in data order."""
        layout, block, device, comm, watch = self._setup(blocks)
        block.eval()
        ids_seen, preds, labels_seen = [], [], []

        def compute(step: int, micro: int, flow: Flow, labels: Tensor, extras: list[Tensor]):
            ids = extras[0]
            out = block(flow_to(flow, device))
            logits = out if layout.last else block.exit_logits(out)
            if logits is not None:
                preds.append(logits.argmax(dim=1).cpu())
            ids_seen.append(ids)
            labels_seen.append(labels.cpu())
            return out, labels, [ids]

        self._stage(layout, comm, compute, lambda *args: None, batches, 1, watch, numbered=True)
        watch.meet(lambda: None, False)
        gathered = _gather_all({"ids": _cat(ids_seen), "preds": _cat(preds) if preds else None,
                                "labels": _cat(labels_seen)})
        n = sum(g["ids"].numel() for g in gathered[:layout.replicas])  # the first stage saw every sample
        labels = torch.empty(n, dtype=torch.long)
        out: list[Optional[Tensor]] = []
        for k in range(layout.stages):
            ranks = layout.stage_ranks(k)
            if gathered[ranks[0]]["preds"] is None:
                out.append(None)
                continue
            stage_preds = torch.empty(n, dtype=torch.long)
            for r in ranks:
                stage_preds[gathered[r]["ids"]] = gathered[r]["preds"]
                labels[gathered[r]["ids"]] = gathered[r]["labels"]
            out.append(stage_preds)
        return out, labels


def _numbered(source: Iterator) -> Iterator[tuple]:
    """(step, micro, inputs, labels, [sample numbers]): every row numbered in data order."""
    offset = 0
    for step, micro, flow, labels in source:
        n = labels.shape[0]
        yield step, micro, flow, labels, [torch.arange(offset, offset + n)]
        offset += n


def _cat(tensors) -> Tensor:
    tensors = list(tensors)
    return torch.cat(tensors) if tensors else torch.empty(0, dtype=torch.long)


def _gather_all(obj: dict) -> list[dict]:
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def _broadcast_tensor(t: Optional[Tensor], src: int, device: torch.device) -> Tensor:
    """Broadcast a tensor of any shape and dtype from ``src`` (shape and dtype travel first)."""
    sent = t if dist.get_rank() == src else None  # the tensor, on the source rank
    assert sent is not None or dist.get_rank() != src, "the source rank broadcasts a tensor"
    header = (p2p.encode_header(p2p.Message(p2p.DATA, tensors=[sent])) if sent is not None
              else torch.zeros(p2p.HEADER_LEN, dtype=torch.int64))
    header = header.to(device)
    dist.broadcast(header, src)
    _, [(dtype, shape)] = p2p.decode_header(header.cpu())
    buf = sent.to(device) if sent is not None else torch.empty(shape, dtype=dtype, device=device)
    dist.broadcast(buf, src)
    return buf.cpu()
