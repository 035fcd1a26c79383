"""CALL round trips per second one load-generator process sustains through ``loadgen.link``.

One process pinned to one core (the first of ``--client-cores``, default: every core but
``--server-core``) opens ``--chargers`` connections to a fast CSMS pinned to
``--server-core`` (``_common.baseline``'s server with ``--replies ocpp``: a ``websockets``
asyncio server that answers every CALL at once, no validation, no state). Each connection
then sends OCPP 2.0.1 TransactionEvent ``Updated`` CALLs (``v201.transaction_event``, a
meter value with register, power and SoC; in 2.1 also a tariffId and the running cost,
``costDetails``) back to back from its own greenlet / task, one
outstanding CALL per connection, for ``--warmup`` + ``--duration`` seconds. Measured over
``--duration`` only: round trips per second, the client process's CPU per round trip
(``psutil`` user + system), the server's CPU, and the round-trip latency p50/p95/p99.

Two clients, each in a fresh process, same server, same payloads:

- ``gevent Link``: :class:`loadgen.link.Link` (``websockets`` sans-I/O on gevent, fed by an
  I/O watcher callback, no reader greenlet) with a null observer, ``call()`` from one
  greenlet per link;
- ``asyncio (raw)``, the baseline: ``_common.charger.Charger``, the thinnest ``websockets`` asyncio
  client (``send`` then ``recv`` until the reply, no reader task) on the default event loop.

Target: the link's CPU per round trip at most 2x the raw client's. If the server's core is
busy (> 90 %) the round trips per second are the server's limit, not the client's; the
CPU per round trip is still the client's own cost.

    .venv/bin/python benchmarks/link_roundtrip.py --chargers 500 --duration 10
    .venv/bin/python benchmarks/link_roundtrip.py --ocpp-version 2.0.1 2.1   # 2.1 vs 2.0.1
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
import timeit
import uuid
from array import array
from collections.abc import Iterator
from typing import Any

import orjson
import psutil
from _common.charger import CallFailed, Charger, freeze_gc, ramp
from _common.clients import run_worker
from _common.figures import latency_ms, machine_note, phase, print_table
from _common.machine import install_exit_handlers, raise_nofile, split_cores, wait_for_quiet
from _common.servers import ServerProcess, baseline_process

from loadgen.protocols import iso_timestamp, v21, v201

TARGET_CPU_RATIO = 2.0
QUIET_CORES = 0.1  # CPU other processes may use during a measurement, in cores
CLIENTS = {"asyncio": "asyncio (raw)", "gevent": "gevent Link"}

# -- what every connection sends (both clients) ---------------------------------------------

_clock = [0, ""]


def timestamp() -> str:
    """Now as an OCPP dateTime, formatted once per second (a station's clock resolution)."""
    second = int(time.time())
    if second != _clock[0]:
        _clock[0], _clock[1] = second, iso_timestamp(second)
    return _clock[1]


def transaction_updates(
    charger_id: str, version: str = "2.0.1"
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Endless TransactionEvent Updated requests of one charging session, seqNo 1, 2, ...

    In 2.1 each also carries what a 2.1 station priced by a CSMS's tariff adds: the
    tariffId and the running cost (costDetails with one charging period)."""
    transaction_id = f"{charger_id}-tx1"
    register_wh = 1000.0
    started = timestamp()
    seq_no = 0
    while True:
        seq_no += 1
        register_wh += 2.05
        now = timestamp()
        fields: dict[str, Any] = {
            "charging_state": "Charging",
            "evse_id": 1,
            "connector_id": 1,
            "meter_values": [v201.meter_value(now, v201.sampled_values(register_wh, 7400.0, 42.0))],
        }
        if version == "2.1":
            energy = register_wh - 1000.0
            yield v21.transaction_event(
                "Updated",
                transaction_id,
                seq_no,
                now,
                "MeterValuePeriodic",
                tariff_id="bench-tariff",
                cost_details=v21.cost_details(
                    "EUR",
                    round(energy * 0.00035, 2),
                    energy,
                    seq_no,
                    tariff_id="bench-tariff",
                    period_start=started,
                ),
                **fields,
            )
        else:
            yield v201.transaction_event(
                "Updated", transaction_id, seq_no, now, "MeterValuePeriodic", **fields
            )


def builder_cost_us(version: str = "2.0.1") -> float:
    """CPU µs to build one payload (both clients pay it; it is part of their figures)."""
    updates = transaction_updates("cost", version)
    runs = 20_000
    return timeit.timeit(lambda: next(updates), number=runs) / runs * 1e6


# -- the measurement window (both clients) --------------------------------------------------


class Window:
    """Counts round trips between two CPU samples, so counts and CPU cover the same time."""

    def __init__(self, server_pid: int) -> None:
        self.me = psutil.Process()
        self.server = psutil.Process(server_pid)
        self.open = False
        self.stop = False
        self.latencies = array("d")
        self.errors = 0
        self.disconnects = 0
        self._first: tuple[float, float, float, float] | None = None
        self._last: tuple[float, float, float, float] | None = None

    def _sample(self) -> tuple[float, float, float, float]:
        mine, server = self.me.cpu_times(), self.server.cpu_times()
        host = psutil.cpu_times()
        busy = sum(host) - host.idle - getattr(host, "iowait", 0.0)
        return time.monotonic(), mine.user + mine.system, server.user + server.system, busy

    def begin(self) -> None:
        self._first = self._sample()
        self.open = True

    def end(self) -> None:
        self.open = False
        self._last = self._sample()
        self.stop = True

    def result(self, connected: int, connect_failures: list[str]) -> dict[str, Any]:
        assert self._first is not None and self._last is not None
        (t0, cpu0, server0, busy0), (t1, cpu1, server1, busy1) = self._first, self._last
        seconds, round_trips = t1 - t0, len(self.latencies)
        others = (busy1 - busy0) - (cpu1 - cpu0) - (server1 - server0)
        return {
            "connected": connected,
            "connect_failures": len(connect_failures),
            "first_failure": connect_failures[0] if connect_failures else None,
            "seconds": seconds,
            "round_trips": round_trips,
            "round_trips_per_second": round_trips / seconds,
            "client_cpu_us_per_round_trip": (cpu1 - cpu0) / max(1, round_trips) * 1e6,
            "client_cores": (cpu1 - cpu0) / seconds,
            "server_cores": (server1 - server0) / seconds,
            "server_cpu_us_per_round_trip": (server1 - server0) / max(1, round_trips) * 1e6,
            "other_cores": max(0.0, others / seconds),  # everything else on the machine
            "latency_ms": latency_ms(self.latencies),
            "errors": self.errors,
            "disconnects": self.disconnects,
            "rss_mb": self.me.memory_info().rss / 2**20,
        }


def progress(text: str) -> None:
    print(f"   {text}", file=sys.stderr, flush=True)


# -- the gevent client: loadgen.link.Link ----------------------------------------------------


def gevent_worker(config: dict[str, Any]) -> dict[str, Any]:
    import gevent
    import gevent.pool

    from loadgen.link import CallFailed, ConnectFailed, Link
    from loadgen.ocppj import CallErrorReply, ErrorCode
    from loadgen.protocols import get_version

    class Handler:
        def on_call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
            raise CallErrorReply(ErrorCode.NOT_IMPLEMENTED, action)

        def on_disconnect(self, code: int | None, reason: str) -> None:
            pass

    handler = Handler()
    links: list[Link] = []
    failures: list[str] = []

    def open_link(i: int) -> None:
        link = Link(
            f"{config['url']}/{config['prefix']}-{i:05d}",
            get_version(config["version"]),
            handler,
            call_timeout=config["call_timeout"],
        )
        try:
            link.connect()
        except ConnectFailed as exc:
            failures.append(str(exc))
        else:
            links.append(link)

    pool = gevent.pool.Pool(config["connect_concurrency"])
    for i in range(config["chargers"]):
        pool.spawn(open_link, i)
    if not pool.join(timeout=config["connect_timeout"]):
        raise TimeoutError("connecting took too long")
    progress(f"{len(links)} links connected, {len(failures)} failed")
    freeze_gc()
    window = Window(config["server_pid"])

    def run(link: Link) -> None:
        updates = transaction_updates(link.url.rpartition("/")[2], config["version"])
        call, clock, latencies = link.call, time.perf_counter, window.latencies
        while not window.stop:
            action, payload = next(updates)
            started = clock()
            try:
                call(action, payload)
            except CallFailed:
                if not link.connected:
                    window.disconnects += 1
                    return
                window.errors += 1
                continue
            if window.open:
                latencies.append(clock() - started)

    callers = [gevent.spawn(run, link) for link in links]
    gevent.sleep(config["warmup"])
    window.begin()
    gevent.sleep(config["duration"])
    window.end()
    gevent.joinall(callers, timeout=config["call_timeout"] + 5)
    return window.result(len(links), failures)


# -- the baseline client: asyncio + websockets ----------------------------------------------


def asyncio_worker(config: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    from websockets.exceptions import ConnectionClosed

    async def main() -> dict[str, Any]:
        chargers: list[Charger] = []
        failures: list[str] = []

        async def open_charger(i: int) -> None:
            charger_id = f"{config['prefix']}-{i:05d}"
            try:
                charger = await Charger.connect(
                    config["url"], charger_id, subprotocol=f"ocpp{config['version']}"
                )
            except (OSError, TimeoutError, ConnectionClosed) as exc:
                failures.append(repr(exc))
            else:
                chargers.append(charger)

        async with asyncio.timeout(config["connect_timeout"]):
            await ramp(
                config["chargers"],
                1e9,
                open_charger,
                concurrency=config["connect_concurrency"],
            )
        progress(f"{len(chargers)} connections, {len(failures)} failed")
        freeze_gc()
        window = Window(config["server_pid"])
        timeout = config["call_timeout"]

        async def run(charger: Charger) -> None:
            updates = transaction_updates(charger.charger_id, config["version"])
            call, clock, latencies = charger.call, time.perf_counter, window.latencies
            while not window.stop:
                action, payload = next(updates)
                started = clock()
                try:
                    await call(action, payload, timeout)
                except CallFailed:
                    window.errors += 1
                    continue
                except (ConnectionClosed, TimeoutError):
                    window.disconnects += 1
                    return
                if window.open:
                    latencies.append(clock() - started)

        callers = [asyncio.create_task(run(charger)) for charger in chargers]
        await asyncio.sleep(config["warmup"])
        window.begin()
        await asyncio.sleep(config["duration"])
        window.end()
        await asyncio.wait(callers, timeout=timeout + 5)
        return window.result(len(chargers), failures)

    return asyncio.run(main())


def worker_main(config: dict[str, Any]) -> None:
    raise_nofile()
    result = (gevent_worker if config["client"] == "gevent" else asyncio_worker)(config)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # the connections close with the process; nothing to wait for


# -- the benchmark side ----------------------------------------------------------------------


def run_client(client: str, server: ServerProcess, args: argparse.Namespace, version: str) -> Any:
    config = {
        "client": client,
        "url": server.url,
        "server_pid": server.process.pid,  # type: ignore[union-attr]
        "prefix": f"rt-{client}-{uuid.uuid4().hex[:6]}",
        "version": version,
        "chargers": args.chargers,
        "warmup": args.warmup,
        "duration": args.duration,
        "call_timeout": args.call_timeout,
        "connect_concurrency": args.connect_concurrency,
        "connect_timeout": 60 + args.chargers / 50,
    }
    argv = [sys.executable, os.path.abspath(__file__), "--worker", orjson.dumps(config).decode()]
    timeout = config["connect_timeout"] + args.warmup + args.duration + args.call_timeout + 60
    result = run_worker(argv, [args.cores[0]], timeout, f"{CLIENTS[client]} client")
    result["version"] = version
    return result


def measure(client: str, server: ServerProcess, args: argparse.Namespace, version: str) -> Any:
    """One client's run; again (up to ``--retries`` times) if other work disturbed it."""
    for attempt in range(args.retries + 1):
        began = time.monotonic()
        busy = wait_for_quiet(args.quiet_wait, QUIET_CORES)
        if time.monotonic() - began > 5:
            print(f"   waited {time.monotonic() - began:.0f} s for a quiet machine", flush=True)
        if busy >= QUIET_CORES:
            print(f"   the machine is busy ({busy:.2f} cores): measuring anyway", flush=True)
        result = run_client(client, server, args, version)
        if result["other_cores"] <= QUIET_CORES or attempt == args.retries:
            return result
        print(
            f"   disturbed: other processes used {result['other_cores']:.2f} cores; again",
            flush=True,
        )
    raise AssertionError("unreachable")


def report(results: list[tuple[str, dict[str, Any]]], args: argparse.Namespace) -> int:
    rows = []
    for client, r in results:
        lat = r["latency_ms"]
        rows.append(
            [
                CLIENTS[client],
                r["version"],
                r["connected"],
                r["round_trips_per_second"],
                r["client_cpu_us_per_round_trip"],
                r["client_cores"],
                r["server_cores"],
                r["server_cpu_us_per_round_trip"],
                lat["p50"],
                lat["p95"],
                lat["p99"],
                r["other_cores"],
                r["errors"] + r["disconnects"],
            ]
        )
    print_table(
        [
            "client",
            "OCPP",
            "links",
            "round trips/s",
            "client µs/RT",
            "client cores",
            "server cores",
            "server µs/RT",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "others",
            "errors",
        ],
        rows,
        title=(
            f"CALL round trips, TransactionEvent Updated back to back, {args.chargers} "
            f"connections, {args.duration:g} s measured after {args.warmup:g} s warm-up; "
            f"client on core {args.cores[0]}, server on core {args.server_core}"
        ),
    )

    def best(client: str, version: str, key: str, pick: Any) -> float:
        return pick(r[key] for c, r in results if c == client and r["version"] == version)

    def median(client: str, version: str, key: str) -> float:
        return statistics.median(
            r[key] for c, r in results if c == client and r["version"] == version
        )

    status = 0
    for version in args.ocpp_version:
        if {c for c, r in results if r["version"] == version} != set(CLIENTS):
            continue
        # Best of the runs: other work on the machine only ever adds CPU per round trip.
        cpu_ratio = best("gevent", version, "client_cpu_us_per_round_trip", min) / best(
            "asyncio", version, "client_cpu_us_per_round_trip", min
        )
        rate_ratio = best("gevent", version, "round_trips_per_second", max) / best(
            "asyncio", version, "round_trips_per_second", max
        )
        median_ratio = median("gevent", version, "client_cpu_us_per_round_trip") / median(
            "asyncio", version, "client_cpu_us_per_round_trip"
        )
        verdict = "met" if cpu_ratio <= TARGET_CPU_RATIO else "MISSED"
        print(
            f"\nOCPP {version}: gevent Link vs asyncio (raw), best of {args.repeat} run(s) "
            f"each: {cpu_ratio:.2f} x the CPU per round trip (target <= "
            f"{TARGET_CPU_RATIO:g} x: {verdict}; medians: {median_ratio:.2f} x), "
            f"{rate_ratio:.2f} x the round trips/s"
        )
        status |= cpu_ratio > TARGET_CPU_RATIO
    baseline, *others = args.ocpp_version
    for version in others:
        # the same client, another version's payloads: what the version costs per CALL
        for client in sorted({c for c, _ in results}):
            base = best(client, baseline, "client_cpu_us_per_round_trip", min)
            this = best(client, version, "client_cpu_us_per_round_trip", min)
            print(
                f"OCPP {version} vs {baseline}, {CLIENTS[client]}, best of {args.repeat}: "
                f"{this:.1f} vs {base:.1f} µs per round trip = {this / base:.2f} x"
            )
    for version, cost in args.builder_us.items():
        print(f"payload builder, OCPP {version} (TransactionEvent + meter value): {cost:.1f} µs")
    print("  per call, included in both clients' CPU per round trip")
    for client, r in results:
        if r["server_cores"] > 0.9:
            print(
                f"{CLIENTS[client]}: the server's core was {r['server_cores']:.0%} busy: its "
                "round trips/s are the server's limit; CPU per round trip is still the client's"
            )
        elif r["client_cores"] > 0.9:
            print(f"{CLIENTS[client]}: the client's core was {r['client_cores']:.0%} busy")
        if r["other_cores"] > QUIET_CORES:
            print(
                f"{CLIENTS[client]}: other processes used {r['other_cores']:.2f} cores during "
                "the measurement: the machine was not quiet, its figures are disturbed"
            )
        if r["connect_failures"]:
            print(
                f"{CLIENTS[client]}: {r['connect_failures']} connects failed: {r['first_failure']}"
            )
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chargers", type=int, default=500, help="connections")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each client, alternating")
    parser.add_argument(
        "--clients", nargs="+", choices=sorted(CLIENTS), default=["asyncio", "gevent"]
    )
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument(
        "--client-cores", type=int, nargs="*", help="default: every core but the server's"
    )
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait, before each run, for other processes to leave the CPU idle",
    )
    parser.add_argument(
        "--retries", type=int, default=2, help="runs again when other processes disturbed it"
    )
    parser.add_argument("--call-timeout", type=float, default=30.0)
    parser.add_argument(
        "--ocpp-version",
        nargs="+",
        default=["2.0.1"],
        choices=["2.1", "2.0.1"],
        help="what both clients speak, each measured in turn and compared with the first "
        "(2.1's TransactionEvent also carries a tariffId and the running cost)",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one client
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.worker:
        worker_main(orjson.loads(args.worker))
    args.server_core, args.cores = split_cores(args.server_core, args.client_cores)
    runs = args.repeat * len(args.clients) * len(args.ocpp_version)
    per_run = (1 + args.retries) * (
        120 + args.quiet_wait + args.chargers / 50 + args.warmup + args.duration + args.call_timeout
    )
    install_exit_handlers(runs * per_run + 60)
    raise_nofile()
    os.sched_setaffinity(0, set(args.cores))  # keep this process off the server's core
    print(f"link_roundtrip: {machine_note()}", flush=True)
    args.builder_us = {version: builder_cost_us(version) for version in args.ocpp_version}
    gc.collect()
    results: list[tuple[str, dict[str, Any]]] = []
    with baseline_process(args.server_core, replies="ocpp") as server:
        for run in range(args.repeat):
            for client in args.clients:
                for version in args.ocpp_version:
                    with phase(f"{CLIENTS[client]}, OCPP {version}, run {run + 1}/{args.repeat}"):
                        results.append((client, measure(client, server, args, version)))
    status = report(results, args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                [{"client": c, **r} for c, r in results] + [{"builder_us": args.builder_us}],
                out,
                indent=2,
            )
    return status


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # every subprocess was stopped on the way out
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
