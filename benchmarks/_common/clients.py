"""Load-client processes: ``multiprocessing`` processes pinned to cores, talking to the
benchmark over a pipe (ready / go / result), and non-asyncio workers as subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import psutil

from _common import ROOT
from _common.machine import die_with_parent, raise_nofile
from _common.servers import Sample, sample_process


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
