"""Server subprocesses pinned to one core: the stub and the baseline server, started on free
ports, waited for and stopped; CPU / RSS sampling of them and of the machine."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psutil

from _common import BENCHMARKS, HOST, ROOT
from _common.machine import die_with_parent, free_port


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
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.core = core
        #: the stub's HTTP API (``/healthz`` is polled at start, ``/stats`` read by benchmarks)
        self.api_url = api_url
        self.start_timeout = start_timeout
        self.cwd = cwd
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
            cwd=self.cwd,
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
    """The baseline server; ``replies="ocpp"``: schema-valid replies (see
    :func:`_common.baseline.ocpp_reply`)."""
    port = free_port()
    # run from benchmarks/, where ``_common`` is importable
    argv = [sys.executable, "-m", "_common.baseline", "--port", str(port)]
    if replies != "empty":
        argv += ["--replies", replies, "--heartbeat-interval", str(heartbeat_interval)]
    name = "baseline" if replies == "empty" else f"baseline-{replies}"
    return ServerProcess(name, argv, port, core, cwd=BENCHMARKS)
