"""TransactionEvent round trips per second csms_stub sustains on one core.

The stub runs as a subprocess pinned to one core (``--server-core``, default 0); the load
clients run in ``--client-processes`` processes pinned to the other cores. Each of
``--chargers`` chargers boots, then sends Started / Updated x ``--updates`` / Ended
TransactionEvents, one outstanding CALL per connection, for ``--warmup`` + ``--duration``
seconds. Two load modes per server:

- ``saturate``: back to back (closed loop): the most the server answers per second. Its
  latency is mostly queueing (Little's law: chargers / throughput), so read throughput here.
- ``paced``: ``--target-rate`` TE/s in total (each charger on a fixed schedule); latency is
  measured from when each CALL was due, so a stalled server cannot hide its backlog. This is
  the phase that judges the target "p95 under 50 ms at 2,000 TE/s".

The same clients run against a raw ``websockets`` server that answers every CALL with an
empty CALLRESULT (the baseline), so the ratios say what the stub's own work costs. After each
stub phase the database must hold exactly one ``transaction_event`` row per acknowledged TE.
``--durable on|both`` also runs the stub with ``--durable`` (a TE is acknowledged only once its
rows are committed) and prints what that costs against the same stub without it.

    .venv/bin/python benchmarks/stub_throughput.py --database both --duration 20
    .venv/bin/python benchmarks/stub_throughput.py --database both --durable both
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
from _common.databases import Database, wait_for_count
from _common.figures import latency_ms, machine_note, phase, print_table
from _common.machine import check_local_url, install_exit_handlers, raise_nofile, split_cores
from _common.servers import ServerProcess, baseline_process, sample_host, stub_process
from websockets.exceptions import ConnectionClosed

from loadgen.protocols import v201

TARGET_RATE = 2000.0  # TE/s, from the issue
TARGET_P95_MS = 50.0


# -- the client side (runs in the client processes) ----------------------------------------


def transaction_events(charger_id: str, updates: int) -> Any:
    """Endless (action, payload) TransactionEvents: Started, Updated x updates, Ended, ..."""
    token = v201.id_token("bench-token")
    register = 0.0
    power = 7400.0
    number = 0
    while True:
        number += 1
        transaction_id = f"{charger_id}-t{number}"
        now = time.time()
        begin = v201.sampled_values(register, 0.0, context="Transaction.Begin")
        yield v201.transaction_event(
            "Started",
            transaction_id,
            0,
            now,
            "Authorized",
            charging_state="Charging",
            evse_id=1,
            connector_id=1,
            token=token,
            meter_values=[v201.meter_value(now, begin)],
        )
        for seq_no in range(1, updates + 1):
            register += power * 10 / 3600
            now = time.time()
            sampled = v201.sampled_values(register, power)
            yield v201.transaction_event(
                "Updated",
                transaction_id,
                seq_no,
                now,
                "MeterValuePeriodic",
                charging_state="Charging",
                meter_values=[v201.meter_value(now, sampled)],
            )
        now = time.time()
        end = v201.sampled_values(register, 0.0, context="Transaction.End")
        yield v201.transaction_event(
            "Ended",
            transaction_id,
            updates + 1,
            now,
            "StopAuthorized",
            charging_state="EVConnected",
            stopped_reason="Local",
            meter_values=[v201.meter_value(now, end)],
        )


async def throughput_worker(control: Control, config: dict[str, Any]) -> dict[str, Any]:
    url, ids, timeout = config["url"], config["charger_ids"], config["call_timeout"]

    async def start(i: int) -> Charger:
        charger = await Charger.connect(url, ids[i])
        await charger.call(*v201.boot_notification("Bench", "TE-1", ids[i], "1.0"), timeout)
        return charger

    started = await ramp(len(ids), config["connect_rate"], start, concurrency=50)
    chargers = [c for c in started if isinstance(c, Charger)]
    failures = [repr(c) for c in started if not isinstance(c, Charger)]
    freeze_gc()
    control.send("ready", {"connected": len(chargers), "failed": len(failures)})
    schedule = await control.receive("go", timeout=300)
    go, measure_from, end = schedule["go"], schedule["measure_from"], schedule["end"]
    rate = config["rate"]  # TE/s over all chargers of all processes; 0 = back to back
    latencies = array("d")
    timer_lags = array("d")  # how late the client's own timers fired: client saturation
    totals = {"acked": 0, "measured": 0, "call_errors": 0, "timeouts": 0, "disconnects": 0}

    async def run(charger: Charger, position: int) -> None:
        events = transaction_events(charger.charger_id, config["updates"])
        interval = config["total_chargers"] / rate if rate else 0.0
        due = go + position / rate if rate else go
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        while True:
            now = time.monotonic()
            if rate:
                if due >= end:
                    break
                if due > now:
                    await asyncio.sleep(due - now)
                    if measure_from <= due < end:
                        timer_lags.append(time.monotonic() - due)
                intended, due = due, due + interval
            else:
                if now >= end:
                    break
                intended = now
            try:
                await charger.call(*next(events), timeout)
            except CallFailed:
                totals["call_errors"] += 1
                continue
            except TimeoutError:
                totals["timeouts"] += 1
                return  # the reply may still come; this connection's state is unknown
            except ConnectionClosed:
                totals["disconnects"] += 1
                return
            done = time.monotonic()
            totals["acked"] += 1
            if measure_from <= done < end:
                totals["measured"] += 1
                latencies.append(done - intended)

    offset = config["position_offset"]
    await asyncio.gather(*(run(c, offset + i) for i, c in enumerate(chargers)))
    await asyncio.wait_for(asyncio.gather(*(c.close() for c in chargers)), 10)
    return {
        **totals,
        "connected": len(chargers),
        "connect_failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "latencies": latencies.tobytes(),
        "timer_lags": timer_lags.tobytes(),
    }


# -- the benchmark side --------------------------------------------------------------------


@dataclass
class PhaseResult:
    server: str
    mode: str
    offered_rate: float  # TE/s, 0 = back to back
    chargers: int
    connected: int
    round_trips_per_second: float
    latency_ms: dict[str, float]
    client_timer_lag_ms: dict[str, float]  # paced only: how late the clients' timers fired
    server_cores: float  # CPU used during the measurement, in cores
    server_cpu_us_per_round_trip: float
    client_cores: float
    client_processes: int
    client_cores_available: int
    acked: int
    call_errors: int
    timeouts: int
    disconnects: int
    connect_failures: int
    host: dict[str, Any] = field(default_factory=dict)  # per-core busy, database CPU
    db_check: dict[str, Any] = field(default_factory=dict)

    @property
    def client_bound(self) -> bool:
        return self.client_cores > 0.9 * min(self.client_cores_available, self.client_processes)


def run_phase(
    server: ServerProcess, label: str, mode: str, args: argparse.Namespace, cores: list[int]
) -> PhaseResult:
    rate = args.target_rate if mode == "paced" else 0.0
    run_tag = uuid.uuid4().hex[:6]
    ids = [f"bench-{run_tag}-{i:05d}" for i in range(args.chargers)]
    configs, position = [], 0
    for share in split(args.chargers, args.client_processes):
        configs.append(
            {
                "url": server.url,
                "charger_ids": ids[position : position + share],
                "position_offset": position,
                "total_chargers": args.chargers,
                "rate": rate,
                "updates": args.updates,
                "call_timeout": args.call_timeout,
                "connect_rate": args.connect_rate / args.client_processes,
            }
        )
        position += share
    connect_budget = 30 + args.chargers / args.connect_rate * 2
    deadline = connect_budget + 300 + args.warmup + args.duration + args.call_timeout + 30
    with ClientGroup(throughput_worker, configs, cores, deadline) as clients:
        ready = clients.receive_all("ready", timeout=connect_budget)
        go = time.monotonic() + 0.5
        schedule = {
            "go": go,
            "measure_from": go + args.warmup,
            "end": go + args.warmup + args.duration,
        }
        clients.send_all("go", schedule)
        _sleep_until(schedule["measure_from"])
        server_before, clients_before = server.sample(), clients.sample()
        host_before = sample_host()
        _sleep_until(schedule["end"])
        server_after, clients_after = server.sample(), clients.sample()
        host = sample_host().usage_since(host_before)
        results = clients.receive_all("result", timeout=args.call_timeout + 30)
    latencies: list[float] = []
    timer_lags: list[float] = []
    for result in results:
        for key, target in (("latencies", latencies), ("timer_lags", timer_lags)):
            values = array("d")
            values.frombytes(result[key])
            target.extend(values)
    measured = sum(r["measured"] for r in results)
    elapsed = server_after.at - server_before.at
    server_cpu = server_after.cpu_since(server_before)
    for result in results:
        if result["first_failure"]:
            print(f"   connect failure, e.g.: {result['first_failure']}")
    return PhaseResult(
        server=label,
        mode=mode,
        offered_rate=rate,
        chargers=args.chargers,
        connected=sum(r["connected"] for r in ready),
        round_trips_per_second=measured / elapsed,
        latency_ms=latency_ms(latencies),
        client_timer_lag_ms=latency_ms(timer_lags),
        server_cores=server_cpu / elapsed,
        server_cpu_us_per_round_trip=server_cpu / max(1, measured) * 1e6,
        client_cores=clients_after.cores_since(clients_before),
        client_processes=args.client_processes,
        client_cores_available=len(cores),
        acked=sum(r["acked"] for r in results),
        call_errors=sum(r["call_errors"] for r in results),
        timeouts=sum(r["timeouts"] for r in results),
        disconnects=sum(r["disconnects"] for r in results),
        connect_failures=sum(r["connect_failures"] for r in results),
        host=host,
    )


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def stub_phase(
    kind: str,
    mode: str,
    args: argparse.Namespace,
    server_core: int,
    cores: list[int],
    durable: bool = False,
) -> PhaseResult:
    with Database(kind, args.postgres_url) as database:
        extra = ["--durable"] if durable else []
        stub = stub_process(server_core, database.url, database.schema, extra=extra)
        label = f"csms_stub/{kind}" + (" --durable" if durable else "")
        with stub:
            result = run_phase(stub, label, mode, args, cores)
            # The writer batches: give it a moment to catch up while the stub still runs.
            rows_live, waited = wait_for_count(
                database, "transaction_event", result.acked, timeout=30
            )
            stats = stub.get_json("/stats")
            returncode = stub.stop()
            log_tail = stub.log_tail(5)
        rows = database.count("transaction_event")
    unanswered = result.timeouts  # those TEs may or may not have been stored
    ok = result.acked <= rows <= result.acked + unanswered
    result.db_check = {
        "table": "transaction_event",
        "rows": rows,
        "acknowledged": result.acked,
        "unanswered": unanswered,
        "ok": ok,
        "rows_while_running": rows_live,
        "seconds_to_catch_up": round(waited, 2),
        "stub_exit_code": returncode,
        "stub_stats": stats,
    }
    if returncode not in (0, None) or not ok:
        print(f"   stub log tail:\n{log_tail}")
    return result


def baseline_phase(
    mode: str, args: argparse.Namespace, server_core: int, cores: list[int]
) -> PhaseResult:
    with baseline_process(server_core) as server:
        return run_phase(server, "baseline (raw websockets)", mode, args, cores)


def report(
    results: list[PhaseResult], args: argparse.Namespace, server_core: int, cores: list[int]
) -> None:
    rows = []
    for r in results:
        rows.append(
            [
                r.server,
                r.mode if r.mode == "saturate" else f"paced {r.offered_rate:g}/s",
                r.round_trips_per_second,
                r.latency_ms["p50"],
                r.latency_ms["p95"],
                r.latency_ms["p99"],
                r.client_timer_lag_ms["p99"],
                r.server_cores,
                r.server_cpu_us_per_round_trip,
                f"{r.client_cores:.2f}/{min(r.client_cores_available, r.client_processes)}"
                + (" (bound)" if r.client_bound else ""),
                " ".join(f"{b * 100:.0f}%" for b in r.host["core_busy"]),
                r.host["database_cores"],
                r.call_errors + r.timeouts + r.disconnects + r.connect_failures,
            ]
        )
    print_table(
        [
            "server",
            "load",
            "TE/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "clt lag p99",
            "srv cores",
            "srv CPU us/TE",
            "client cores",
            "core busy",
            "pg cores",
            "errors",
        ],
        rows,
        title=(
            f"TransactionEvent round trips: {args.chargers} chargers, {args.duration:g} s "
            f"measured after {args.warmup:g} s warm-up; server pinned to core {server_core}, "
            f"{args.client_processes} client process(es) pinned to core(s) "
            f"{','.join(map(str, cores))}"
        ),
    )
    print(
        "   'clt lag p99' (paced) = how late the clients' send timers fired, p99 in ms: "
        "large means the clients were starved of CPU and the latencies are not the server's; "
        "'srv cores' = CPU the server process used (1.0 = its whole core); 'client cores' = "
        "CPU the load clients used / cores they could use, '(bound)' = the clients, not the "
        "server, were the limit (the figure is a lower bound); 'core busy' = each core's "
        "busy time, whoever used it; 'pg cores' = CPU of all PostgreSQL server processes "
        "(shared machine: other users count too)."
    )
    for r in results:
        if r.db_check:
            c = r.db_check
            verdict = "OK" if c["ok"] else "MISMATCH"
            print(
                f"DB check {r.server} {r.mode}: {c['table']} rows = {c['rows']:,}, TEs "
                f"acknowledged = {c['acknowledged']:,}"
                + (f" (+{c['unanswered']} unanswered)" if c["unanswered"] else "")
                + f": {verdict}; {c['rows_while_running']:,} rows visible "
                f"{c['seconds_to_catch_up']:.2f} s after the load stopped, before the stub's "
                f"graceful stop (exit code {c['stub_exit_code']})"
            )
    baseline = {r.mode: r for r in results if r.server.startswith("baseline")}
    by_server = {(r.server, r.mode): r for r in results}
    print()
    for r in results:
        plain = by_server.get((r.server.removesuffix(" --durable"), r.mode))
        if r.server.endswith(" --durable") and plain is not None:
            print(
                f"{r.server} {r.mode}: {r.round_trips_per_second:,.0f} TE/s = "
                f"{r.round_trips_per_second / plain.round_trips_per_second:.2f} x without "
                f"--durable ({plain.round_trips_per_second:,.0f}/s); p95 "
                f"{r.latency_ms['p95']:.1f} ms vs {plain.latency_ms['p95']:.1f} ms"
            )
    for r in results:
        if r.server.startswith("baseline"):
            continue
        base = baseline.get(r.mode)
        if base is not None and r.mode == "saturate":
            own = r.server_cpu_us_per_round_trip - base.server_cpu_us_per_round_trip
            print(
                f"{r.server}: {r.round_trips_per_second:,.0f} TE/s = "
                f"{r.round_trips_per_second / base.round_trips_per_second:.2f} x baseline "
                f"({base.round_trips_per_second:,.0f}/s"
                + (", client-bound" if base.client_bound else "")
                + f"); server CPU per TE {r.server_cpu_us_per_round_trip:.0f} us = "
                f"{r.server_cpu_us_per_round_trip / base.server_cpu_us_per_round_trip:.1f} x "
                f"baseline ({base.server_cpu_us_per_round_trip:.0f} us): the stub's own work "
                f"is ~{own:.0f} us per TE"
            )
        if base is not None and r.mode == "paced":
            print(
                f"{r.server}: at {r.offered_rate:g} TE/s offered: {r.round_trips_per_second:,.0f} "
                f"TE/s, p95 {r.latency_ms['p95']:.1f} ms (baseline p95 "
                f"{base.latency_ms['p95']:.1f} ms = "
                f"{r.latency_ms['p95'] / base.latency_ms['p95']:.1f} x)"
            )
    print()
    for r in results:
        if r.server.startswith("baseline"):
            continue
        if r.mode == "saturate":
            ok = r.round_trips_per_second >= TARGET_RATE
            print(
                f"target >= {TARGET_RATE:,.0f} TE/s on one core, {r.server}: "
                f"{r.round_trips_per_second:,.0f} TE/s -> {'PASS' if ok else 'FAIL'}"
            )
        else:
            sustained = r.round_trips_per_second >= 0.98 * r.offered_rate
            fast = r.latency_ms["p95"] < TARGET_P95_MS
            print(
                f"target p95 < {TARGET_P95_MS:g} ms at {r.offered_rate:,.0f} TE/s, {r.server}: "
                f"{r.round_trips_per_second:,.0f} TE/s, p95 {r.latency_ms['p95']:.1f} ms -> "
                f"{'PASS' if sustained and fast else 'FAIL'}"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--updates", type=int, default=8, help="Updated events per transaction")
    parser.add_argument(
        "--mode",
        choices=("saturate", "paced", "both"),
        default="both",
        help="back to back, at --target-rate, or both (default)",
    )
    parser.add_argument("--target-rate", type=float, default=TARGET_RATE, help="TE/s for paced")
    parser.add_argument("--client-processes", type=int, default=1)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument(
        "--client-cores", type=int, nargs="*", help="default: every core but the server's"
    )
    parser.add_argument("--connect-rate", type=float, default=500.0, help="new connections/s")
    parser.add_argument("--call-timeout", type=float, default=10.0)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument(
        "--durable",
        choices=("off", "on", "both"),
        default="off",
        help="run the stub without --durable (default), with it, or both (to compare)",
    )
    parser.add_argument("--json", help="also write the figures to this file")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    server_core, cores = split_cores(args.server_core, args.client_cores)
    check_local_url(args.postgres_url)
    modes = ["saturate", "paced"] if args.mode == "both" else [args.mode]
    kinds = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    durables = {"off": [False], "on": [True], "both": [False, True]}[args.durable]
    phases = len(modes) * (len(kinds) * len(durables) + (0 if args.no_baseline else 1))
    per_phase = 120 + args.chargers / args.connect_rate * 2 + args.warmup + args.duration
    install_exit_handlers(phases * per_phase + 60)
    raise_nofile()
    os.sched_setaffinity(0, set(cores))  # keep this process off the server's core
    print(f"stub_throughput: {machine_note()}", flush=True)
    results: list[PhaseResult] = []
    if not args.no_baseline:
        for mode in modes:
            with phase(f"baseline, {mode}"):
                results.append(baseline_phase(mode, args, server_core, cores))
    for kind in kinds:
        for durable in durables:
            for mode in modes:
                name = f"csms_stub on {kind}{' --durable' if durable else ''}, {mode}"
                with phase(name):
                    results.append(stub_phase(kind, mode, args, server_core, cores, durable))
    report(results, args, server_core, cores)
    if args.json:
        with open(args.json, "w") as out:
            json.dump([asdict(r) for r in results], out, indent=2, default=str)
    return 0 if all(r.db_check.get("ok", True) for r in results) else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit("interrupted: servers and client processes stopped") from None
