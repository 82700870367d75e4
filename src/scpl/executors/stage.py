"""One rank's part of a distributed pipeline: receive, compute, send, with failures caught.

A stage reads its inputs from the data (the first stage) or from the rank before it, calls
``compute`` on each (micro-)batch and sends the result to the rank after it (or hands it to
``sink`` at the last stage). Receiving and sending run in one thread each, so communication
overlaps compute; a watchdog thread runs the call's :class:`~scpl.executors.watch.Watch`.
Messages are :mod:`~scpl.executors.p2p` messages: a flow (tensor or tuple), the labels, and
extra tensors a stage passes on (losses so far, sample ids).
"""

from __future__ import annotations

import threading
from typing import Callable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor

from ..flow import Flow
from . import p2p
from .base import Failures, Pipe, Stop
from .watch import RemoteStageFailure, Report, Watch, announce, announced

_JOIN_S = 5.0
UNKNOWN_GRACE_S = 2.0
"""How long a failure whose rank is unknown (the store's host is gone) waits for this rank's own
threads to name a failed peer (a broken link) before the store loss is recorded as the failure."""

Compute = Callable[[int, int, Flow, Tensor, list], Optional[tuple[Flow, Tensor, list]]]
"""``compute(step, micro, flow, labels, extras) -> (out, labels, extras)``, or None to send nothing."""
Sink = Callable[[int, int, Flow, Tensor, list], None]
"""What the last stage does with each result."""


def run_stage(rank: int, prev: Optional[int], next_: Optional[int], comm: torch.device, compute: Compute,
              sink: Sink, source: Iterator, watch: Watch, queue_size: int,
              stage_of: Callable[[int], int] = lambda rank: rank) -> None:
    """Run this rank's stage until the end of the data (``source`` at the first stage, ``prev``'s
    END message otherwise). A failure anywhere (here, in a peer, or a broken link) stops every
    thread, is announced to the other ranks and raises :class:`~scpl.errors.StageError` naming the
    failed rank's stage (``stage_of``)."""
    abort = threading.Event()
    failures = Failures(abort)
    inbox = Pipe(abort, queue_size) if prev is not None else None
    outbox = Pipe(abort, queue_size) if next_ is not None else None
    threads = [threading.Thread(target=watch.run, args=(abort, _report(failures)), daemon=True)]
    if prev is not None and inbox is not None:
        threads.append(threading.Thread(target=_pump, args=(prev, _receiver(prev, comm, inbox), failures),
                                        daemon=True))
    sender = None
    if next_ is not None and outbox is not None:
        sender = threading.Thread(target=_pump, args=(next_, _sender(next_, comm, outbox), failures),
                                  daemon=True)
        threads.append(sender)
    for t in threads:
        t.start()
    try:
        for step, micro, flow, labels, extras in _incoming(source, inbox):
            result = compute(step, micro, flow, labels, extras)
            if result is None:  # nothing left to send on (e.g. every sample exited)
                continue
            out, labels, extras = result
            if outbox is not None:
                is_tuple = not isinstance(out, Tensor)
                tensors = [out] if isinstance(out, Tensor) else list(out)
                flag = (len(extras) << 1) | int(is_tuple)
                msg = p2p.Message(p2p.DATA, step, micro, [*tensors, labels, *extras], flag=flag)
                msg.header = p2p.encode_header(msg)  # an unsendable output fails here, as this stage's error
                outbox.put(msg)
            else:
                sink(step, micro, out, labels, extras)
        if outbox is not None:
            outbox.put(p2p.Message(p2p.END))
            assert sender is not None  # started with the outbox
            while sender.is_alive() and not abort.is_set():  # the sender drains the outbox first
                sender.join(0.2)
            if abort.is_set():
                raise Stop
    except Stop:
        pass
    except BaseException as exc:
        failures.add(rank, exc)  # after any failure seen before it (a peer's): that is likely its cause
        announce(watch.store, rank, exc)
    finally:
        abort.set()  # stops the watchdog (and the comm threads, on failure)
    if failures:
        _explain(failures, watch.store, rank)
        _announce_lost_peer(failures, watch.store, rank)
        _keep_own_error(failures, rank)
        dist.destroy_process_group()  # fails the comm threads' pending operations ...
        for t in threads:  # ... so they end before the interpreter does
            t.join(_JOIN_S)
        raise failures.error(stage_of)
    for t in threads:  # no thread may outlive the call (one inside a store or gloo call at
        t.join()       # interpreter exit aborts the process)


def _incoming(source: Iterator,
              inbox: Optional[Pipe]) -> Iterator[tuple[int, int, Flow, Tensor, list[Tensor]]]:
    """(step, micro, flow, labels, extra tensors) read from the data (first stage) or received."""
    if inbox is None:
        for step, micro, flow, labels, *extras in source:  # the data may bring extras (sample ids)
            yield step, micro, flow, labels, extras[0] if extras else []
        return
    while True:
        msg = inbox.get()
        if msg.kind == p2p.END:
            return
        n_extras, is_tuple = msg.flag >> 1, msg.flag & 1
        n_flow = len(msg.tensors) - 1 - n_extras
        flow, labels, extras = msg.tensors[:n_flow], msg.tensors[n_flow], msg.tensors[n_flow + 1:]
        yield msg.step, msg.micro, (tuple(flow) if is_tuple else flow[0]), labels, list(extras)


def _report(failures: Failures, grace: float = UNKNOWN_GRACE_S) -> Report:
    """The watchdog's report of a failure. One of unknown rank (the store is unreachable: the rank
    hosting it stopped) first gives this rank's links ``grace`` seconds to break: a broken link
    names a peer that stopped, which is then the error raised, with a note that the store is
    gone too (:func:`_explain`). If the stage finished cleanly meanwhile, nothing is recorded."""
    def report(rank: Optional[int], exc: BaseException) -> None:
        if rank is None and failures.abort.wait(grace):
            if not failures or _broken_link(failures):  # finished cleanly, or a link named a peer
                return
        failures.add(rank, exc, "")

    return report


class LostLink(RemoteStageFailure):
    """A link to a peer broke: the peer stopped (or its process died)."""


def _broken_link(failures: Failures) -> bool:
    """Whether the first failure recorded is a broken link to a peer."""
    return isinstance(failures.items[0][1], LostLink)


def _explain(failures: Failures, store, rank: int) -> None:
    """The first failure may be the effect of another rank's failure: a broken link (the peer
    stopped because of it, or announced why it stopped), or this rank's own error inside a
    collective (its partners in the collective stopped because of it). Put a failure another rank
    announced first. If the store cannot be reached (its host stopped), say so beside a broken
    link."""
    peer, first, text = failures.items[0]
    link = _broken_link(failures)
    if not link and peer != rank:  # already another rank's failure (announced, or its silence)
        return
    try:
        cause = announced(store)
    except Exception:
        if link:
            failures.items[0] = (peer, RemoteStageFailure(
                f"{first} (the process group's store is gone too: rank {peer} may have stopped because "
                "another rank failed)"), text)
        return
    if cause is not None and (link or cause[0] != rank):  # a lost peer's own announcement says why
        failures.items.insert(0, (*cause, ""))


def _keep_own_error(failures: Failures, rank: int) -> None:
    """Where another rank's failure comes first, add this rank's own later error (its effect, as
    a rank whose collective partner stopped) to the message, with its traceback: nothing is lost."""
    peer, first, text = failures.items[0]
    own = next(((exc, trace) for r, exc, trace in failures.items[1:] if r == rank), None)
    if peer == rank or own is None or not isinstance(first, RemoteStageFailure):
        return
    exc, trace = own
    message = f"{first}; then rank {rank} failed with {type(exc).__name__}: {exc}"
    failures.items[0] = (peer, type(first)(message), f"{text}(what rank {rank} then raised:)\n{trace}")


def _announce_lost_peer(failures: Failures, store, rank: int) -> None:
    """If a broken link is still the first failure (no cause was announced), announce the lost
    peer as failed: a rank beyond it sees only its silence, and must not blame this rank, which
    stops after it."""
    if _broken_link(failures):
        peer, lost, _ = failures.items[0]
        if peer is not None:
            announce(store, peer, LostLink(f"seen by rank {rank}: {lost}"))


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
            failures.add(peer, LostLink(f"lost the connection to rank {peer}: {exc}"))


def _receiver(peer: int, comm: torch.device, inbox: Pipe) -> Callable[[], p2p.Message]:
    def move() -> p2p.Message:
        msg = p2p.recv(peer, comm)
        inbox.put(msg)
        return msg

    return move


def _sender(peer: int, comm: torch.device, outbox: Pipe) -> Callable[[], p2p.Message]:
    def move() -> p2p.Message:
        msg = outbox.get()
        p2p.send(msg, peer, comm)
        return msg

    return move
