"""The machine and this process: open-file limits, dying with the parent, cores, one
benchmark at a time (:func:`take_machine`), exit handlers and the time budget, waiting for
a quiet machine, free ports."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import resource
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from _common import HOST, LOCAL_HOSTS


def raise_nofile(wanted: int = 20_000) -> int:
    """Raise this process's open-file limit towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def die_with_parent() -> None:
    """Have the kernel SIGTERM this process when the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def split_cores(server_core: int, client_cores: Sequence[int] | None) -> tuple[int, list[int]]:
    """The server's core and the clients' cores (default: every other core we may use)."""
    available = sorted(os.sched_getaffinity(0))
    if server_core not in available:
        raise SystemExit(f"core {server_core} is not available (have {available})")
    clients = list(client_cores) if client_cores else [c for c in available if c != server_core]
    if not clients:
        raise SystemExit("need at least two cores: one for the server, one for the clients")
    if server_core in clients:
        raise SystemExit("the clients must not share the server's core")
    return server_core, clients


LOCK_PATH = Path(tempfile.gettempdir()) / "ocpp-loadgen-benchmarks.lock"
_machine_lock: Any = None  # the open lock file, held until this process exits


def take_machine(wait_seconds: float = 900.0) -> None:
    """Wait (bounded) until no other benchmark runs on this machine, then hold it.

    Two benchmarks at once pin their servers and clients to the same cores and ruin each
    other's figures. An ``flock`` on :data:`LOCK_PATH` serialises them; the kernel releases
    it when this process exits, however it exits.
    """
    global _machine_lock
    if _machine_lock is not None or os.environ.get("OCPP_BENCH_NESTED"):
        return  # nested: started by a benchmark (faults.py) that holds the lock for us
    lock = open(LOCK_PATH, "a+")  # noqa: SIM115 - held for the life of the process
    deadline = time.monotonic() + wait_seconds
    waiting = False
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"another benchmark still holds {LOCK_PATH} after {wait_seconds:.0f} s"
                ) from None
            if not waiting:
                lock.seek(0)
                holder = lock.read().strip() or "unknown"
                print(f"waiting for another benchmark to finish ({holder})", flush=True)
                waiting = True
            time.sleep(0.5)
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}: {' '.join(sys.argv)[:200]}\n")
    lock.flush()
    _machine_lock = lock


def install_exit_handlers(budget_seconds: float, *, exclusive: bool = True) -> None:
    """Ctrl-C, SIGTERM and SIGHUP exit through ``finally`` blocks (servers stopped, schemas
    dropped); the whole run is bounded in time. ``exclusive``: first wait for any other
    benchmark on this machine to finish (:func:`take_machine`); the budget starts after."""
    if exclusive:
        take_machine()

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(f"stopped by signal {signum}")

    def overrun(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the benchmark exceeded its time budget of {budget_seconds:.0f} s")

    # Also when started with SIGINT ignored (e.g. `cmd &` from a script): Ctrl-C must work.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    signal.signal(signal.SIGALRM, overrun)
    signal.alarm(max(1, int(budget_seconds)))


def wait_for_quiet(max_seconds: float, threshold: float = 0.1, sample: float = 2.0) -> float:
    """Wait until the machine's CPU busy (all processes, in cores) stays under ``threshold``
    for ``sample`` seconds, at most ``max_seconds``; return the last busy figure.

    For machines other work shares: a CPU-per-message figure measured while something else
    runs is disturbed. Returns at once when ``max_seconds`` is 0.
    """
    deadline = time.monotonic() + max_seconds
    busy = float("nan")
    while time.monotonic() < deadline:
        before = psutil.cpu_times()
        time.sleep(sample)
        after = psutil.cpu_times()
        busy = (
            sum(
                (getattr(after, f) - getattr(before, f))
                for f in after._fields
                if f not in ("idle", "iowait", "guest", "guest_nice")
            )
            / sample
        )
        if busy < threshold:
            break
    return busy


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def check_local_url(url: str) -> str:
    host = urlsplit(url).hostname or ""
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"refusing to use {url!r}: benchmarks only target 127.0.0.1")
    return url
