"""How a load-generator process starts the users Locust hands it in a batch (pure).

Locust starts a whole second's worth of users at once (``--spawn-rate`` of them, every
second). Run back to back, a batch of 1,000 chargers holds the gevent hub for hundreds of
milliseconds: every timer of the chargers already connected (heartbeats, meter values, the
CALL timeouts) fires that much late, and the CSMS gets a thundering herd instead of the
rate asked for. So a :class:`StartPacer` spreads each batch: its users start
``min(MAX_START_SPACING_S, 1 s / batch)`` apart, in the order Locust made them. A batch of
1,000 (or more) is spread over the second, a small one starts within milliseconds (a
capacity rate step of 25 chargers at 1,000/s keeps its pace).

While a process ramps up, its heap grows by the stations it starts, and CPython's full
collections (each time the tracked objects grew by a quarter) scan all of them: 7 of them,
65-343 ms each, while 6,000 chargers started at 1,000/s, each a stall of every timer.
:class:`CollectorFreeze` moves what exists out of the collector's sight (``gc.freeze()``, a
few pointer moves) as users start, at most every ``interval`` (0.1 s), so collections only
see what is newer. Frozen objects are still freed by reference counting; only reference
cycles among them wait, until :meth:`CollectorFreeze.release` (``gc.unfreeze()``, when users
stop) hands them back: at most what existed at the last freeze, so nothing grows without
bound.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from collections.abc import Callable, Iterable

__all__ = [
    "MAX_START_SPACING_S",
    "CollectorFreeze",
    "StartPacer",
    "start_offset",
    "starts_since",
]

#: the longest gap between two starts of one batch: 1,000 starts/s, a process's target
MAX_START_SPACING_S = 0.001
#: batch start times a process keeps (and a master keeps of all its workers' together)
BATCH_STARTS_KEPT = 256


def start_offset(index: int, batch: int) -> float:
    """Seconds after its batch came that the ``index``-th of ``batch`` users starts."""
    if batch <= 1:
        return 0.0
    return index * min(MAX_START_SPACING_S, 1.0 / batch)


class _Batch:
    __slots__ = ("came", "size", "starting")

    def __init__(self, came: float) -> None:
        self.came = came
        self.size = 0
        #: one of its users is starting: Locust has made them all, later ones are a new batch
        self.starting = False


class StartPacer:
    """Spreads the users of each batch Locust makes at once.

    ``ticket = arrive()`` when a user is made (Locust makes a batch in one go, without
    yielding), then ``wait = delay(ticket)`` when it starts (after the whole batch was
    made): the seconds to wait before connecting.
    """

    def __init__(
        self, clock: Callable[[], float], wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock
        self._wall_clock = wall_clock
        self._open: _Batch | None = None
        #: when (wall-clock time) each recent batch came: a capacity rate step starts when
        #: its first batch does, which on a master's worker is a little after the step began
        self.batch_starts: deque[float] = deque(maxlen=BATCH_STARTS_KEPT)

    def arrive(self) -> tuple[_Batch, int]:
        batch = self._open
        if batch is None or batch.starting:
            batch = self._open = _Batch(self._clock())
            self.batch_starts.append(self._wall_clock())
        batch.size += 1
        return batch, batch.size - 1

    def delay(self, ticket: tuple[_Batch, int]) -> float:
        batch, index = ticket
        batch.starting = True
        due = batch.came + start_offset(index, batch.size)
        return max(0.0, due - self._clock())


def starts_since(starts: Iterable[float], since: float) -> list[float]:
    """The batch starts at or after ``since`` (wall-clock), in order; empty when none came
    yet."""
    return sorted(at for at in starts if at >= since)


class CollectorFreeze:
    """``gc.freeze()`` while users start, ``gc.unfreeze()`` once some stop."""

    def __init__(
        self,
        clock: Callable[[], float],
        interval: float = 0.1,
        *,
        freeze: Callable[[], None] = gc.freeze,
        unfreeze: Callable[[], None] = gc.unfreeze,
    ) -> None:
        self._clock = clock
        self.interval = interval
        self._freeze = freeze
        self._unfreeze = unfreeze
        self._last = -float("inf")
        self.frozen = False

    def hold(self) -> None:
        """A user starts: what exists is mostly the stations so far, long-lived: freeze it
        (unless that was done less than ``interval`` ago)."""
        now = self._clock()
        if now - self._last >= self.interval:
            self._last = now
            self._freeze()
            self.frozen = True

    def release(self) -> None:
        """Users stop: their stations' reference cycles must be collectable again."""
        if self.frozen:
            self.frozen = False
            self._unfreeze()
