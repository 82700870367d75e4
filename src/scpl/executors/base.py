"""The executor contract, and the parts every executor shares.

An executor runs the blocks' :meth:`~scpl.block.Block.train_step` over an epoch of batches.
Whatever it does in parallel, it promises what :class:`Executor` states; the sequential
executor is the oracle the others are tested against (equal parameters, bitwise on CPU).
"""

from __future__ import annotations

import queue
import threading
import traceback
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol, Sequence, cast, runtime_checkable

import torch
from torch import Tensor

from ..block import Block
from ..errors import ConfigError, StageError
from ..exit_rules import exit_batch
from ..flow import Flow, micro_batches

StepCallback = Callable[[int, list[float]], None]
"""``on_step(step, losses)``: called once per completed step with each block's mean loss."""

FlowBatches = Iterable[tuple[Flow, Tensor]]
"""What executors consume: ``(inputs, labels)`` pairs, labels checked already."""


@runtime_checkable
class Executor(Protocol):
    """What an executor promises.

    * ``train_epoch(blocks, batches, on_step)`` trains every block on every batch (cut into
      ``micro_batches`` pieces whose gradients accumulate into one step per batch). Afterwards
      each block's parameters equal those of :class:`~scpl.executors.SequentialExecutor` on
      the same batches (bitwise on CPU). It returns the per-step mean loss of every block
      (the same list in every process) and calls ``on_step`` once per step, in step order, in
      one process. A failure in any stage raises :class:`~scpl.errors.StageError` naming it.
    * ``forward_batches(blocks, batches)`` yields ``(logits, labels)`` of the whole network in
      eval mode (in one or several pieces; the same in every process).
    * ``exit_batches(blocks, batches, policy)`` runs per-sample early exit and returns
      ``(predictions, labels, exit block per sample, samples processed per block)``.
    * ``exit_predictions(blocks, batches)`` returns every exit's predicted classes for every
      sample (None for a block without an exit; the last block's output is the last exit) and
      the labels.
    """

    name: str
    micro_batches: int

    def train_epoch(self, blocks: Sequence[Block], batches: FlowBatches,
                    on_step: Optional[StepCallback] = None) -> list[list[float]]:
        """Train every block on every batch; the per-step mean loss of every block."""
        ...

    def forward_batches(self, blocks: Sequence[Block],
                        batches: FlowBatches) -> Iterator[tuple[Tensor, Tensor]]:
        """``(logits, labels)`` of the whole network in eval mode, in one or several pieces."""
        ...

    def exit_batches(self, blocks: Sequence[Block], batches: FlowBatches,
                     policy: Any) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """Per-sample early exit: predictions, labels, exit block per sample, samples per block."""
        ...

    def exit_predictions(self, blocks: Sequence[Block],
                         batches: FlowBatches) -> tuple[list[Optional[Tensor]], Tensor]:
        """Every exit's predicted classes for every sample (None without an exit), and the labels."""
        ...


def check_sizes(micro_batches: int, queue_size: int = 1) -> None:
    """Raise :class:`ConfigError` unless both counts are at least 1."""
    if micro_batches < 1 or queue_size < 1:
        raise ConfigError(f"micro_batches and queue_size must be >= 1, got {micro_batches} and {queue_size}")


def pieces(batches: FlowBatches, m: int) -> Iterator[tuple[int, int, Flow, Tensor]]:
    """``(step, micro, inputs, labels)``: every batch cut into ``m`` micro-batches, in order."""
    for step, (inputs, labels) in enumerate(batches):
        for micro, (flow, piece_labels) in enumerate(micro_batches(inputs, labels, m)):
            yield step, micro, flow, piece_labels


class StepLosses:
    """Averages each step's micro-batch losses per block and calls ``on_step`` when a step is done.

    Every executor reports through it, so all report the same numbers in the same order.
    """

    def __init__(self, num_blocks: int, micro_batches: int, on_step: Optional[StepCallback] = None):
        self.k, self.m, self.on_step = num_blocks, micro_batches, on_step
        self.history: list[list[float]] = []
        self._partial = [0.0] * num_blocks

    def add(self, step: int, micro: int, losses: Sequence[float]) -> None:
        """Add a micro-batch's per-block losses; after a step's last one, record it and call ``on_step``."""
        for i, loss in enumerate(losses):
            self._partial[i] += loss / self.m
        if micro == self.m - 1:
            self.history.append(self._partial)
            self._partial = [0.0] * self.k
            if self.on_step is not None:
                self.on_step(step, self.history[-1])


class InProcessInference:
    """``forward_batches`` and ``exit_batches`` for executors whose blocks all live in this
    process: inference runs the blocks in order, batch by batch."""

    @torch.no_grad()
    def forward_batches(self, blocks: Sequence[Block],
                        batches: FlowBatches) -> Iterator[tuple[Tensor, Tensor]]:
        """``(logits, labels)`` of every batch, the blocks run in order in eval mode."""
        from ..flow import flow_to

        for block in blocks:
            block.eval()
        for inputs, labels in batches:
            flow = inputs
            for block in blocks:
                flow = block(flow_to(flow, block.device))
            yield cast(Tensor, flow), labels  # the last block's output: logits

    @torch.no_grad()
    def exit_predictions(self, blocks: Sequence[Block],
                         batches: FlowBatches) -> tuple[list[Optional[Tensor]], Tensor]:
        """Every exit's predicted classes (None for a block without an exit) and the labels."""
        from ..flow import flow_to

        for block in blocks:
            block.eval()
        preds: list[list[Tensor]] = [[] for _ in blocks]
        labels = []
        for inputs, batch_labels in batches:
            flow = inputs
            for k, block in enumerate(blocks):
                flow = block(flow_to(flow, block.device))
                logits = flow if k == len(blocks) - 1 else block.exit_logits(flow)
                if logits is not None:
                    preds[k].append(logits.argmax(dim=1).cpu())
            labels.append(batch_labels.cpu())
        return [torch.cat(p) if p else None for p in preds], torch.cat(labels) if labels else torch.empty(0)

    def exit_batches(self, blocks: Sequence[Block], batches: FlowBatches,
                     policy: Any) -> tuple[Tensor, Tensor, Tensor, list[int]]:
        """Per-sample early exit under ``policy``, batch by batch (see :class:`Executor`)."""
        preds, exits, labels, calls = [], [], [], [0] * len(blocks)
        for inputs, batch_labels in batches:
            p, e, c = exit_batch(blocks, inputs, policy)
            preds.append(p)
            exits.append(e)
            labels.append(batch_labels.cpu())
            calls = [a + b for a, b in zip(calls, c)]
        if not labels:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty, empty, calls
        return torch.cat(preds), torch.cat(labels), torch.cat(exits), calls


# --------------------------------------------------------------------------- pipelines

POLL_S = 0.05


class Stop(Exception):
    """Raised inside a worker when another stage failed (the pipeline is aborting)."""


class Pipe:
    """Bounded queue between two pipeline threads whose get/put give up when the pipeline aborts."""

    def __init__(self, abort: threading.Event, size: int):
        self.q: queue.Queue = queue.Queue(maxsize=size)
        self.abort = abort

    def put(self, item: Any) -> None:
        """Put ``item``, waiting while the queue is full; raise :class:`Stop` if the pipeline aborts."""
        while not self.abort.is_set():
            try:
                self.q.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue
        raise Stop

    def get(self) -> Any:
        """The next item, waiting while the queue is empty; raise :class:`Stop` if the pipeline aborts."""
        while not self.abort.is_set():
            try:
                return self.q.get(timeout=POLL_S)
            except queue.Empty:
                continue
        raise Stop


class Failures:
    """The failures of a pipeline's threads: the first one recorded aborts the pipeline and is
    the one raised (as :class:`StageError`) once every thread has stopped."""

    def __init__(self, abort: threading.Event):
        self.abort = abort
        self.items: list[tuple[Optional[int], BaseException, str]] = []

    def add(self, stage: Optional[int], exc: BaseException, text: Optional[str] = None) -> None:
        """Record ``exc`` of ``stage`` (with the current traceback unless ``text`` is given), after
        the failures recorded before it, and abort."""
        self.items.append((stage, exc, traceback.format_exc() if text is None else text))
        self.abort.set()

    def __bool__(self) -> bool:
        return bool(self.items)

    def error(self, stage_of: Optional[Callable[[int], int]] = None) -> StageError:
        """The first failure as a StageError; ``stage_of`` maps a recorded rank to its stage."""
        stage, exc, text = self.items[0]
        if stage_of is not None and stage is not None and stage >= 0:
            stage = stage_of(stage)
        error = StageError(stage, exc, text)
        error.__cause__ = exc
        return error

    def guard(self, stage: int, work: Callable[[], None]) -> None:
        """Run ``work``; a :class:`Stop` ends it quietly, any other exception is recorded."""
        try:
            work()
        except Stop:
            pass
        except BaseException as exc:
            self.add(stage, exc)
