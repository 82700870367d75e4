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
that dies closes its sockets, so its neighbours' receives fail and they raise in turn, and its
heartbeat stops, which every rank notices within ``peer_timeout`` seconds even where no socket
breaks (see :mod:`scpl.executors.watch`); under ``torchrun`` the agent also stops the remaining
workers. No rank waits forever.
"""

from __future__ import annotations

import inspect
import os
import threading
import warnings
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..block import Block
from ..errors import ConfigError
from ..flow import Flow, flow_to
from . import p2p
from .base import Batches, Failures, Pipe, StepCallback, StepLosses, Stop, check_sizes, pieces
from .watch import DEFAULT_TIMEOUT_S, RemoteStageFailure, Watch, announce

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
_JOIN_S = 5.0


def _warn_if_group_kept_alive() -> None:
    """Warn when torch.distributed.nn.functional was imported after the group (see above)."""
    default = inspect.signature(torch.distributed.nn.functional.broadcast).parameters["group"].default
    if default is not None:
        warnings.warn("torch.distributed.nn.functional was first imported after init_process_group, so the "
                      "process group outlives destroy_process_group() and a rank may abort at exit (SIGABRT). "
                      "Import scpl before calling init_process_group.", RuntimeWarning, stacklevel=3)


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
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


class DistributedExecutor:
    """Run block ``rank`` on this process; see the module docstring for the contract.

    Args:
        micro_batches: cut each batch into this many pieces (one optimizer step per batch).
        device: where this rank's block runs; default ``cuda:LOCAL_RANK`` under NCCL, else CPU.
        queue_size: messages buffered between the compute thread and each communication thread.
        peer_timeout: seconds without a heartbeat after which a peer rank is taken for dead
            (killed or hung) and every rank stops (see :mod:`scpl.executors.watch`).
    """

    name = "distributed"

    def __init__(self, micro_batches: int = 1, device: Optional[str] = None, queue_size: int = 2,
                 peer_timeout: float = DEFAULT_TIMEOUT_S):
        check_sizes(micro_batches, queue_size)
        if not peer_timeout > 0:
            raise ConfigError(f"peer_timeout must be a positive number of seconds, got {peer_timeout}")
        self.micro_batches = micro_batches
        self.device = torch.device(device) if device else None
        self.queue_size = queue_size
        self.peer_timeout = peer_timeout

    # -- set-up ---------------------------------------------------------------------------
    def _setup(self, blocks: Sequence[nn.Module]) -> tuple[int, int, torch.device, torch.device]:
        if not dist.is_initialized():
            raise ConfigError(
                "the distributed executor needs torch.distributed: launch with `torchrun --nproc-per-node=K ...` "
                "and call scpl.executors.distributed.init_from_env() first"
            )
        _warn_if_group_kept_alive()
        rank, world = dist.get_rank(), dist.get_world_size()
        if world != len(blocks):
            raise ConfigError(f"{len(blocks)} blocks need {len(blocks)} ranks, but the world size is {world}")
        nccl = dist.get_backend() == "nccl"
        device = self.device or (torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu"))
        blocks[rank].to(device)
        _move_optimizer_state(blocks[rank], device)
        comm_device = device if nccl else torch.device("cpu")
        return rank, world, device, comm_device

    # -- the public operations ------------------------------------------------------------
    def train_epoch(
        self, blocks: Sequence[Block], batches: Batches, on_step: Optional[StepCallback] = None
    ) -> list[list[float]]:
        """Train this rank's block on every batch; return the per-step losses of all blocks.

        ``on_step`` is called on the last rank only (where a step's losses are complete); every
        rank returns the full history.
        """
        rank, world, device, comm = self._setup(blocks)
        block, m = blocks[rank], self.micro_batches

        def compute(step: int, micro: int, flow: Flow, labels: Tensor, extras: list[Tensor]):
            out, loss = block.train_step(flow, labels, micro, m)
            losses = extras[0].tolist() if extras else []
            return out, labels, [torch.tensor(losses + [loss], dtype=torch.float64)]

        record = StepLosses(world, m, on_step)

        def sink(step: int, micro: int, out: Flow, labels: Tensor, extras: list[Tensor]) -> None:
            record.add(step, micro, extras[0].tolist())

        watch = self._run(rank, world, comm, compute, sink, batches, m)
        table = watch.meet(lambda: torch.tensor(record.history, dtype=torch.float64).reshape(-1, world),
                           rank == world - 1)
        return _broadcast_tensor(table, world - 1, comm).tolist()

    @torch.no_grad()
    def forward_batches(self, blocks: Sequence[nn.Module], batches: Batches) -> Iterator[tuple[Tensor, Tensor]]:
        """Logits and labels of every batch, run through the pipeline in eval mode.

        Yields one pair: the concatenated (logits, labels), on every rank (broadcast from the
        last rank).
        """
        rank, world, device, comm = self._setup(blocks)
        block = blocks[rank]
        block.eval()

        def compute(step: int, micro: int, flow: Flow, labels: Tensor, extras: list[Tensor]):
            return block(flow_to(flow, device)), labels, []

        logits, labels_out = [], []

        def sink(step: int, micro: int, out: Flow, labels: Tensor, extras: list[Tensor]) -> None:
            logits.append(out.float().cpu())
            labels_out.append(labels.cpu())

        watch = self._run(rank, world, comm, compute, sink, batches, 1)

        def gather() -> tuple[Tensor, Tensor]:
            if not logits:
                raise ConfigError("evaluate()/predict() got an empty loader")
            return torch.cat(logits), torch.cat(labels_out)

        result = watch.meet(gather, rank == world - 1)
        last = world - 1
        all_logits = _broadcast_tensor(result[0] if result else None, last, comm)
        all_labels = _broadcast_tensor(result[1] if result else None, last, comm)
        yield all_logits, all_labels

    @torch.no_grad()
    def exit_batches(self, blocks: Sequence[nn.Module], batches: Batches,
                     policy) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """Early exit on the pipeline: samples that exit at stage k are not sent to k+1.

        Returns (predictions, labels, exit block per sample, samples processed per block), the
        same on every rank, samples in data order.
        """
        from ..inference import ExitState, decide, select

        rank, world, device, comm = self._setup(blocks)
        block = blocks[rank]
        block.eval()
        last = rank == world - 1
        exited: list[tuple[Tensor, Tensor, Tensor]] = []  # (global ids, predictions, labels)
        processed = [0]
        offset = [0]

        def compute(step: int, micro: int, flow: Flow, labels: Tensor, extras: list[Tensor]):
            if not extras:  # rank 0: a fresh batch; number its samples globally
                n = labels.shape[0]
                extras = [torch.arange(offset[0], offset[0] + n), torch.zeros(n, dtype=torch.long)]
                offset[0] += n
            state = ExitState(extras[0], extras[1], extras[2] if len(extras) > 2 else None)
            out = block(flow_to(flow, device))
            processed[0] += int(state.ids.numel())
            logits = out if last else block.exit_logits(out)
            if logits is None:
                return out, labels, extras
            logits = logits.float().cpu()
            leave, state = decide(policy, logits, state)
            if last:
                leave = torch.ones_like(leave)
            exited.append((state.ids[leave], logits[leave].argmax(dim=1), labels.cpu()[leave]))
            stay = ~leave
            if not bool(stay.any()):
                return None
            state = state.keep(stay)
            return select(out, stay), labels[stay.to(labels.device)], [state.ids, state.counter, state.previous]

        self._run(rank, world, comm, compute, lambda *args: None, batches, 1).meet(lambda: None, False)
        mine = {"ids": torch.cat([e[0] for e in exited]) if exited else torch.empty(0, dtype=torch.long),
                "preds": torch.cat([e[1] for e in exited]) if exited else torch.empty(0, dtype=torch.long),
                "labels": torch.cat([e[2] for e in exited]) if exited else torch.empty(0, dtype=torch.long),
                "processed": processed[0]}
        gathered: list = [None] * world
        dist.all_gather_object(gathered, mine)
        n = sum(g["ids"].numel() for g in gathered)
        preds, labels, exit_block = (torch.empty(n, dtype=torch.long) for _ in range(3))
        for k, g in enumerate(gathered):
            preds[g["ids"]], labels[g["ids"]], exit_block[g["ids"]] = g["preds"], g["labels"], k
        return preds, labels, exit_block, [g["processed"] for g in gathered]

    @torch.no_grad()
    def exit_predictions(self, blocks: Sequence[nn.Module],
                         batches: Batches) -> tuple[list[Optional[Tensor]], Tensor]:
        """Every exit's predictions for every sample (each rank predicts with its block's exit),
        and the labels; the same on every rank, samples in data order."""
        rank, world, device, comm = self._setup(blocks)
        block = blocks[rank]
        block.eval()
        last = rank == world - 1
        mine: list[Tensor] = []
        labels_seen: list[Tensor] = []

        def compute(step: int, micro: int, flow: Flow, labels: Tensor, extras: list[Tensor]):
            out = block(flow_to(flow, device))
            logits = out if last else block.exit_logits(out)
            if logits is not None:
                mine.append(logits.argmax(dim=1).cpu())
            labels_seen.append(labels.cpu())
            return out, labels, []

        self._run(rank, world, comm, compute, lambda *args: None, batches, 1).meet(lambda: None, False)
        gathered: list = [None] * world
        dist.all_gather_object(gathered, {"preds": torch.cat(mine) if mine else None,
                                          "labels": torch.cat(labels_seen) if labels_seen else torch.empty(0)})
        return [g["preds"] for g in gathered], gathered[-1]["labels"]

    # -- machinery ------------------------------------------------------------------------
    def _run(self, rank: int, world: int, comm: torch.device, compute, sink, batches: Batches, m: int) -> Watch:
        """The stage loop of this rank: receive (or read), compute, send (or sink). Returns the
        call's :class:`Watch` for the closing meeting; a failure anywhere raises StageError."""
        abort = threading.Event()
        failures = Failures(abort)
        watch = Watch(rank, world, self.peer_timeout)
        inbox = Pipe(abort, self.queue_size) if rank > 0 else None
        outbox = Pipe(abort, self.queue_size) if rank < world - 1 else None
        threads = [threading.Thread(target=watch.run, args=(abort, lambda r, e: failures.add(r, e, "")), daemon=True)]
        if inbox is not None:
            threads.append(threading.Thread(target=_pump, args=(rank - 1, _receiver(rank, comm, inbox), failures),
                                            daemon=True))
        sender = None
        if outbox is not None:
            sender = threading.Thread(target=_pump, args=(rank + 1, _sender(rank, comm, outbox), failures), daemon=True)
            threads.append(sender)
        for t in threads:
            t.start()
        source = pieces(batches, m) if rank == 0 else iter(())
        try:
            for step, micro, flow, labels, extras in _incoming(source, inbox):
                result = compute(step, micro, flow, labels, extras)
                if result is None:  # nothing left to send on (e.g. every sample exited)
                    continue
                out, labels, extras = result
                if outbox is not None:
                    is_tuple = not isinstance(out, Tensor)
                    tensors = list(out) if is_tuple else [out]
                    flag = (len(extras) << 1) | int(is_tuple)
                    msg = p2p.Message(p2p.DATA, step, micro, [*tensors, labels, *extras], flag=flag)
                    msg.header = p2p.encode_header(msg)  # an unsendable output fails here, as this stage's error
                    outbox.put(msg)
                else:
                    sink(step, micro, out, labels, extras)
            if outbox is not None:
                outbox.put(p2p.Message(p2p.END))
                while sender.is_alive() and not abort.is_set():  # the sender drains the outbox first
                    sender.join(0.2)
                if abort.is_set():
                    raise Stop
        except Stop:
            pass
        except BaseException as exc:
            failures.add(rank, exc, first=True)
            announce(watch.store, rank, exc)
        finally:
            abort.set()  # stops the watchdog (and the comm threads, on failure)
        if failures:
            dist.destroy_process_group()  # fails the comm threads' pending operations ...
            for t in threads:  # ... so they end before the interpreter does
                t.join(_JOIN_S)
            raise failures.error()
        for t in threads:  # no thread may outlive the call (one inside a store or gloo call at
            t.join()       # interpreter exit aborts the process)
        return watch


def _incoming(source: Iterator, inbox: Optional[Pipe]) -> Iterator[tuple[int, int, Flow, Tensor, list[Tensor]]]:
    """(step, micro, flow, labels, extra tensors) read from the data (rank 0) or received."""
    if inbox is None:
        for step, micro, flow, labels in source:
            yield step, micro, flow, labels, []
        return
    while True:
        msg = inbox.get()
        if msg.kind == p2p.END:
            return
        n_extras, is_tuple = msg.flag >> 1, msg.flag & 1
        n_flow = len(msg.tensors) - 1 - n_extras
        flow, labels, extras = msg.tensors[:n_flow], msg.tensors[n_flow], msg.tensors[n_flow + 1:]
        yield msg.step, msg.micro, (tuple(flow) if is_tuple else flow[0]), labels, list(extras)


def _pump(peer: int, move: Callable[[], p2p.Message], failures: Failures) -> None:
    """Move messages (receive from or send to ``peer``) until END; a broken link is a failure."""
    try:
        while not failures.abort.is_set():
            if move().kind == p2p.END:
                return
    except Stop:
        pass
    except BaseException as exc:
        if not failures.abort.is_set():
            failures.add(peer, RemoteStageFailure(f"lost the connection to rank {peer}: {exc}"))


def _receiver(rank: int, comm: torch.device, inbox: Pipe) -> Callable[[], p2p.Message]:
    def move() -> p2p.Message:
        msg = p2p.recv(rank - 1, comm)
        inbox.put(msg)
        return msg

    return move


def _sender(rank: int, comm: torch.device, outbox: Pipe) -> Callable[[], p2p.Message]:
    def move() -> p2p.Message:
        msg = outbox.get()
        p2p.send(msg, rank + 1, comm)
        return msg

    return move


def _broadcast_tensor(t: Optional[Tensor], src: int, device: torch.device) -> Tensor:
    """Broadcast a tensor of any shape and dtype from ``src`` (shape and dtype travel first)."""
    header = p2p.encode_header(p2p.Message(p2p.DATA, tensors=[t])) if dist.get_rank() == src else torch.zeros(p2p.HEADER_LEN, dtype=torch.int64)
    header = header.to(device)
    dist.broadcast(header, src)
    _, [(dtype, shape)] = p2p.decode_header(header.cpu())
    buf = t.to(device) if dist.get_rank() == src else torch.empty(shape, dtype=dtype, device=device)
    dist.broadcast(buf, src)
    return buf.cpu()
