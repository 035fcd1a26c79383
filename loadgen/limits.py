"""The open-file limit: raise it at start, and know how many chargers fit under it.

Every charger is one socket, so a process with more users than open files dies of EMFILE,
and not where one would look: the campaign's process connected 19,993 of 20,000 chargers,
then Locust's own CPU monitor could not open ``/proc`` and Locust exited 1. The soft limit
(often 1,024) may be raised to the hard one by anyone, so every process does that at start;
what still does not fit is refused at start with one line saying what to do.

A process needs one file per charger plus a margin for everything else (Redis connections,
Prometheus, Locust's sockets, ``/proc`` reads, log files, the DNS resolver):
:data:`MARGIN_RATIO` of the chargers plus :data:`MARGIN_FILES`.
"""

from __future__ import annotations

import logging
import math
import resource

__all__ = [
    "MARGIN_FILES",
    "MARGIN_RATIO",
    "files_needed",
    "open_file_limit",
    "raise_open_file_limit",
    "refusal",
    "users_that_fit",
]

log = logging.getLogger(__name__)

MARGIN_RATIO = 0.05
MARGIN_FILES = 100


def files_needed(users: int) -> int:
    """Open files a process running ``users`` chargers needs, margin included."""
    return users + math.ceil(users * MARGIN_RATIO) + MARGIN_FILES


def users_that_fit(limit: int) -> int:
    """The most chargers one process can run under an open-file ``limit``."""
    users = max(0, int((limit - MARGIN_FILES) / (1 + MARGIN_RATIO)))
    while users > 0 and files_needed(users) > limit:  # float rounding at the edge
        users -= 1
    while files_needed(users + 1) <= limit:
        users += 1
    return users


def refusal(users: int, limit: int, processes: int = 1, who: str = "this process") -> str | None:
    """None if ``users`` chargers spread over ``processes`` fit under ``limit`` open files
    per process; else the one line that says how many fit and what to do."""
    share = math.ceil(users / max(1, processes))
    if files_needed(share) <= limit:
        return None
    fit = users_that_fit(limit)
    if processes > 1:
        what, who = f"{users:,} chargers over {processes} processes ({share:,} each)", "each"
    else:
        what = f"{users:,} chargers"
    more = (
        f"spread them over {math.ceil(users / fit)} or more processes (--processes, --worker)"
        if fit
        else "free some files first"
    )
    return (
        f"{what} need about {files_needed(share):,} open files per process but {who} may "
        f"open {limit:,} (ulimit -n): {fit:,} fit in one; {more}, or raise the hard limit "
        "(ulimit -Hn, LimitNOFILE=, nofile in limits.conf)"
    )


def open_file_limit() -> int:
    """The soft limit of this process (what EMFILE is measured against)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _finite(soft)


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one; return (before, after).

    Never raises: a platform that refuses leaves the limit as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return _finite(soft), _finite(soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
        return soft, soft
    return soft, hard


def _finite(limit: int) -> int:
    # Linux never reports RLIM_INFINITY for RLIMIT_NOFILE; other systems might.
    return 1 << 30 if limit == resource.RLIM_INFINITY else limit
