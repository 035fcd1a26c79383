"""Concurrent idle chargers csms_stub holds, heartbeating, and what each one costs.

``--chargers`` chargers connect at ``--connect-rate`` per second (bounded), each boots and
then sends a Heartbeat every ``--heartbeat-interval`` seconds (the stub is started with the
same ``--heartbeat-interval``, so its BootNotification answers agree). Once all are
connected the load is held for ``--hold`` seconds. Reported: chargers connected (as the
clients see it and as the stub's ``/stats`` counts them), heartbeat latency during the hold,
the stub's RSS before connecting and at the end of the hold (and the difference per
connection), and its CPU during the hold. The baseline is the raw ``websockets`` server from
``stub_throughput.py`` holding the same connections.

    .venv/bin/python benchmarks/stub_idle.py --chargers 10000 --hold 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

from _common import DEFAULT_POSTGRES_URL
from _common.charger import CallFailed, Charger, freeze_gc, ramp
from _common.clients import ClientGroup, Control, split
from _common.databases import Database
from _common.figures import latency_ms, machine_note, phase, print_table
from _common.machine import check_local_url, install_exit_handlers, raise_nofile, split_cores
from _common.servers import ServerProcess, baseline_process, sample_host, stub_process
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from loadgen.protocols import v201

# -- the client side (runs in the client processes) ----------------------------------------


async def idle_worker(control: Control, config: dict[str, Any]) -> dict[str, Any]:
    url, ids = config["url"], config["charger_ids"]
    interval, timeout = config["heartbeat_interval"], config["call_timeout"]
    # per heartbeat: when it was due, its round trip, how late its timer fired
    due_at, latencies, timer_lags = array("d"), array("d"), array("d")
    connect_times = array("d")
    totals = {"heartbeats": 0, "heartbeat_errors": 0, "heartbeat_timeouts": 0, "disconnects": 0}
    chargers: list[Charger] = []
    beats: list[asyncio.Task[None]] = []

    async def heartbeats(charger: Charger, first: float) -> None:
        due = first
        while True:
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            started = time.monotonic()
            lag = started - due if delay > 0 else float("nan")  # client saturation
            try:
                await charger.call(*v201.heartbeat(), timeout)
            except CallFailed:
                totals["heartbeat_errors"] += 1
            except TimeoutError:
                totals["heartbeat_timeouts"] += 1
            except ConnectionClosed:
                totals["disconnects"] += 1
                return
            else:
                totals["heartbeats"] += 1
                due_at.append(due)
                latencies.append(time.monotonic() - started)
                timer_lags.append(lag)
            due += interval

    async def start(i: int) -> None:
        began = time.monotonic()
        charger = await Charger.connect(url, ids[i], timeout=timeout)
        connect_times.append(time.monotonic() - began)
        chargers.append(charger)
        await charger.call(*v201.boot_notification("Bench", "Idle-1", ids[i], "1.0"), timeout)
        beats.append(asyncio.create_task(heartbeats(charger, time.monotonic() + interval)))

    control.send("ready")
    await control.receive("go", timeout=300)
    began = time.monotonic()
    outcomes = await ramp(len(ids), config["connect_rate"], start, concurrency=200)
    failures = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    freeze_gc()
    control.send(
        "ramped",
        {
            "booted": len(beats),
            "failed": len(failures),
            "first_failure": failures[0] if failures else None,
            "seconds": time.monotonic() - began,
        },
    )
    window = await control.receive("stop", timeout=config["hold_timeout"])
    for task in beats:
        task.cancel()
    # By due time: heartbeats held back by something before the hold (e.g. the collection
    # in freeze_gc) do not count, even if they go out during it.
    held = [window["from"] <= at < window["to"] for at in due_at]
    in_window = array("d", (v for v, keep in zip(latencies, held, strict=True) if keep))
    lags = array("d", (v for v, keep in zip(timer_lags, held, strict=True) if keep and v == v))
    return {
        **totals,
        "open": sum(1 for c in chargers if c.ws.state is State.OPEN),
        "booted": len(beats),
        "failed": len(failures),
        "latencies": in_window.tobytes(),
        "timer_lags": lags.tobytes(),
        "connect_times": connect_times.tobytes(),
    }


# -- the benchmark side --------------------------------------------------------------------


@dataclass
class IdleResult:
    server: str
    chargers: int
    ramp_seconds: float
    connect_failures: int
    open_at_end: int  # as the clients see it
    server_connected: int | None  # as the stub's /stats counts them
    heartbeats_in_hold: int
    heartbeat_ms: dict[str, float]
    connect_ms: dict[str, float]
    client_timer_lag_ms: dict[str, float]  # how late the clients' heartbeat timers fired
    heartbeat_errors: int
    disconnects: int
    rss_before: int
    rss_after: int
    server_cores_ramp: float
    server_cores_hold: float
    client_processes: int
    client_cores_used: float
    client_rss: int
    host: dict[str, Any] = field(default_factory=dict)  # per-core busy during the hold
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rss_per_connection(self) -> float:
        return (self.rss_after - self.rss_before) / max(1, self.open_at_end)


def run_idle(
    server: ServerProcess, label: str, args: argparse.Namespace, cores: list[int]
) -> IdleResult:
    run_tag = uuid.uuid4().hex[:6]
    ids = [f"idle-{run_tag}-{i:05d}" for i in range(args.chargers)]
    ramp_seconds = args.chargers / args.connect_rate
    hold_timeout = 120 + ramp_seconds * 3 + args.hold
    configs, position = [], 0
    for share in split(args.chargers, args.client_processes):
        configs.append(
            {
                "url": server.url,
                "charger_ids": ids[position : position + share],
                "connect_rate": args.connect_rate / args.client_processes,
                "heartbeat_interval": args.heartbeat_interval,
                "call_timeout": args.call_timeout,
                "hold_timeout": hold_timeout,
            }
        )
        position += share
    time.sleep(1.0)  # let start-up garbage settle before the "before" figure
    before = server.sample()
    with ClientGroup(idle_worker, configs, cores, hold_timeout + 60) as clients:
        clients.receive_all("ready", timeout=60)
        clients.send_all("go")
        ramp_started = server.sample()
        ramped = clients.receive_all("ramped", timeout=60 + ramp_seconds * 3)
        hold_from = server.sample()
        clients_from = clients.sample()
        host_from = sample_host()
        time.sleep(args.hold)
        hold_to = server.sample()
        clients_to = clients.sample()
        host = sample_host().usage_since(host_from)
        server_connected = None
        extra: dict[str, Any] = {}
        if server.api_url:
            stats = server.get_json("/stats")
            server_connected = stats["chargers_connected"]
            extra["db_queue_depth"] = stats["db_queue_depth"]
        clients.send_all("stop", {"from": hold_from.at, "to": hold_to.at})
        results = clients.receive_all("result", timeout=60)
    for r in ramped:
        if r["first_failure"]:
            print(f"   connect failure, e.g.: {r['first_failure']}")
    latencies: list[float] = []
    connects: list[float] = []
    timer_lags: list[float] = []
    for r in results:
        for key, target in (
            ("latencies", latencies),
            ("connect_times", connects),
            ("timer_lags", timer_lags),
        ):
            values = array("d")
            values.frombytes(r[key])
            target.extend(values)
    return IdleResult(
        server=label,
        chargers=args.chargers,
        ramp_seconds=max(r["seconds"] for r in ramped),
        connect_failures=sum(r["failed"] for r in ramped),
        open_at_end=sum(r["open"] for r in results),
        server_connected=server_connected,
        heartbeats_in_hold=len(latencies),
        heartbeat_ms=latency_ms(latencies),
        connect_ms=latency_ms(connects),
        client_timer_lag_ms=latency_ms(timer_lags),
        heartbeat_errors=sum(r["heartbeat_errors"] + r["heartbeat_timeouts"] for r in results),
        disconnects=sum(r["disconnects"] for r in results),
        rss_before=before.rss,
        rss_after=hold_to.rss,
        server_cores_ramp=hold_from.cores_since(ramp_started),
        server_cores_hold=hold_to.cores_since(hold_from),
        client_processes=args.client_processes,
        client_cores_used=clients_to.cores_since(clients_from),
        client_rss=clients_to.rss,
        host=host,
        extra=extra,
    )


def report(
    results: list[IdleResult], args: argparse.Namespace, server_core: int, cores: list[int]
) -> None:
    mb = 1024 * 1024
    rows = [
        [
            r.server,
            f"{r.open_at_end:,}/{r.chargers:,}",
            "-" if r.server_connected is None else r.server_connected,
            r.ramp_seconds,
            r.heartbeats_in_hold,
            r.heartbeat_ms["p50"],
            r.heartbeat_ms["p95"],
            r.heartbeat_ms["p99"],
            r.rss_before / mb,
            r.rss_after / mb,
            r.rss_per_connection / 1024,
            r.server_cores_ramp,
            r.server_cores_hold,
            r.connect_failures + r.heartbeat_errors + r.disconnects,
        ]
        for r in results
    ]
    print_table(
        [
            "server",
            "open",
            "srv sees",
            "ramp s",
            "HBs",
            "HB p50 ms",
            "HB p95 ms",
            "HB p99 ms",
            "RSS0 MB",
            "RSS MB",
            "KB/conn",
            "cores ramp",
            "cores hold",
            "errors",
        ],
        rows,
        title=(
            f"Idle chargers: {args.chargers:,} connected at {args.connect_rate:g}/s, heartbeat "
            f"every {args.heartbeat_interval} s, held {args.hold:g} s; server pinned to core "
            f"{server_core}; {args.client_processes} client process(es) on core(s) "
            f"{','.join(map(str, cores))}"
        ),
    )
    print(
        "   RSS0 = server RSS before connecting, RSS = at the end of the hold, KB/conn = "
        "(RSS - RSS0) / open connections; HB latencies are for heartbeats due during the hold."
    )
    for r in results:
        print(
            f"   {r.server}: connect p50/p95 "
            f"{r.connect_ms['p50']:.1f}/{r.connect_ms['p95']:.1f} ms; "
            f"clients used {r.client_cores_used:.2f} core(s) during the hold (their timers "
            f"fired {r.client_timer_lag_ms['p99']:.1f} ms late at p99), client RSS "
            f"{r.client_rss / mb:.0f} MB; cores busy during the hold (anyone's use): "
            + " ".join(f"{b * 100:.0f}%" for b in r.host["core_busy"])
            + (f"; stub db_queue_depth {r.extra['db_queue_depth']}" if r.extra else "")
        )
    baseline = next((r for r in results if r.server.startswith("baseline")), None)
    if baseline is not None:
        print()
        for r in results:
            if r is baseline:
                continue
            print(
                f"{r.server}: {r.rss_per_connection / 1024:.1f} KB per connection = "
                f"{r.rss_per_connection / baseline.rss_per_connection:.1f} x baseline "
                f"({baseline.rss_per_connection / 1024:.1f} KB); RSS {r.rss_after / mb:.0f} MB = "
                f"{r.rss_after / baseline.rss_after:.1f} x baseline ({baseline.rss_after / mb:.0f} "
                f"MB); heartbeat p95 {r.heartbeat_ms['p95']:.1f} ms vs "
                f"{baseline.heartbeat_ms['p95']:.1f} ms; CPU during the hold "
                f"{r.server_cores_hold:.2f} vs {baseline.server_cores_hold:.2f} cores"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--chargers", type=int, default=10_000)
    parser.add_argument("--connect-rate", type=float, default=500.0, help="new connections/s")
    parser.add_argument("--heartbeat-interval", type=int, default=10, help="seconds")
    parser.add_argument("--hold", "--duration", type=float, default=30.0, help="seconds held")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument(
        "--client-cores", type=int, nargs="*", help="default: every core but the server's"
    )
    parser.add_argument("--call-timeout", type=float, default=30.0)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    server_core, cores = split_cores(args.server_core, args.client_cores)
    check_local_url(args.postgres_url)
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    runs = len(kinds) + (0 if args.no_baseline else 1)
    per_run = 300 + args.chargers / args.connect_rate * 3 + args.hold
    install_exit_handlers(runs * per_run + 60)
    limit = raise_nofile(max(20_000, args.chargers + 2000))
    if limit < args.chargers + 200:
        raise SystemExit(f"open-file limit {limit} is too low for {args.chargers} chargers")
    os.sched_setaffinity(0, set(cores))  # keep this process off the server's core
    print(f"stub_idle: {machine_note()}; open-file limit {limit}", flush=True)
    results: list[IdleResult] = []
    if not args.no_baseline:
        with phase("baseline"), baseline_process(server_core) as server:
            results.append(run_idle(server, "baseline (raw websockets)", args, cores))
    for kind in kinds:
        with (
            phase(f"csms_stub on {kind}"),
            Database(kind, args.postgres_url) as database,
            stub_process(
                server_core,
                database.url,
                database.schema,
                heartbeat_interval=args.heartbeat_interval,
            ) as stub,
        ):
            results.append(run_idle(stub, f"csms_stub/{kind}", args, cores))
    report(results, args, server_core, cores)
    if args.json:
        with open(args.json, "w") as out:
            json.dump([asdict(r) for r in results], out, indent=2, default=str)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit("interrupted: servers and client processes stopped") from None
