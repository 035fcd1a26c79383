"""The fault campaign: what does each fault lose, duplicate, and how fast is it over?

    .venv/bin/python benchmarks/faults.py                        # every fault, 1,000 chargers
    .venv/bin/python benchmarks/faults.py --quick                # 100 chargers, shorter
    .venv/bin/python benchmarks/faults.py --fault csms-sigkill --chargers 2000

Each fault runs the load the way users run it: Locust headless with the project's
``locustfile.py`` (sessions profile, ``--time-scale`` high so transactions are short), a
Redis of the campaign's own (``redis-server`` on a free port, never the machine's), csms_stub
on PostgreSQL (a fresh schema per fault) behind a small TCP relay that can cut every
connection at once. After the run the project's own reconciliation
(``python -m loadgen.reconcile --json``) compares the run's ledger with what the stub stored:
"lost" and "duplicated" are its judgement, the one users get. Everything listens on
127.0.0.1 only, every wait is bounded and every process it starts is stopped.

Faults (``--fault NAME``, repeatable; default all): ``csms-sigkill`` (the stub SIGKILLed
mid-transaction, restarted on the same database; also with ``--durable`` when the stub has
that option), ``csms-sigterm``, ``reconnect-storm`` (every charger's connection cut at once),
``redis-restart``, ``worker-sigkill`` (master + 2 workers, one SIGKILLed, ``--lease-ttl``
short), ``fuzz-stub`` (``benchmarks/fuzz_stub.py`` if it exists), ``fuzz-csms``
(``benchmarks/fuzz_csms.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from _common import DEFAULT_POSTGRES_URL, HOST, ROOT
from _common.databases import Database
from _common.figures import machine_note, phase, print_table
from _common.machine import check_local_url, die_with_parent, free_port, install_exit_handlers
from _common.servers import ServerProcess, stub_process

PY = sys.executable
FAULTS = (
    "csms-sigkill",
    "csms-sigterm",
    "reconnect-storm",
    "redis-restart",
    "worker-sigkill",
    "fuzz-stub",
    "fuzz-csms",
)


@dataclass
class Row:
    fault: str
    scale: str
    acknowledged: int | str = "-"
    lost: int | str = "-"
    duplicated: int | str = "-"
    recovered_s: float | str = "-"
    notes: list[str] = field(default_factory=list)
    ok: bool = True
    #: a loss this fault is known to cause (said in the table, not a failure of the run)
    expected_loss: str | None = None

    @property
    def verdict(self) -> str:
        if self.ok:
            return "ok"
        return f"loss expected: {self.expected_loss}" if self.expected_loss else "FAIL"

    @property
    def passed(self) -> bool:
        return self.ok or self.expected_loss is not None


# -- the pieces -----------------------------------------------------------------------------


class Relay:
    """A TCP relay in a thread: Locust -> relay -> stub, so every connection can be cut at
    once (``cut_all``) without touching either side: a reconnect storm."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.writers: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, daemon=True)
        self._ready = threading.Event()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, HOST, self.port, backlog=4096)
        )
        self._ready.set()
        self.loop.run_forever()
        server.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.target_port)
        except OSError:
            writer.close()  # the stub is down: the charger sees the connection refused
            return
        self.writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.writers.discard(writer)
            self.writers.discard(up_writer)

    def cut_all(self) -> int:
        def cut() -> None:
            for writer in list(self.writers):
                writer.transport.abort()

        count = len(self.writers) // 2
        self.loop.call_soon_threadsafe(cut)
        return count

    def __enter__(self) -> Relay:
        self.thread.start()
        assert self._ready.wait(10), "relay did not start"
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.cut_all()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Redis:
    """The campaign's own redis-server on a free port (never the machine's 6379), with an
    append-only file in a temporary folder so that a restart loses nothing."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="faults-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("faults.py needs redis-server on PATH")
        self.process = subprocess.Popen(
            [
                binary,
                "--bind",
                HOST,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",  # a restart keeps the ledger and leases, as in production
                "yes",
                "--dir",
                self.dir.name,
                "--maxclients",
                "10000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.client().ping():
                return
        raise RuntimeError("redis-server did not start")

    def client(self) -> Any:
        import redis

        try:
            client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
            client.ping()
            return client
        except redis.exceptions.ConnectionError:
            time.sleep(0.1)
            return _NoRedis()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)

    def run_id(self) -> str | None:
        keys = self.client().keys("ocpp:run:*:meta")
        return keys[0].decode().split(":")[2] if keys else None


class _NoRedis:
    def ping(self) -> bool:
        return False


def stub_has(option: str) -> bool:
    out = subprocess.run(
        [PY, "-m", "csms_stub", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    ).stdout
    return option in out


class Campaign:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.redis = Redis()

    # load

    def locust(self, host: str, users: int, run_time: float, extra: list[str]) -> list[str]:
        a = self.args
        return [
            PY,
            "-m",
            "locust",
            "-f",
            str(ROOT / "locustfile.py"),
            "--headless",
            "--host",
            host,
            "--users",
            str(users),
            "--spawn-rate",
            str(a.spawn_rate),
            "--run-time",
            f"{int(run_time)}s",
            "--stop-timeout",
            "20",
            "--ocpp-profile",
            "sessions",
            "--fleet-size",
            str(users),
            "--time-scale",
            f"{a.time_scale:g}",
            "--session-interarrival",
            "300",
            "--session-stay",
            "600",
            "--reconnect-cap",
            "4",
            "--redis-url",
            self.redis.url,
            "--prometheus-port",
            "0",
            "--only-summary",
            "--loglevel",
            "WARNING",
            *extra,
        ]

    def start(self, argv: list[str], log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            start_new_session=True,
        )

    def connected(self, stub: ServerProcess) -> int:
        try:
            return int(stub.get_json("/stats", timeout=2).get("chargers_connected", 0))
        except (OSError, ValueError):
            return 0

    def wait_connected(
        self, stub: ServerProcess, want: int, timeout: float, below: bool = False
    ) -> float | None:
        """Seconds until ``want`` chargers are connected at the stub (``below``: until
        fewer are), None if that does not happen within ``timeout``."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if (self.connected(stub) < want) if below else (self.connected(stub) >= want):
                return time.monotonic() - started
            time.sleep(0.25)
        return None

    def reconcile(self, api_url: str) -> dict[str, Any] | None:
        run_id = self.redis.run_id()
        if run_id is None:
            return None
        done = subprocess.run(
            [
                PY,
                "-m",
                "loadgen.reconcile",
                "--redis-url",
                self.redis.url,
                "--run",
                run_id,
                "--csms-api",
                api_url,
                "--json",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        try:
            return json.loads(done.stdout)
        except ValueError:
            return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}

    @contextlib.contextmanager
    def stack(self, durable: bool = False) -> Iterator[tuple[ServerProcess, Relay]]:
        """A fresh Redis database, a PostgreSQL schema, the stub and its relay."""
        self.redis.client().flushall()
        with Database("postgresql", self.args.postgres_url) as database:
            extra = ["--durable"] if durable else []
            stub = stub_process(0, database.url, database.schema, extra=extra)
            stub.start_timeout = 60
            with stub, Relay(stub.port) as relay:
                yield stub, relay

    def run_with_fault(
        self,
        name: str,
        inject: Callable[[ServerProcess, Relay, subprocess.Popen[bytes]], str],
        *,
        durable: bool = False,
        workers: int = 0,
        measure_recovery: bool = True,
    ) -> Row:
        a = self.args
        n = a.chargers
        row = Row(name + (" --durable" if durable else ""), f"{n:,} chargers")
        want = max(1, int(n * 0.99))
        with self.stack(durable) as (stub, relay), tempfile.TemporaryFile() as log:
            host = f"ws://{HOST}:{relay.port}"
            extra = ["--csms-api", stub.api_url or ""]
            run_time = a.hold * 2 + n / a.spawn_rate + 20
            if workers:
                master_port = free_port()
                master = self.locust(host, n, run_time, [*extra, "--lease-ttl", "5"])
                # as the README advises: the dead worker's users go to the others at once
                master += ["--master", "--expect-workers", str(workers), "--enable-rebalancing"]
                master += [
                    "--master-bind-host",
                    HOST,
                    "--master-bind-port",
                    str(master_port),
                ]
                procs = [self.start(master, log)]
                for _ in range(workers):
                    worker = self.locust(host, n, run_time, ["--lease-ttl", "5"])
                    worker += ["--worker", "--master-host", HOST]
                    worker += ["--master-port", str(master_port)]
                    procs.append(self.start(worker, log))
            else:
                procs = [self.start(self.locust(host, n, run_time, extra), log)]
            try:
                ramp = self.wait_connected(stub, want, n / a.spawn_rate + 60)
                if ramp is None:
                    row.notes.append(f"only {self.connected(stub):,} connected before the fault")
                time.sleep(a.hold / 2)  # transactions in flight
                fault_at = time.monotonic()
                note = inject(stub, relay, procs[-1])
                if note:
                    row.notes.append(note)
                if measure_recovery:
                    # the stub notices the drop a moment later: wait for it, then count
                    self.wait_connected(stub, want, 5, below=True)
                    back = self.wait_connected(stub, want, a.hold * 2 + 30)
                    recovered = None if back is None else time.monotonic() - fault_at
                    row.recovered_s = recovered if recovered is not None else "never"
                    if recovered is None:
                        row.ok = False
                        row.notes.append(
                            f"{self.connected(stub):,} connected {a.hold * 2 + 30:.0f} s on"
                        )
                deadline = time.monotonic() + run_time + 90
                while procs[0].poll() is None and time.monotonic() < deadline:
                    time.sleep(0.5)
            finally:
                for proc in procs:
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGTERM)
                for proc in procs:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(20)
                    if proc.poll() is None:
                        os.killpg(proc.pid, signal.SIGKILL)
            report = self.reconcile(stub.api_url or "")
            self.judge(row, report, log, dead_worker=workers > 0)
        return row

    def judge(
        self, row: Row, report: dict[str, Any] | None, log: Any, dead_worker: bool = False
    ) -> None:
        if report is None:
            row.notes.append("no run in Redis")
            row.ok = False
        elif "error" in report:
            row.notes.append(f"reconcile: {' '.join(report['error'])}")
            row.ok = False
        else:
            row.acknowledged = report["transactions"]
            # A dead worker's stations never end their transactions: reconciliation must list
            # them (open at the CSMS), and they are what this fault does, not a loss.
            kinds = ["missing", "energy_mismatches", "seq_gaps"]
            never_ended = len(report.get("never_ended", ()))
            if dead_worker:
                row.notes.append(f"{never_ended} never ended (the dead worker's, listed)")
            else:
                kinds.append("never_ended")
            # every finding that means an acknowledged transaction or event is not at the
            # CSMS as the fleet left it, counted once per transaction
            lost = {tuple(item["key"]) for kind in kinds for item in report.get(kind, ())}
            row.lost = len(lost)
            for kind, label in (
                ("seq_gaps", "acknowledged events missing"),
                ("never_ended", "never ended"),
            ):
                if report.get(kind) and kind in kinds:
                    row.notes.append(f"{len(report[kind])} {label}")
            row.duplicated = len(report["duplicated"])
            if report.get("message_count_differs"):
                row.notes.append(f"{report['message_count_differs']} event counts differ")
            row.ok = row.ok and not lost and not report["duplicated"]
        log.seek(0)
        text = log.read().decode(errors="replace")
        tracebacks = text.count("Traceback (most recent call last)")
        if tracebacks:
            row.notes.append(f"{tracebacks} tracebacks in Locust's output")

    # faults

    def csms_kill(self, sig: int, durable: bool = False) -> Row:
        def inject(stub: ServerProcess, relay: Relay, _: Any) -> str:
            assert stub.process is not None
            stub.process.send_signal(sig)
            started = time.monotonic()
            try:
                stub.process.wait(60)
            except subprocess.TimeoutExpired:
                stub.process.kill()
                stub.process.wait(10)
                return "SIGTERM did not end the stub in 60 s: SIGKILLed"
            stopped = time.monotonic() - started
            stub.start()  # same argv: same ports, same database
            return f"stub stopped in {stopped:.1f} s, restarted"

        name = "csms-sigkill" if sig == signal.SIGKILL else "csms-sigterm"
        row = self.run_with_fault(name, inject, durable=durable)
        recovered = row.recovered_s != "never" and "reconcile:" not in " ".join(row.notes)
        if sig == signal.SIGKILL and not durable and recovered:
            # What the stub acknowledged inside its write window (flush_interval) dies with it
            # unless --durable: the campaign shows how much, the --durable row that it is none.
            row.expected_loss = "no --durable"
        return row

    def reconnect_storm(self) -> Row:
        def inject(stub: ServerProcess, relay: Relay, _: Any) -> str:
            return f"{relay.cut_all():,} connections cut at once"

        return self.run_with_fault("reconnect-storm", inject)

    def redis_restart(self) -> Row:
        def inject(stub: ServerProcess, relay: Relay, _: Any) -> str:
            self.redis.stop()
            time.sleep(3)
            self.redis.start()  # from its append-only file: ledger and leases kept
            return "redis-server down 3 s, restarted from its append-only file"

        return self.run_with_fault("redis-restart", inject, measure_recovery=False)

    def worker_kill(self) -> Row:
        def inject(stub: ServerProcess, relay: Relay, worker: Any) -> str:
            os.killpg(worker.pid, signal.SIGKILL)
            return "one of 2 workers SIGKILLed"

        return self.run_with_fault("worker-sigkill", inject, workers=2)

    def script(self, name: str, argv: list[str], timeout: float) -> Row:
        row = Row(name, "")
        path = ROOT / "benchmarks" / argv[0]
        if not path.exists():
            row.notes.append(f"skipped: {argv[0]} does not exist yet")
            return row
        started = time.monotonic()
        done = subprocess.run(
            [PY, str(path), *argv[1:]],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "OCPP_BENCH_NESTED": "1"},
        )
        row.ok = done.returncode == 0
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        failed = [line.split("  ")[0] for line in lines if " FAIL " in line]
        row.notes.append(
            f"exit {done.returncode} in {time.monotonic() - started:.0f} s"
            + (f"; failed: {', '.join(failed)}" if failed else "")
        )
        return row


def run(args: argparse.Namespace) -> int:
    check_local_url(args.postgres_url)
    faults = args.fault or list(FAULTS)
    install_exit_handlers(900 if not args.quick else 400, exclusive=True)
    campaign = Campaign(args)
    campaign.redis.start()
    rows: list[Row] = []
    durable = stub_has("--durable")
    print(f"faults: {', '.join(faults)} at {args.chargers:,} chargers ({machine_note()})")
    if not durable:
        print("csms_stub has no --durable: csms-sigkill runs without it")
    try:
        for fault in faults:
            with phase(fault):
                if fault == "csms-sigkill":
                    rows.append(campaign.csms_kill(signal.SIGKILL))
                    if durable:
                        rows.append(campaign.csms_kill(signal.SIGKILL, durable=True))
                elif fault == "csms-sigterm":
                    rows.append(campaign.csms_kill(signal.SIGTERM))
                elif fault == "reconnect-storm":
                    rows.append(campaign.reconnect_storm())
                elif fault == "redis-restart":
                    rows.append(campaign.redis_restart())
                elif fault == "worker-sigkill":
                    rows.append(campaign.worker_kill())
                elif fault == "fuzz-stub":
                    frames = ["--frames", "10000"] if args.quick else []
                    rows.append(campaign.script("fuzz-stub", ["fuzz_stub.py", *frames], 300))
                elif fault == "fuzz-csms":
                    n = str(args.chargers)
                    duration = "10" if args.quick else "30"
                    argv = ["fuzz_csms.py", "--stations", n, "--duration", duration]
                    rows.append(campaign.script("fuzz-csms", argv, 240))
                    rows[-1].scale = f"{args.chargers:,} stations"
                print(f"   {rows[-1]}", flush=True)
    finally:
        campaign.redis.stop()
    print_table(
        ["fault", "scale", "acknowledged", "lost", "duplicated", "recovered in s", "ok", "notes"],
        [
            (
                r.fault,
                r.scale,
                r.acknowledged,
                r.lost,
                r.duplicated,
                r.recovered_s,
                r.verdict,
                "; ".join(r.notes),
            )
            for r in rows
        ],
        title="fault campaign",
    )
    return 0 if all(r.passed for r in rows) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fault", action="append", choices=FAULTS, help="default: all")
    parser.add_argument("--chargers", type=int, default=None, help="1,000 (--quick: 100)")
    parser.add_argument("--quick", action="store_true", help="100 chargers, shorter holds")
    parser.add_argument("--hold", type=float, default=None, help="seconds around the fault")
    parser.add_argument("--spawn-rate", type=float, default=200.0)
    parser.add_argument("--time-scale", type=float, default=60.0)
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    if args.chargers is None:
        args.chargers = 100 if args.quick else 1000
    if args.hold is None:
        args.hold = 10.0 if args.quick else 20.0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
