"""Both capacities against known ceilings: is the capacity search right, whatever the ramp?

    .venv/bin/python benchmarks/capacity_truth.py                       # 6 searches, ~15 min
    .venv/bin/python benchmarks/capacity_truth.py --spawn-rates 20 --modes single
    .venv/bin/python benchmarks/capacity_truth.py --max-connections 30 --max-boot-rate 10

csms_stub (SQLite) gets two known ceilings, ``--max-connections`` (default 100) and
``--max-boot-rate`` (default 50 BootNotifications a second), and the real ``locust`` with
``--capacity-search both`` searches them at each ``--spawn-rate`` of ``--spawn-rates``
(default 5, 20, 100; pinned, so the concurrency steps ramp at it), alone (``single``) and
as a master with one worker (``master``, coordinated through a redis-server of the
benchmark's own). For each search: the two answers, their error against the ceilings, and
how long each half of the search took. Exit status 1 when an answer is missing or more
than ``--tolerance`` (5 %) off.

Bounded: at most ``--max-connections`` x 1.6 chargers on 127.0.0.1, every search stops by
itself (``--run-time``), and every process started here is stopped on any exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from _common import ROOT
from _common.databases import Database
from _common.figures import machine_note, print_table
from _common.machine import die_with_parent, free_port, install_exit_handlers
from _common.servers import ServerProcess, stub_process
from faults import Redis

PY = sys.executable
#: a search's whole time budget (locust's --run-time), and what the benchmark waits on top
SEARCH_RUN_TIME = 420
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


@dataclass
class Row:
    mode: str
    spawn_rate: float
    chargers: int | None
    connect_rate: float | None
    rate_seconds: float | None
    chargers_seconds: float | None
    rate_steps: int
    chargers_steps: int
    why: str

    def errors(self, args: argparse.Namespace) -> tuple[float | None, float | None]:
        chargers = None if self.chargers is None else self.chargers / args.max_connections - 1
        rate = None if self.connect_rate is None else self.connect_rate / args.max_boot_rate - 1
        return chargers, rate

    def ok(self, args: argparse.Namespace) -> bool:
        return all(e is not None and abs(e) <= args.tolerance for e in self.errors(args))


def locust_argv(args: argparse.Namespace, host: str, spawn_rate: float) -> list[str]:
    """The search's options: the same for a single process and for a worker."""
    ceiling = args.max_connections
    step = max(1, round(ceiling * 0.2))
    return [
        *(PY, "-m", "locust", "-f", str(ROOT / "locustfile.py"), "--headless"),
        *("--host", host, "--spawn-rate", f"{spawn_rate:g}"),
        *("--ocpp-profile", "idle", "--heartbeat-interval", "2", "--reconnect-cap", "2"),
        *("--fleet-size", str(round(ceiling * 1.6))),
        *("--capacity-search", "both", "--capacity-hold", "3", "--capacity-linger", "0"),
        *("--capacity-start", str(round(ceiling * 0.4)), "--capacity-step", f"+{step}"),
        *("--capacity-max", str(round(ceiling * 1.6)), "--capacity-resolution", "5%"),
        # rate steps under the connection ceiling: a step past it is repeated smaller,
        # which the unit tests cover; here it would only cost time
        *("--connect-rate-step-chargers", str(round(ceiling * 0.8))),
        # a pause of the shared machine must not end a search as "limited by the load
        # generator" (the guard has tests of its own)
        *("--capacity-max-lag-ms", "1000", "--prometheus-port", "0"),
        *("--run-time", f"{SEARCH_RUN_TIME}s", "--loglevel", "INFO"),
    ]


@contextlib.contextmanager
def locust(argv: list[str], log: Path, core: int) -> Iterator[subprocess.Popen[bytes]]:
    """A locust process pinned to ``core``, stopped (SIGTERM, then SIGKILL) on the way out."""

    def preexec() -> None:
        os.sched_setaffinity(0, {core})
        die_with_parent()

    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=preexec,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def stamp(line: str) -> float | None:
    match = LOG_TIME.match(line)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def first(lines: list[str], needle: str) -> float | None:
    return next((t for line in lines if needle in line and (t := stamp(line))), None)


def read_search(mode: str, spawn_rate: float, log: Path, reports: Path) -> Row:
    """The answers from the JSON report, the times from the master's log lines."""
    lines = log.read_text(errors="replace").splitlines()
    report: dict[str, Any] = {}
    for path in sorted(reports.glob("ocpp-report-*.json")):
        report = json.loads(path.read_text())
    capacity = report.get("capacity") or {}
    started = first(lines, "capacity search (rate-ramp)")
    rates_done = first(lines, "capacity search: connect rate")
    done = None
    for line in lines:  # the last: the answer logged when the search ended
        if "loadgen.locust.shape: capacity: " in line and (t := stamp(line)):
            done = t
    return Row(
        mode=mode,
        spawn_rate=spawn_rate,
        chargers=capacity.get("max_chargers"),
        connect_rate=capacity.get("max_connect_rate"),
        rate_seconds=None if started is None or rates_done is None else rates_done - started,
        chargers_seconds=None if rates_done is None or done is None else done - rates_done,
        rate_steps=len(capacity.get("connect_rate_steps") or []),
        chargers_steps=len(capacity.get("steps") or []),
        why=f"{capacity.get('connect_rate_stopped_because')} | {capacity.get('stopped_because')}",
    )


def search(
    args: argparse.Namespace, stub: ServerProcess, redis: Redis | None, spawn_rate: float
) -> Row:
    mode = "single" if redis is None else "master"
    work = Path(tempfile.mkdtemp(prefix="capacity-truth-"))
    reports = work / "reports"
    argv = [*locust_argv(args, stub.url, spawn_rate), "--report-dir", str(reports)]
    started = time.monotonic()
    print(f"-- {mode}, --spawn-rate {spawn_rate:g} ({work}) ...", flush=True)
    with contextlib.ExitStack() as stack:
        if redis is not None:
            redis.client().flushall()
            port = free_port()
            coordination = ("--redis-url", redis.url)
            worker = [*locust_argv(args, stub.url, spawn_rate), "--worker"]
            worker += ["--master-port", str(port), *coordination]
            stack.enter_context(locust(worker, work / "worker.log", args.locust_core))
            argv += ["--master", "--expect-workers", "1", "--master-bind-port", str(port)]
            argv += coordination
        process = stack.enter_context(locust(argv, work / "locust.log", args.locust_core))
        try:
            code = process.wait(SEARCH_RUN_TIME + 60)
        except subprocess.TimeoutExpired:
            code = None
    row = read_search(mode, spawn_rate, work / "locust.log", reports)
    print(
        f"   exit {code} in {time.monotonic() - started:.0f} s: {row.chargers} chargers, "
        f"{row.connect_rate} chargers/s",
        flush=True,
    )
    return row


def run(args: argparse.Namespace) -> int:
    runs = len(args.spawn_rates) * len(args.modes)
    install_exit_handlers(runs * (SEARCH_RUN_TIME + 90) + 60)
    print(machine_note())
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        redis: Redis | None = None
        if "master" in args.modes:
            redis = Redis()
            stack.callback(redis.stop)
            redis.start()
        for spawn_rate in args.spawn_rates:
            for mode in args.modes:
                # a fresh stub each time: its boot turns and connections start from nothing
                database = stack.enter_context(Database("sqlite"))
                ceilings = ["--max-connections", str(args.max_connections)]
                ceilings += ["--max-boot-rate", f"{args.max_boot_rate:g}"]
                with stub_process(args.server_core, database.url, extra=ceilings) as stub:
                    rows.append(search(args, stub, redis if mode == "master" else None, spawn_rate))
    table = []
    for row in rows:
        chargers_error, rate_error = row.errors(args)
        table.append(
            [
                row.mode,
                row.spawn_rate,
                "-" if row.chargers is None else row.chargers,
                _pct(chargers_error),
                "-" if row.connect_rate is None else f"{row.connect_rate:.3g}",
                _pct(rate_error),
                _s(row.rate_seconds),
                _s(row.chargers_seconds),
                f"{row.rate_steps} + {row.chargers_steps}",
                "ok" if row.ok(args) else "MISS",
            ]
        )
    print_table(
        [
            "process",
            "--spawn-rate",
            "chargers",
            "error",
            "connect rate /s",
            "error",
            "rate search",
            "chargers search",
            "steps",
            "",
        ],
        table,
        title=(
            f"csms_stub --max-connections {args.max_connections} --max-boot-rate "
            f"{args.max_boot_rate:g}: the answers and their error (within ±"
            f"{args.tolerance * 100:g} %)"
        ),
    )
    misses = [row for row in rows if not row.ok(args)]
    for row in misses:
        print(f"MISS {row.mode} --spawn-rate {row.spawn_rate:g}: {row.why}")
    if args.json:
        Path(args.json).write_text(json.dumps([vars(r) for r in rows], indent=2))
    return 1 if misses else 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f} %"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-connections", type=int, default=100)
    parser.add_argument("--max-boot-rate", type=float, default=50.0)
    parser.add_argument(
        "--spawn-rates", type=lambda t: [float(x) for x in t.split(",")], default=[5, 20, 100]
    )
    parser.add_argument(
        "--modes", type=lambda t: t.split(","), default=["single", "master"], help="single,master"
    )
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--locust-core", type=int, default=1)
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args(argv)
    if not set(args.modes) <= {"single", "master"}:
        parser.error("--modes: single, master or both")
    if args.max_connections < 10 or args.max_boot_rate <= 0:
        parser.error("--max-connections must be >= 10 and --max-boot-rate positive")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
