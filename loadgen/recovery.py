"""Recovery as a figure: when most chargers lose the CSMS at once, how long until they are
booted again (pure: counts per second in, events out).

A CSMS restart or a network outage drops every charger at once; what matters then is how
fast the CSMS takes them all back, and that figure decides whether it survives its own
restart. Each process counts, per wall-clock second, what its stations went through
(:class:`RecoveryCounter`); workers ship the counts to the master in their reports (the
seconds are wall-clock, so they add up across processes), and :func:`find_recoveries`
runs on the merged series at the end of the run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

#: what is counted per second, in this order in a series' rows
KINDS = ("lost", "stopped", "first_boots", "reboots", "connect_failures", "boot_failures")
LOST, STOPPED, FIRST_BOOTS, REBOOTS, CONNECT_FAILURES, BOOT_FAILURES = range(len(KINDS))

#: a mass disconnect: at least this share of the booted chargers lost within WINDOW_S ...
MASS_SHARE = 0.5
WINDOW_S = 5
#: ... and at least this many (a handful of chargers dropping is not an event)
MIN_LOST = 5
#: recovered when this share of the chargers lost are booted again
RECOVERED_SHARE = 0.99

Series = dict[int, list[int]]


class RecoveryCounter:
    """Counts per wall-clock second; :meth:`drain` hands out what was counted since."""

    def __init__(self) -> None:
        self.series: Series = {}

    def count(self, kind: int, now: float, n: int = 1) -> None:
        row = self.series.get(int(now))
        if row is None:
            row = self.series[int(now)] = [0] * len(KINDS)
        row[kind] += n

    def drain(self) -> dict[str, list[int]]:
        """The counts so far (JSON-able: a worker's report), and forget them."""
        out = {str(second): row for second, row in self.series.items()}
        self.series = {}
        return out

    def merge(self, drained: Any) -> None:
        """Add a worker's :meth:`drain`; anything malformed is ignored (a report is not
        trusted to be well formed, and a recovery figure is not worth a crash)."""
        if not isinstance(drained, dict):
            return
        for second, row in drained.items():
            try:
                key = int(second)
                values = [int(v) for v in row][: len(KINDS)]
            except (TypeError, ValueError):
                continue
            for kind, value in enumerate(values):
                if value > 0:
                    self.count(kind, key, value)


@dataclass(frozen=True)
class Recovery:
    """One mass disconnect and what followed. Seconds are whole (the counts' grain)."""

    at_s: int  # since the run's start
    lost: int
    booted_before: int
    #: from the first lost connection until RECOVERED_SHARE of them were booted again;
    #: None: not by the end of the run
    recovered_s: int | None
    rebooted: int
    #: the most re-boots the CSMS accepted in one second on the way
    peak_reboots_per_s: int
    connect_failures: int
    boot_failures: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        head = f"recovery: {self.lost} of {self.booted_before} chargers lost at {self.at_s} s; "
        if self.recovered_s is not None:
            head += f"{RECOVERED_SHARE:.0%} booted again after {self.recovered_s} s"
        else:
            head += f"not recovered by the end of the run ({self.rebooted} booted again)"
        return (
            f"{head} (peak {self.peak_reboots_per_s} boots/s; "
            f"{self.connect_failures} connect failures, {self.boot_failures} boot failures)"
        )


def find_recoveries(series: Series, start: float) -> list[Recovery]:
    """The mass disconnects in ``series`` (second -> counts) and their recoveries.

    The booted level is integrated from the counts (boots minus losses and stops), so it
    adds up across workers as the counts do. An event starts at a second that lost a
    charger when, within :data:`WINDOW_S` seconds from it, at least :data:`MASS_SHARE` of
    the chargers booted just before (and :data:`MIN_LOST`) were lost.
    """
    if not series:
        return []
    first, last = min(series), max(series)
    empty = [0] * len(KINDS)
    rows = [series.get(second, empty) for second in range(first, last + 1)]
    level = [0] * (len(rows) + 1)  # level[i]: booted at the start of rows[i]
    for i, row in enumerate(rows):
        level[i + 1] = level[i] + row[FIRST_BOOTS] + row[REBOOTS] - row[LOST] - row[STOPPED]
    found: list[Recovery] = []
    i = 0
    while i < len(rows):
        window = rows[i : i + WINDOW_S]
        lost = sum(row[LOST] for row in window)
        if not rows[i][LOST] or lost < max(MIN_LOST, MASS_SHARE * level[i]):
            i += 1
            continue
        event, end = _follow(rows, i, lost, level[i], first - start)
        found.append(event)
        if end is None:
            break  # the rest of the run was this recovery
        i = max(end, i + len(window)) + 1
    return found


def _follow(
    rows: list[list[int]], i: int, lost: int, booted_before: int, offset: float
) -> tuple[Recovery, int | None]:
    """The recovery from the event at ``rows[i]``; and the row it ended in (None: never)."""
    needed = math.ceil(RECOVERED_SHARE * lost)
    rebooted = peak = connect_failures = boot_failures = 0
    end = None
    for j in range(i, len(rows)):
        row = rows[j]
        rebooted += row[REBOOTS]
        peak = max(peak, row[REBOOTS])
        connect_failures += row[CONNECT_FAILURES]
        boot_failures += row[BOOT_FAILURES]
        if rebooted >= needed:
            end = j
            break
    event = Recovery(
        at_s=max(0, round(offset + i)),
        lost=lost,
        booted_before=booted_before,
        recovered_s=None if end is None else end - i + 1,
        rebooted=rebooted,
        peak_reboots_per_s=peak,
        connect_failures=connect_failures,
        boot_failures=boot_failures,
    )
    return event, end
