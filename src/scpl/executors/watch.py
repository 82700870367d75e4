"""Failure detection between ranks, through the process group's store.

Three mechanisms keep a rank from waiting forever on one that failed or died:

* **Announcement.** A rank whose stage raises writes ``ABORT_KEY`` (its rank and message);
  every other rank polls it and stops with a :class:`~scpl.errors.StageError` naming it.
* **Heartbeats.** While a rank is inside a pipeline call it increments its counter
  ``scpl/beat/{rank}`` several times a second. A peer whose counter stands still for ``timeout``
  seconds while this rank is inside a call is taken for dead (killed, or hung), even if it never
  announced anything (``kill -9``, a lost machine). So ranks must enter each pipeline call
  (``fit``, ``evaluate``, ...) within ``timeout`` seconds of each other.
* **Meetings.** Before the closing collectives of a call every rank meets the others through
  the store (:meth:`Watch.meet`), watching for both of the above, so a rank whose part ended
  cleanly never waits in a collective for a rank that is gone.

A rank hosting the store that dies makes every store call of the others fail: that too is
reported as a failure. Under ``torchrun`` the elastic agent also stops the remaining workers.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Callable, Optional, TypeVar

import torch.distributed as dist

from ..errors import StageError

ABORT_KEY = "scpl/abort"
POLL_S = 0.05
BEAT_S = 0.2
DEFAULT_TIMEOUT_S = 60.0
_ROUNDS = itertools.count()
T = TypeVar("T")
Report = Callable[[Optional[int], BaseException], None]
"""How a failure is reported: the failed rank (None: not known) and its exception."""


class RemoteStageFailure(RuntimeError):
    """Stands in, on a healthy rank, for the exception raised on another rank (or its death)."""


def announced(store) -> Optional[tuple[int, RemoteStageFailure]]:
    """The failure announced in the store (its rank and exception), or None; raises if the store
    cannot be reached."""
    if not store.check([ABORT_KEY]):
        return None
    rank_text, message = store.get(ABORT_KEY).decode().split("\n", 1)
    return int(rank_text), RemoteStageFailure(f"rank {rank_text} failed: {message}")


def _announce_first(store, rank: int, message: str) -> None:
    """Write ``rank``'s failure ``message`` to ``ABORT_KEY`` unless a failure was announced
    before (the first stands: a later one is likely its effect); raises if the store is gone."""
    if not store.check([ABORT_KEY]):
        store.set(ABORT_KEY, f"{rank}\n{message}")


def announce(store, rank: int, exc: BaseException) -> None:
    """Tell every rank that ``rank`` failed with ``exc``, unless a failure was announced before.
    Best effort: the store may be gone."""
    try:
        _announce_first(store, rank, f"{type(exc).__name__}: {exc}")
    except Exception:  # neighbours still see closed sockets
        pass


class Watch:
    """This rank's view of the others during one pipeline call.

    ``check()`` beats this rank's heart and returns a ``(rank, exception)`` failure (rank None:
    not known), or None: an announced failure, a peer whose heartbeat has not moved for
    ``timeout`` seconds of this call, or a store that cannot be reached.
    """

    def __init__(self, rank: int, world: int, timeout: float = DEFAULT_TIMEOUT_S,
                 peers: Optional[list[int]] = None, stage_of: Callable[[int], int] = lambda rank: rank):
        self.store = dist.distributed_c10d._get_default_store()
        self.rank, self.timeout, self.stage_of = rank, timeout, stage_of
        self.peers = [r for r in (peers if peers is not None else range(world)) if r != rank]
        self._seen: dict[int, tuple[int, float]] = {}  # rank -> (counter, when it last moved or first read)
        self._next_beat = 0.0

    def check(self) -> Optional[tuple[Optional[int], BaseException]]:
        """Beat this rank's heart; a ``(rank, exception)`` failure (rank None: not known), or None."""
        now = time.monotonic()
        try:
            # an announcement first: a peer that stopped after announcing another rank's death
            # falls silent too, and must not be blamed for it
            failure = announced(self.store)
            if failure is not None or now < self._next_beat:
                return failure
            self._next_beat = now + BEAT_S
            self.store.add(f"scpl/beat/{self.rank}", 1)
            stale = self._stale_peer(now)
            if stale is None:
                return None
            error = RemoteStageFailure(
                f"rank {stale} stopped responding: no heartbeat for {self.timeout:g} s (killed or hung)")
            _announce_first(self.store, stale, str(error))  # the others may not have noticed yet
            return stale, error
        except Exception as exc:  # the store is unreachable: the process hosting it is gone
            return None, RemoteStageFailure(f"lost the process group's store: {exc}")

    def _stale_peer(self, now: float) -> Optional[int]:
        """The peer silent longest, if longer than ``timeout`` (the first to die, of several)."""
        stale: list[tuple[float, int]] = []
        for peer in self.peers:
            counter = self.store.add(f"scpl/beat/{peer}", 0)
            before = self._seen.get(peer)
            if before is None or counter != before[0]:
                self._seen[peer] = (counter, now)
            elif now - before[1] > self.timeout:
                stale.append((before[1], peer))
        return min(stale)[1] if stale else None

    def run(self, stop: threading.Event, on_failure: Report) -> None:
        """Check until ``stop`` is set (a watchdog thread's body); report a failure once and end."""
        while not stop.wait(BEAT_S / 2):
            failure = self.check()
            if failure is not None:
                on_failure(*failure)
                return

    def meet(self, result: Callable[[], T], compute_here: bool) -> Optional[T]:
        """Compute ``result`` (where ``compute_here``), then wait until every peer got here too.

        Raises :class:`StageError` for a failure seen while waiting; a failure of ``result``
        itself is announced and re-raised.
        """
        value = None
        if compute_here:
            try:
                value = result()
            except BaseException as exc:
                announce(self.store, self.rank, exc)
                raise
        tag = next(_ROUNDS)
        self.store.set(f"scpl/done/{tag}/{self.rank}", "1")
        keys = [f"scpl/done/{tag}/{r}" for r in sorted({self.rank, *self.peers})]
        while True:
            try:
                if self.store.check(keys):
                    return value
            except Exception as exc:
                raise StageError(
                    None, RemoteStageFailure(f"lost the process group's store: {exc}"), "") from exc
            failure = self.check()
            if failure is not None:
                rank, error = failure
                raise StageError(None if rank is None else self.stage_of(rank), error, "")
            time.sleep(POLL_S)
