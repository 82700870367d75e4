"""Distributed executor: one process per block on ``torch.distributed`` (gloo on CPU, NCCL on GPU).

Launch one rank per block, e.g. ``torchrun --nproc-per-node=K your_script.py``; every rank
builds the same :class:`~scpl.DecoupledModel` (same seed, hence the same initial parameters)
and calls ``fit`` / ``evaluate`` / ``predict`` with ``executor=DistributedExecutor()``.
Rank k trains block k only. Rank 0 alone reads the data; activations (tensor or tuple), labels
and the losses so far travel k -> k+1 as :mod:`~scpl.executors.p2p` messages, sent and received
by one thread each so that communication overlaps compute. Nothing travels backward.

After ``train_epoch`` every rank holds the same per-step loss history (broadcast from the last
rank) and block k's parameters equal the sequential engine's (bitwise on CPU).

Failure: a rank that raises writes the error to the process group's store; every other rank
polls the store and raises :class:`~scpl.errors.StageError` naming the failed stage. A rank
that dies closes its sockets, so its neighbours' receives fail and they raise in turn; under
``torchrun`` the agent also stops the remaining workers. No rank waits forever.
"""

from __future__ import annotations

import threading
import traceback
from typing import Iterable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..block import Block
from ..errors import ConfigError, StageError
from ..flow import Flow, flow_to, micro_batches
from . import p2p
from .sequential import StepCallback
from .threads import _Pipe, _Stop

ABORT_KEY = "scpl/abort"
_WATCH_S = 0.2
_JOIN_S = 5.0


class RemoteStageFailure(RuntimeError):
    """Stands in, on a healthy rank, for the exception raised on another rank."""


def init_from_env(backend: Optional[str] = None) -> tuple[int, int]:
    """Initialise the default process group from torchrun's environment; return (rank, world size).

    The backend defaults to NCCL when CUDA is available, gloo otherwise. A no-op when the group
    already exists.
    """
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


class DistributedExecutor:
    """Run block ``rank`` on this process; see the module docstring for the contract.

    Args:
        micro_batches: cut each batch into this many pieces (one optimizer step per batch).
        device: where this rank's block runs; default ``cuda:LOCAL_RANK`` under NCCL, else CPU.
        queue_size: messages buffered between the compute thread and each communication thread.
    """

    name = "distributed"

    def __init__(self, micro_batches: int = 1, device: Optional[str] = None, queue_size: int = 2):
        if micro_batches < 1:
            raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
        self.micro_batches = micro_batches
        self.device = torch.device(device) if device else None
        self.queue_size = queue_size

    # -- set-up ---------------------------------------------------------------------------
    def _setup(self, blocks: Sequence[nn.Module]) -> tuple[int, int, torch.device, torch.device]:
        if not dist.is_initialized():
            raise ConfigError(
                "the distributed executor needs torch.distributed: launch with `torchrun --nproc-per-node=K ...` "
                "and call scpl.executors.distributed.init_from_env() first"
            )
        rank, world = dist.get_rank(), dist.get_world_size()
        if world != len(blocks):
            raise ConfigError(f"{len(blocks)} blocks need {len(blocks)} ranks, but the world size is {world}")
        nccl = dist.get_backend() == "nccl"
        device = self.device or (torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu"))
        blocks[rank].to(device)
        comm_device = device if nccl else torch.device("cpu")
        return rank, world, device, comm_device

    # -- the public operations ------------------------------------------------------------
    def train_epoch(
        self, blocks: Sequence[Block], batches: Iterable[tuple[Flow, Tensor]], on_step: Optional[StepCallback] = None
    ) -> list[list[float]]:
        """Train this rank's block on every batch; return the per-step losses of all blocks."""
        rank, world, device, comm = self._setup(blocks)
        block, m = blocks[rank], self.micro_batches

        def compute(flow: Flow, labels: Tensor, micro: int) -> tuple[Flow, float]:
            return block.train_step(flow, labels, micro, m)

        history: list[list[float]] = []
        partial = [0.0] * world

        def sink(step: int, micro: int, out: Flow, labels: Tensor, losses: list[float]) -> None:
            for i, v in enumerate(losses):
                partial[i] += v / m
            if micro == m - 1:
                history.append(list(partial))
                partial[:] = [0.0] * world
                if on_step is not None:
                    on_step(step, history[-1])

        self._run(rank, world, device, comm, compute, sink, self._pieces(batches, rank, m))
        table = torch.tensor(history, dtype=torch.float64).reshape(-1, world) if rank == world - 1 else None
        table = _broadcast_tensor(table, world - 1, comm)
        return table.tolist()

    @torch.no_grad()
    def forward_batches(self, blocks: Sequence[nn.Module], batches: Iterable[tuple[Flow, Tensor]]) -> tuple[Tensor, Tensor]:
        """Logits and labels of every batch, run through the pipeline in eval mode.

        Returns the concatenated (logits, labels) on every rank (gathered from the last rank).
        """
        rank, world, device, comm = self._setup(blocks)
        block = blocks[rank]
        block.eval()

        def compute(flow: Flow, labels: Tensor, micro: int) -> tuple[Flow, float]:
            return block(flow_to(flow, device)), 0.0

        logits, labels_out = [], []

        def sink(step: int, micro: int, out: Flow, labels: Tensor, losses: list[float]) -> None:
            logits.append(out.float().cpu())
            labels_out.append(labels.cpu())

        self._run(rank, world, device, comm, compute, sink, self._pieces(batches, rank, 1))
        last = world - 1
        all_logits = _broadcast_tensor(torch.cat(logits) if rank == last else None, last, comm)
        all_labels = _broadcast_tensor(torch.cat(labels_out) if rank == last else None, last, comm)
        return all_logits, all_labels

    # -- machinery ------------------------------------------------------------------------
    @staticmethod
    def _pieces(batches, rank: int, m: int) -> Iterator[tuple[int, int, Flow, Tensor]]:
        if rank != 0:
            return iter(())
        return ((s, j, f, y) for s, (x, lab) in enumerate(batches) for j, (f, y) in enumerate(micro_batches(x, lab, m)))

    def _run(self, rank, world, device, comm, compute, sink, pieces) -> None:
        """The stage loop of this rank: receive (or read), compute, send (or sink)."""
        abort = threading.Event()
        failures: list[tuple[int, BaseException, str]] = []
        store = dist.distributed_c10d._get_default_store()
        inbox = _Pipe(abort, self.queue_size) if rank > 0 else None
        outbox = _Pipe(abort, self.queue_size) if rank < world - 1 else None
        threads = [threading.Thread(target=_watch, args=(store, abort, failures), daemon=True)]
        if inbox is not None:
            threads.append(threading.Thread(target=_receive, args=(rank, comm, inbox, abort, failures), daemon=True))
        sender = None
        if outbox is not None:
            sender = threading.Thread(target=_send, args=(rank, comm, outbox, abort, failures), daemon=True)
            threads.append(sender)
        for t in threads:
            t.start()
        try:
            for step, micro, flow, labels, losses in _incoming(pieces, inbox):
                out, loss = compute(flow, labels, micro)
                losses = losses + [loss]
                if outbox is not None:
                    is_tuple = not isinstance(out, Tensor)
                    tensors = list(out) if is_tuple else [out]
                    loss_t = torch.tensor(losses, dtype=torch.float64)
                    outbox.put(p2p.Message(p2p.DATA, step, micro, [*tensors, labels, loss_t], flag=int(is_tuple)))
                else:
                    sink(step, micro, out, labels, losses)
            if outbox is not None:
                outbox.put(p2p.Message(p2p.END))
                while sender.is_alive() and not abort.is_set():  # the sender drains the outbox first
                    sender.join(_WATCH_S)
                if abort.is_set():
                    raise _Stop
        except _Stop:
            pass
        except BaseException as exc:
            failures.insert(0, (rank, exc, traceback.format_exc()))
            _announce(store, rank, exc)
            abort.set()
        finally:
            abort.set()  # stops the watchdog (and the comm threads, on failure)
        if failures:
            stage, exc, text = failures[0]
            dist.destroy_process_group()  # fails the comm threads' pending operations ...
            for t in threads:  # ... so they end before the interpreter does
                t.join(_JOIN_S)
            raise StageError(stage, exc, text) from exc


def _incoming(pieces, inbox: Optional[_Pipe]) -> Iterator[tuple[int, int, Flow, Tensor, list[float]]]:
    if inbox is None:
        for step, micro, flow, labels in pieces:
            yield step, micro, flow, labels, []
        return
    while True:
        msg = inbox.get()
        if msg.kind == p2p.END:
            return
        *flow, labels, losses = msg.tensors
        yield msg.step, msg.micro, (tuple(flow) if msg.flag else flow[0]), labels, losses.tolist()


def _receive(rank: int, comm: torch.device, inbox: _Pipe, abort: threading.Event, failures: list) -> None:
    try:
        while not abort.is_set():
            msg = p2p.recv(rank - 1, comm)
            inbox.put(msg)
            if msg.kind == p2p.END:
                return
    except _Stop:
        pass
    except BaseException as exc:
        if not abort.is_set():
            failures.append((rank - 1, RemoteStageFailure(f"lost the connection to rank {rank - 1}: {exc}"), traceback.format_exc()))
            abort.set()


def _send(rank: int, comm: torch.device, outbox: _Pipe, abort: threading.Event, failures: list) -> None:
    try:
        while True:
            msg = outbox.get()
            p2p.send(msg, rank + 1, comm)
            if msg.kind == p2p.END:
                return
    except _Stop:
        pass
    except BaseException as exc:
        if not abort.is_set():
            failures.append((rank + 1, RemoteStageFailure(f"lost the connection to rank {rank + 1}: {exc}"), traceback.format_exc()))
            abort.set()


def _announce(store, rank: int, exc: BaseException) -> None:
    try:
        store.set(ABORT_KEY, f"{rank}\n{type(exc).__name__}: {exc}")
    except Exception:  # the store itself may be gone; neighbours still see closed sockets
        pass


def _watch(store, abort: threading.Event, failures: list) -> None:
    while not abort.wait(_WATCH_S):
        try:
            if store.check([ABORT_KEY]):
                rank_text, message = store.get(ABORT_KEY).decode().split("\n", 1)
                failures.append((int(rank_text), RemoteStageFailure(f"rank {rank_text} failed: {message}"), ""))
                abort.set()
                return
        except Exception as exc:  # store unreachable: the rank hosting it died
            failures.append((-1, RemoteStageFailure(f"lost the process group's store: {exc}"), traceback.format_exc()))
            abort.set()
            return


def _broadcast_tensor(t: Optional[Tensor], src: int, device: torch.device) -> Tensor:
    """Broadcast a tensor of any shape and dtype from ``src`` (shape and dtype travel first)."""
    header = p2p.encode_header(p2p.Message(p2p.DATA, tensors=[t])) if dist.get_rank() == src else torch.zeros(p2p.HEADER_LEN, dtype=torch.int64)
    header = header.to(device)
    dist.broadcast(header, src)
    _, [(dtype, shape)] = p2p.decode_header(header.cpu())
    buf = t.to(device) if dist.get_rank() == src else torch.empty(shape, dtype=dtype, device=device)
    dist.broadcast(buf, src)
    return buf.cpu()
