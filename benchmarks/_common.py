"""What the stub benchmarks share: server subprocesses, the raw baseline server, the
databases, client processes, the lean OCPP-J charger they run, percentiles and tables.

Everything here talks to 127.0.0.1 only, and every wait is bounded. Servers run as
subprocesses pinned to one core (``--server-core``); load clients run in
``multiprocessing`` processes pinned to the other cores. Each subprocess gets
``PR_SET_PDEATHSIG`` so it dies with the benchmark even if the benchmark is SIGKILLed;
normal exits, exceptions and Ctrl-C stop them through context managers.

Run as a script, this module is the baseline server:
``python benchmarks/_common.py baseline-server --port N`` (``--replies ocpp`` makes it
answer with schema-valid OCPP replies, so real stations can boot against it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import gc
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python benchmarks/x.py` puts benchmarks/, not the root, first
    sys.path.insert(0, str(ROOT))

from loadgen import ocppj  # noqa: E402

HOST = "127.0.0.1"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
SUBPROTOCOL = "ocpp2.0.1"

# -- process set-up ------------------------------------------------------------------------


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


# -- server subprocesses -------------------------------------------------------------------


@dataclass
class Sample:
    """A server process's resource use at one moment."""

    at: float  # time.monotonic()
    cpu_seconds: float  # user + system, all threads
    rss: int  # bytes

    def cpu_since(self, earlier: Sample) -> float:
        return self.cpu_seconds - earlier.cpu_seconds

    def cores_since(self, earlier: Sample) -> float:
        return self.cpu_since(earlier) / max(1e-9, self.at - earlier.at)


def sample_process(process: psutil.Process) -> Sample:
    times = process.cpu_times()
    return Sample(time.monotonic(), times.user + times.system, process.memory_info().rss)


@dataclass
class HostSample:
    """The whole machine at one moment: per-core busy/total seconds, database server CPU."""

    at: float
    cores: list[tuple[float, float]]  # (busy, total) seconds per core
    database_cpu: dict[int, float]  # pid -> cpu seconds of PostgreSQL server processes

    def usage_since(self, earlier: HostSample) -> dict[str, Any]:
        """Each core's busy fraction and the database server's CPU, in cores."""
        busy = [
            (b1 - b0) / max(1e-9, t1 - t0)
            for (b0, t0), (b1, t1) in zip(earlier.cores, self.cores, strict=True)
        ]
        database = sum(
            cpu - earlier.database_cpu[pid]
            for pid, cpu in self.database_cpu.items()
            if pid in earlier.database_cpu
        )
        return {"core_busy": busy, "database_cores": database / max(1e-9, self.at - earlier.at)}


def sample_host() -> HostSample:
    cores = []
    for times in psutil.cpu_times(percpu=True):
        total = sum(times)
        cores.append((total - times.idle - getattr(times, "iowait", 0.0), total))
    database = {}
    for process in psutil.process_iter(["name"]):
        if (process.info["name"] or "").startswith("postgres"):
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                database[process.pid] = times.user + times.system
    return HostSample(time.monotonic(), cores, database)


class ServerProcess:
    """A server subprocess pinned to one core; ``with`` starts it, waits, and stops it."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        core: int,
        *,
        api_url: str | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.core = core
        #: the stub's HTTP API (``/healthz`` is polled at start, ``/stats`` read by benchmarks)
        self.api_url = api_url
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.ps: psutil.Process | None = None
        self._log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log")  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    def _preexec(self) -> None:
        os.sched_setaffinity(0, {self.core})
        die_with_parent()

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=self._preexec,  # pin to the core before the interpreter starts
            start_new_session=True,  # Ctrl-C reaches us; we stop it in order
        )
        self.ps = psutil.Process(self.process.pid)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            if self._ready():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready in {self.start_timeout:g} s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5):
                pass
            if self.api_url:
                with urllib.request.urlopen(f"{self.api_url}/healthz", timeout=1) as response:
                    return response.status == 200
        except OSError:
            return False
        return True

    def sample(self) -> Sample:
        assert self.ps is not None
        return sample_process(self.ps)

    def get_json(self, path: str, timeout: float = 10.0) -> Any:
        """GET ``path`` from the server's HTTP API (the stub only)."""
        assert self.api_url is not None, f"{self.name} has no HTTP API"
        with urllib.request.urlopen(f"{self.api_url}{path}", timeout=timeout) as response:
            return orjson.loads(response.read())

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (the stub then writes what it queued), SIGKILL after ``timeout``."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return process.returncode

    def log_tail(self, lines: int = 30) -> str:
        self._log.flush()
        text = Path(self._log.name).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self.stop()
        finally:
            self._log.close()


def stub_process(
    core: int,
    database_url: str,
    schema: str | None = None,
    *,
    heartbeat_interval: int | None = None,
    extra: Sequence[str] = (),
) -> ServerProcess:
    port, api_port = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "csms_stub",
        "--host",
        HOST,
        "--port",
        str(port),
        "--api-host",
        HOST,
        "--api-port",
        str(api_port),
        "--database-url",
        database_url,
        "--log-level",
        "WARNING",
    ]
    if schema:
        argv += ["--database-schema", schema]
    if heartbeat_interval is not None:
        argv += ["--heartbeat-interval", str(heartbeat_interval)]
    argv += list(extra)
    return ServerProcess("csms_stub", argv, port, core, api_url=f"http://{HOST}:{api_port}")


def baseline_process(
    core: int, replies: str = "empty", heartbeat_interval: int = 300
) -> ServerProcess:
    """The baseline server; ``replies="ocpp"``: schema-valid replies (see ``ocpp_reply``)."""
    port = free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "baseline-server", "--port", str(port)]
    if replies != "empty":
        argv += ["--replies", replies, "--heartbeat-interval", str(heartbeat_interval)]
    return ServerProcess(
        "baseline" if replies == "empty" else f"baseline-{replies}", argv, port, core
    )


# -- the baseline: a raw websockets server that answers every CALL with {} ----------------


def ocpp_reply(heartbeat_interval: int = 300) -> Callable[[str, str], dict[str, Any]]:
    """``reply(subprotocol, action)``: the smallest schema-valid CALLRESULT payload.

    BootNotification is Accepted with ``heartbeat_interval``; actions whose response has
    required fields get them (currentTime is cached per second); everything else, including
    TransactionEvent, StatusNotification and MeterValues, gets ``{}``.
    """
    from loadgen.protocols import iso_timestamp

    clock = [0, ""]  # whole second, its OCPP dateTime

    def now() -> str:
        second = int(time.time())
        if second != clock[0]:
            clock[0], clock[1] = second, iso_timestamp(second)
        return clock[1]

    accepted_201 = {"idTokenInfo": {"status": "Accepted"}}
    accepted_16 = {"idTagInfo": {"status": "Accepted"}}
    empty: dict[str, Any] = {}
    transaction_ids = iter(range(1, 1 << 62))

    def reply(subprotocol: str, action: str) -> dict[str, Any]:
        if action == "BootNotification":
            return {"currentTime": now(), "interval": heartbeat_interval, "status": "Accepted"}
        if action == "Heartbeat":
            return {"currentTime": now()}
        if subprotocol == "ocpp1.6":
            if action == "Authorize" or action == "StopTransaction":
                return accepted_16
            if action == "StartTransaction":
                return {**accepted_16, "transactionId": next(transaction_ids)}
        elif action == "Authorize":
            return accepted_201
        if action == "DataTransfer":
            return {"status": "Accepted"}
        return empty

    return reply


async def serve_baseline(port: int, replies: str = "empty", heartbeat_interval: int = 300) -> None:
    """The floor the stub is compared with: same library and settings, no OCPP work.

    Each text frame is parsed just enough to find the message id and action, and every CALL
    is answered with an empty CALLRESULT (``replies="empty"``) or with the smallest
    schema-valid one (``replies="ocpp"``, see :func:`ocpp_reply`). No validation, no state,
    no database, no metrics.
    """
    from websockets.asyncio.server import serve

    dumps, loads = orjson.dumps, orjson.loads
    reply = ocpp_reply(heartbeat_interval) if replies == "ocpp" else None

    async def handle(ws: Any) -> None:
        subprotocol = ws.subprotocol or ""
        async for frame in ws:
            try:
                message = loads(frame)
            except orjson.JSONDecodeError:
                continue
            if type(message) is list and len(message) == 4 and message[0] == 2:
                payload = reply(subprotocol, message[2]) if reply is not None else {}
                await ws.send(dumps([3, message[1], payload]).decode())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with serve(
        handle,
        HOST,
        port,
        subprotocols=["ocpp2.1", "ocpp2.0.1", "ocpp1.6"],
        compression=None,
        ping_interval=None,
        max_size=256 * 1024,
        max_queue=4,
        backlog=4096,  # thousands of clients connecting at once
    ) as server:
        await stop.wait()
        server.close(close_connections=True)


# -- databases ------------------------------------------------------------------------------


class Database:
    """A fresh database for one stub: a SQLite file in a temporary folder, or a PostgreSQL
    schema ``bench_<random>`` that is dropped afterwards."""

    def __init__(self, kind: str, postgres_url: str = DEFAULT_POSTGRES_URL) -> None:
        self.kind = kind
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if kind == "sqlite":
            self._tmp = tempfile.TemporaryDirectory(prefix="bench-sqlite-")
            self.url = f"sqlite:///{self._tmp.name}/csms.db"
            self.schema: str | None = None
        elif kind == "postgresql":
            self.url = check_local_url(postgres_url)
            self.schema = f"bench_{uuid.uuid4().hex[:12]}"
        else:
            raise ValueError(kind)

    def count(self, table: str) -> int:
        return asyncio.run(self._count(table))

    async def _count(self, table: str) -> int:
        rows = await self._execute(f"SELECT count(*) FROM {self.qualified(table)}")
        return int(rows[0][0])

    def rows(self, sql: str) -> list[Any]:
        """Rows of a query (name tables with :meth:`qualified`)."""
        return asyncio.run(self._execute(sql))

    def qualified(self, table: str) -> str:
        return f'"{self.schema}"."{table}"' if self.schema else f'"{table}"'

    async def _execute(self, sql: str) -> list[Any]:
        import sqlalchemy as sa
        from sqlalchemy.ext.asyncio import create_async_engine

        from csms_stub.store import normalize_url

        engine = create_async_engine(normalize_url(self.url))
        try:
            async with engine.begin() as connection:
                result = await connection.execute(sa.text(sql))
                return list(result) if result.returns_rows else []
        finally:
            await engine.dispose()

    def drop(self) -> None:
        if self.schema:
            asyncio.run(self._execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.drop()


def wait_for_count(
    database: Database, table: str, expected: int, timeout: float
) -> tuple[int, float]:
    """Poll until ``table`` holds ``expected`` rows; returns (rows, seconds waited)."""
    started = time.monotonic()
    rows = database.count(table)
    while rows < expected and time.monotonic() - started < timeout:
        time.sleep(0.1)
        rows = database.count(table)
    return rows, time.monotonic() - started


# -- the lean charger the load clients run -------------------------------------------------


class CallFailed(Exception):
    """A CALL answered with a CALLERROR or not at all."""


class Charger:
    """One OCPP-J connection with one outstanding CALL at a time, as OCPP requires.

    Leaner than :class:`loadgen.aio_client.OcppClient` (no reader task, no futures): send
    the CALL, read frames until its reply. The stub sends no CALL of its own during the
    benchmarks; one that arrives anyway is answered NotImplemented.
    """

    __slots__ = ("charger_id", "ids", "ws")

    def __init__(self, ws: Any, charger_id: str) -> None:
        self.ws = ws
        self.charger_id = charger_id
        self.ids = ocppj.MessageIds("")

    @classmethod
    async def connect(
        cls, url: str, charger_id: str, timeout: float = 30.0, subprotocol: str = SUBPROTOCOL
    ) -> Charger:
        from websockets.asyncio.client import connect

        ws = await connect(
            f"{url}/{charger_id}",
            subprotocols=[subprotocol],  # type: ignore[list-item]
            compression=None,
            ping_interval=None,
            open_timeout=timeout,
            close_timeout=2,
            max_queue=4,
        )
        return cls(ws, charger_id)

    async def call(self, action: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        message_id = self.ids()
        await self.ws.send(ocppj.Call(message_id, action, payload).encode())
        async with asyncio.timeout(timeout):
            while True:
                message = ocppj.parse(await self.ws.recv())
                if isinstance(message, ocppj.Call):
                    error = ocppj.CallError(message.message_id, ocppj.ErrorCode.NOT_IMPLEMENTED)
                    await self.ws.send(error.encode())
                elif message.message_id == message_id:
                    if isinstance(message, ocppj.CallError):
                        raise CallFailed(
                            f"{action}: {message.error_code} {message.error_description}"
                        )
                    return message.payload

    async def close(self) -> None:
        await self.ws.close()


async def ramp(
    count: int,
    rate: float,
    start: Callable[[int], Awaitable[Any]],
    *,
    concurrency: int = 200,
) -> list[Any]:
    """Run ``start(i)`` for i in range(count), at most ``rate`` starts per second and at most
    ``concurrency`` unfinished at once; returns their results (exceptions included)."""
    gate = asyncio.Semaphore(concurrency)
    began = time.monotonic()

    async def one(i: int) -> Any:
        try:
            return await start(i)
        finally:
            gate.release()

    tasks = []
    for i in range(count):
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await gate.acquire()
        tasks.append(asyncio.ensure_future(one(i)))
    return await asyncio.gather(*tasks, return_exceptions=True)


def freeze_gc() -> None:
    """Stop the collector from walking the long-lived connections on every full collection.

    A client process holding thousands of connections otherwise pauses for 100-500 ms per
    full collection, and those pauses would show up as the server's latency. Called once
    the connections are up; what is allocated afterwards is still collected.
    """
    gc.collect()
    gc.freeze()


# -- client processes ----------------------------------------------------------------------


class Control:
    """A client process's end of the pipe to the benchmark, usable from asyncio."""

    def __init__(self, conn: multiprocessing.connection.Connection, index: int) -> None:
        self.conn = conn
        self.index = index

    def send(self, kind: str, data: Any = None) -> None:
        self.conn.send((kind, data))

    async def receive(self, kind: str, timeout: float) -> Any:
        loop = asyncio.get_running_loop()
        ready = await loop.run_in_executor(None, self.conn.poll, timeout)
        if not ready:
            raise TimeoutError(f"client {self.index}: no {kind!r} from the benchmark")
        got, data = self.conn.recv()
        if got != kind:
            raise RuntimeError(f"client {self.index}: expected {kind!r}, got {got!r}")
        return data


Worker = Callable[[Control, dict[str, Any]], Awaitable[Any]]


def _client_main(
    worker: Worker,
    conn: multiprocessing.connection.Connection,
    index: int,
    cores: list[int],
    config: dict[str, Any],
    deadline_seconds: float,
) -> None:
    die_with_parent()
    os.sched_setaffinity(0, set(cores))
    raise_nofile()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark decides when we stop
    control = Control(conn, index)

    async def main() -> None:
        try:
            async with asyncio.timeout(deadline_seconds):
                result = await worker(control, config)
            control.send("result", result)
        except BaseException as exc:
            control.send("error", f"{type(exc).__name__}: {exc}")
            raise

    with contextlib.suppress(BaseException):
        asyncio.run(main())
    conn.close()
    os._exit(0)  # do not wait for anything: sockets close with the process


class ClientGroup:
    """Load-client processes pinned to ``cores``, each running ``worker(control, config)``.

    The worker and the benchmark exchange ``(kind, data)`` messages; the worker's return
    value arrives as ``"result"``. ``deadline_seconds`` bounds each process on its own.
    """

    def __init__(
        self,
        worker: Worker,
        configs: list[dict[str, Any]],
        cores: list[int],
        deadline_seconds: float,
    ) -> None:
        context = multiprocessing.get_context("spawn")
        self.cores = cores
        self.conns: list[multiprocessing.connection.Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for index, config in enumerate(configs):
            parent, child = context.Pipe()
            process = context.Process(
                target=_client_main,
                args=(worker, child, index, cores, config, deadline_seconds),
                name=f"bench-client-{index}",
                daemon=True,
            )
            self.conns.append(parent)
            self.processes.append(process)

    def __enter__(self) -> ClientGroup:
        for process in self.processes:
            process.start()
        self.ps = [psutil.Process(p.pid) for p in self.processes]
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for process in self.processes:
            process.join(5)
        for process in self.processes:
            if process.is_alive():
                process.terminate()
                process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)

    def send_all(self, kind: str, data: Any = None) -> None:
        for conn in self.conns:
            conn.send((kind, data))

    def receive_all(self, kind: str, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        results = []
        for index, conn in enumerate(self.conns):
            while not conn.poll(0.2):
                if not self.processes[index].is_alive():
                    raise RuntimeError(f"client process {index} died before sending {kind!r}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"client process {index}: no {kind!r} in {timeout:g} s")
            got, data = conn.recv()
            if got == "error":
                raise RuntimeError(f"client process {index} failed: {data}")
            if got != kind:
                raise RuntimeError(f"client process {index}: expected {kind!r}, got {got!r}")
            results.append(data)
        return results

    def sample(self) -> Sample:
        """The client processes' CPU (summed) and RSS (summed)."""
        samples = [sample_process(p) for p in self.ps]
        return Sample(
            time.monotonic(),
            sum(s.cpu_seconds for s in samples),
            sum(s.rss for s in samples),
        )


def run_worker(argv: Sequence[str], cores: Sequence[int], timeout: float, name: str) -> Any:
    """Run ``argv`` (a benchmark's own worker mode) as a subprocess pinned to ``cores`` and
    return the JSON value its last line of stdout holds.

    For load generators that are not asyncio (gevent), which :class:`ClientGroup` cannot
    host. The worker's stderr goes to ours (progress lines). It is killed when ``timeout``
    passes, on any exception (Ctrl-C included) and, through ``PR_SET_PDEATHSIG``, when the
    benchmark dies.
    """
    cores = list(cores)

    def preexec() -> None:
        os.sched_setaffinity(0, set(cores))
        die_with_parent()

    process = subprocess.Popen(
        list(argv),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        preexec_fn=preexec,
        start_new_session=True,  # Ctrl-C reaches us; we kill it
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{name} did not finish in {timeout:g} s") from None
    finally:
        if process.poll() is None:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
    lines = out.decode(errors="replace").strip().splitlines()
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed (exit status {process.returncode})")
    return orjson.loads(lines[-1])


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal integers."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# -- figures and tables --------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return float("nan")
    position = (len(sorted_values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def latency_ms(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {f"p{q}": percentile(ordered, q) * 1000 for q in (50, 95, 99)} | {
        "max": (ordered[-1] * 1000) if ordered else float("nan")
    }


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            if value != value:  # NaN
                return "-"
            return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) for i, h in enumerate(headers)]
    if title:
        print(f"\n{title}")
    print(
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    print("  ".join("-" * w for w in widths))
    for row in text:
        print(
            "  ".join(
                v.ljust(w) if i == 0 else v.rjust(w)
                for i, (v, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    sys.stdout.flush()


def machine_note() -> str:
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


@contextlib.contextmanager
def phase(title: str) -> Iterator[None]:
    print(f"-- {title} ...", flush=True)
    started = time.monotonic()
    yield
    print(f"   done in {time.monotonic() - started:.1f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="benchmark helpers")
    commands = parser.add_subparsers(dest="command", required=True)
    baseline = commands.add_parser("baseline-server", help="the raw websockets baseline server")
    baseline.add_argument("--port", type=int, required=True)
    baseline.add_argument(
        "--replies",
        choices=("empty", "ocpp"),
        default="empty",
        help="CALLRESULT payloads: {} for every CALL, or the smallest schema-valid ones",
    )
    baseline.add_argument("--heartbeat-interval", type=int, default=300)
    args = parser.parse_args(argv)
    if args.command == "baseline-server":
        raise_nofile()
        asyncio.run(serve_baseline(args.port, args.replies, args.heartbeat_interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
