"""Quiet logging under faults: one line per interval and kind, with a count.

A fault hits every station at once: a Redis outage fails thousands of leases, an open-file
limit fails every connect. A line per failure buries the one line that says what happened
(the campaign saw 1,395 identical warnings in 15 s). :class:`RateLimitedLog` logs the first
failure of a kind at once, counts the rest, and says how many there were once per interval:
``lease failed 1,395 times in the last 10 s: Redis at 127.0.0.1:6379 unavailable``.
Pure: the clock is injected, nothing runs in the background; :meth:`flush` says what is
still counted (call it at the end of a run).

:class:`Progress` is the same idea for a long phase that is not failing, only slow: what it
waits for ("waiting for 42 of 150 to boot"), at most once per interval.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Progress", "RateLimitedLog", "flush_all"]

#: seconds between two lines of one kind
DEFAULT_INTERVAL = 10.0


@dataclass
class _Window:
    started: float  # when the first line of this window was logged (or the window began)
    level: int
    what: str
    detail: str
    unlogged: int = 0  # occurrences since ``started`` not in a line yet


class RateLimitedLog:
    """Log repeated failures of one kind as one line per ``interval``, with their count.

    ``kind`` keys the limit (e.g. ``"lease"``); ``what`` says what failed and ``detail``
    why, the latest one being quoted. Safe for threads and greenlets; logs outside its lock.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        _instances.add(self)

    def warning(self, kind: str, what: str, detail: str) -> bool:
        return self.log(logging.WARNING, kind, what, detail)

    def error(self, kind: str, what: str, detail: str) -> bool:
        return self.log(logging.ERROR, kind, what, detail)

    def log(self, level: int, kind: str, what: str, detail: str) -> bool:
        """Count one failure; True if a line was logged for it now."""
        now = self.clock()
        with self._lock:
            window = self._windows.get(kind)
            if window is None or (window.unlogged == 0 and now - window.started >= self.interval):
                # The first of its kind, or the first after a quiet interval: say it at once.
                self._windows[kind] = _Window(now, level, what, detail)
                line: tuple[object, ...] | None = ("%s: %s", what, detail)
            else:
                window.unlogged += 1
                window.level, window.what, window.detail = max(window.level, level), what, detail
                level = window.level
                line = self._summary(window, now) if now - window.started >= self.interval else None
        if line is None:
            return False
        self.logger.log(level, *line)
        return True

    def flush(self) -> int:
        """Log what was counted but not said yet (one line per kind); the number of lines."""
        now = self.clock()
        lines = []
        with self._lock:
            for kind, window in list(self._windows.items()):
                if window.unlogged:
                    lines.append((window.level, self._summary(window, now)))
                del self._windows[kind]
        for level, line in lines:
            self.logger.log(level, *line)
        return len(lines)

    def _summary(self, window: _Window, now: float) -> tuple[object, ...]:
        """The line for a window's count; starts the next window (caller holds the lock)."""
        count, seconds = window.unlogged, max(now - window.started, 0.0)
        window.started, window.unlogged = now, 0
        times = "once" if count == 1 else f"{count:,} times"
        return ("%s %s in the last %.0f s: %s", window.what, times, seconds, window.detail)


_instances: weakref.WeakSet[RateLimitedLog] = weakref.WeakSet()


def flush_all() -> int:
    """:meth:`RateLimitedLog.flush` every limiter of the process (at the end of a run)."""
    return sum(limiter.flush() for limiter in list(_instances))


class Progress:
    """What a long phase is doing, said at most once per ``interval`` seconds.

    A phase ticks about once a second; a line per tick floods the console, none leaves the
    person running the test wondering whether anything happens. :meth:`restart` when a
    phase begins: its first line comes one ``interval`` later (the phase's own start is
    said once by its caller), then one per ``interval`` while it lasts.
    """

    __slots__ = ("_last", "clock", "interval", "level", "logger")

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        level: int = logging.INFO,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self.level = level
        self._last = clock()

    def restart(self) -> None:
        """A new phase begins now."""
        self._last = self.clock()

    def say(self, message: str, *args: object) -> bool:
        """Log ``message % args`` if the last line is ``interval`` old; True if it did."""
        now = self.clock()
        if now - self._last < self.interval:
            return False
        self._last = now
        self.logger.log(self.level, message, *args)
        return True
