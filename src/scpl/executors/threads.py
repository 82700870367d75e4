"""Threaded executor: one worker thread per block, bounded queues between them.

Block k works on (micro-)batch t while block k+1 works on t-1: the pipeline streams across
consecutive training batches with no barrier per step, because nothing flows backward. On CUDA
each stage runs on its own stream; the hand-over to the next stage waits on an event recorded
after the producing stage's work, and inputs are copied from pinned memory without blocking.

Contract: after ``train_epoch`` the parameters equal those of :class:`SequentialExecutor` on
the same batches (bitwise on CPU with the same per-thread intra-op thread count). Blocks with
dropout must set ``rng_seed``: random generators are per device and shared by threads, and a
seeded block draws under a per-generator lock, so its draws do not depend on the executor. A
failure in any stage stops every worker and is re-raised in the caller as :class:`StageError`
with the stage index and the original traceback; nothing hangs.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor, nn

from ..block import Block
from ..flow import Flow, flow_to, map_flow
from .base import (
    Failures,
    FlowBatches,
    InProcessInference,
    Pipe,
    StepCallback,
    StepLosses,
    Stop,
    check_sizes,
    pieces,
)

_JOIN_S = 1.0


@dataclass
class _Item:
    step: int
    micro: int
    flow: Flow
    labels: Tensor
    losses: list = field(default_factory=list)
    event: Optional[Any] = None  # torch.cuda.Event recorded after the producer's work


@dataclass(frozen=True)
class TraceEvent:
    """One ``block.train_step`` of stage ``stage`` on micro-batch ``micro`` of batch ``step``.

    ``start`` and ``end`` are host ``time.perf_counter()`` seconds since the ``train_epoch`` call.
    """

    stage: int
    step: int
    micro: int
    start: float
    end: float


_END = object()


class ThreadedExecutor(InProcessInference):
    """Run each block in its own thread; see the module docstring for the contract.

    Args:
        micro_batches: cut each batch into this many pieces (gradients accumulate, one step
            per batch per block, as in :class:`SequentialExecutor`).
        queue_size: items a stage may run ahead of the next one.
        threads_per_stage: intra-op threads per worker on CPU (``torch.set_num_threads`` is
            process-wide, so it is set once to this value for the run and restored after).
        trace: record one :class:`TraceEvent` per ``block.train_step`` in ``self.events``
            (reset by each ``train_epoch``, sorted by start; see :func:`scpl.plots.plot_timeline`).
            Times are host times: on CUDA they measure when a stage's kernels were queued, not
            when they ran, so they show launch overlap only. Off by default, and free when off.
    """

    name = "threads"

    def __init__(
        self, micro_batches: int = 1, queue_size: int = 2, threads_per_stage: Optional[int] = 1,
        trace: bool = False
    ):
        check_sizes(micro_batches, queue_size)
        self.micro_batches = micro_batches
        self.queue_size = queue_size
        self.threads_per_stage = threads_per_stage
        self.trace = trace
        self.events: list[TraceEvent] = []

    def train_epoch(self, blocks: Sequence[Block], batches: FlowBatches,
                    on_step: Optional[StepCallback] = None) -> list[list[float]]:
        """Stream every batch through the blocks; return per-step, per-block mean losses."""
        _warn_if_random(blocks)
        self.events = []
        clock = (self.events, time.perf_counter()) if self.trace else None
        abort = threading.Event()
        failures = Failures(abort)
        pipes = [Pipe(abort, self.queue_size) for _ in range(len(blocks) + 1)]
        next_devices = [b.device for b in blocks[1:]] + [None]
        workers = [threading.Thread(target=failures.guard, name=f"scpl-stage-{k}", daemon=True, args=(
            k, lambda k=k, block=block: self._work(k, block, next_devices[k], pipes[k], pipes[k + 1], clock)))
            for k, block in enumerate(blocks)]
        feeder = threading.Thread(target=failures.guard, name="scpl-feeder", daemon=True,
                                  args=(-1, lambda: self._feed(batches, pipes[0], blocks[0].device)))
        old_threads = torch.get_num_threads()
        if self.threads_per_stage:
            torch.set_num_threads(self.threads_per_stage)
        collector = StepLosses(len(blocks), self.micro_batches, on_step)
        try:
            for t in (*workers, feeder):
                t.start()
            while (item := pipes[-1].get()) is not _END:
                collector.add(item.step, item.micro, item.losses)
        except Stop:
            pass
        except BaseException:
            abort.set()
            raise
        finally:
            for w in workers:
                w.join()
            # The feeder may be stuck inside the user's data loader: a failure does not wait for it
            # (it is a daemon thread and stops at its next put); a clean end does.
            feeder.join(_JOIN_S if failures else None)
            torch.set_num_threads(old_threads)
            self.events.sort(key=lambda e: e.start)
        if failures:
            raise failures.error()
        return collector.history

    def _feed(self, batches: FlowBatches, out: Pipe, device: torch.device) -> None:
        pin = device.type == "cuda"
        for step, micro, flow, labels in pieces(batches, self.micro_batches):
            if pin:
                flow, labels = map_flow(Tensor.pin_memory, flow), labels.pin_memory()
            out.put(_Item(step, micro, flow, labels))
        out.put(_END)

    def _work(self, k: int, block: Block, next_device, inp: Pipe, out: Pipe, clock) -> None:
        stream = _stream_for(block.device)
        if stream is not None:  # see parameter writes queued before the run (load_state_dict, ...)
            stream.wait_stream(torch.cuda.current_stream(stream.device))
        try:
            with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
                while (item := inp.get()) is not _END:
                    if item.event is not None:
                        stream.wait_event(item.event)
                        _record_stream(item.flow, stream)
                        _record_stream(item.labels, stream)
                    start = time.perf_counter()
                    flow, loss = block.train_step(item.flow, item.labels, item.micro, self.micro_batches)
                    if clock is not None:
                        events, t0 = clock
                        events.append(TraceEvent(k, item.step, item.micro, start - t0,
                                                 time.perf_counter() - t0))
                    item.losses.append(loss)
                    if next_device is not None:  # hand over: copy to the next stage's device, then mark
                        item.flow = flow_to(flow, next_device, non_blocking=True)
                        item.labels = item.labels.to(next_device, non_blocking=True)
                        item.event = _record(next_device)
                    out.put(item)
                out.put(_END)
        finally:
            if stream is not None:  # later work on the default stream sees this stage's last step
                torch.cuda.current_stream(stream.device).wait_stream(stream)


def _warn_if_random(blocks: Sequence[Block]) -> None:
    def random(b: Block) -> bool:
        return b.rng_seed is None and any(isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0
                                          for m in b.modules())

    if any(random(b) for b in blocks):
        warnings.warn(
            "threaded executor: blocks contain dropout but no rng_seed; their threads draw from shared "
            "random generators, so the run is not reproducible and differs from the sequential engine. "
            "Set block.rng_seed (seeded per block and step), or use the distributed executor.",
            RuntimeWarning,
            stacklevel=3,
        )


def _stream_for(device: torch.device):
    return torch.cuda.Stream(device=device) if device.type == "cuda" else None


def _record(device: torch.device):
    """An event after all work queued so far on ``device``'s current stream (None on CPU)."""
    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record(torch.cuda.current_stream(device))
    return event


def _record_stream(flow: Flow, stream) -> None:
    """Tell the caching allocator that ``stream`` uses these tensors (they came from another stream)."""
    map_flow(lambda t: t.record_stream(stream) if t.is_cuda else None, flow)
