"""How many idle chargers one Locust process holds, and how fast it connects them.

One plain headless ``locust`` process (``benchmarks/_locustfile_lag.py``: ``ChargerUser``
plus a timer-lag probe and a stepped load shape) pinned to ``--locust-core`` (default 1),
against ``_common.baseline``'s fast baseline server (``--replies ocpp``: schema-valid replies, no
state) pinned to ``--server-core`` (default 0), so the CSMS is not the limit:

1. **steps**: ``--ocpp-profile idle``, a Heartbeat every ``--heartbeat-interval`` s (time
   scale 1; default 20 s = the hold, so every charger, new ones included, heartbeats once
   per hold: 50 heartbeats/s per 1,000 chargers), users ramped at
   ``--spawn-rate`` in steps (default 1,000, 2,500, 5,000, 7,500, 10,000, up to
   ``--max-chargers``), each held ``--hold`` s. Per step: the hub's timer lag (a greenlet
   sleeping 50 ms in a loop: how late it wakes), the process's CPU and RSS (and RSS per
   charger over the empty process), the Heartbeat round trips from Locust's statistics,
   garbage-collector pauses. Target: p99 lag < 100 ms with 10,000 chargers. The ramp stops
   at the first step that misses it (``--keep-going`` to go on).
2. **spawn rate**: a fresh Locust process spawns ``--spawn-users`` (default
   ``--max-chargers``) at ``--spawn-rate`` (default and target 1,000/s, with timer lag p99
   < 100 ms) and again at each of ``--ceiling-rates`` (default 2,000/s): chargers connected
   *and booted* per second, from the times the BootNotification replies arrived, the timer
   lag meanwhile, and the process's CPU per charger. Each rate also runs unpaced (the spawn
   path before its tuning: batches started at once, no ``gc.freeze()``, an address lookup
   per connect; ``--no-unpaced`` skips it): the same run's baseline.
3. **baseline**: the raw asyncio client (``_common.charger.Charger``: ``websockets``, connect, boot,
   heartbeats at the same interval, no Locust) holding the same counts in one process on
   the same core: its RSS per connection and CPU, and the ratios.

    .venv/bin/python benchmarks/locust_worker.py                 # ~8 min
    .venv/bin/python benchmarks/locust_worker.py --max-chargers 5000 --hold 10 --no-baseline
    .venv/bin/python benchmarks/locust_worker.py --ocpp-version 2.1       # 2.1 chargers
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from _common.charger import Charger, freeze_gc, ramp
from _common.clients import ClientGroup, Control, run_worker
from _common.figures import latency_ms, machine_note, phase, print_table
from _common.machine import install_exit_handlers, raise_nofile, split_cores, wait_for_quiet
from _common.servers import ServerProcess, baseline_process

from loadgen.protocols import v201

LAG_TARGET_MS = 100.0
CHARGERS_TARGET = 10_000
SPAWN_TARGET = 1000.0
LOCUSTFILE = Path(__file__).resolve().parent / "_locustfile_lag.py"
MB = 2**20


def nan(value: Any) -> float:
    """A figure from a JSON result (None stands for NaN there)."""
    return float("nan") if value is None else float(value)


# -- what each core and the server did, sampled in a thread ----------------------------------


class Sampler(threading.Thread):
    """Every 0.25 s: the server's CPU and each core's busy time, stamped with
    ``time.perf_counter()`` (CLOCK_MONOTONIC on Linux, the same clock the Locust process
    and the asyncio client stamp their windows with), so any window can be looked up."""

    def __init__(self, server: ServerProcess, interval: float = 0.25) -> None:
        super().__init__(daemon=True, name="sampler")
        self.server = server
        self.interval = interval
        self.samples: list[tuple[float, float, list[tuple[float, float]]]] = []
        self._halt = threading.Event()

    def sample(self) -> None:
        server = self.server.sample()
        cores = []
        for times in psutil.cpu_times(percpu=True):
            total = sum(times)
            cores.append((total - times.idle - getattr(times, "iowait", 0.0), total))
        self.samples.append((time.perf_counter(), server.cpu_seconds, cores))

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            with contextlib.suppress(psutil.Error):
                self.sample()

    def __enter__(self) -> Sampler:
        self.sample()
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._halt.set()
        self.join(2)

    def _at(self, t: float) -> tuple[float, float, list[tuple[float, float]]]:
        return min(self.samples, key=lambda s: abs(s[0] - t))

    def window(self, start: float, end: float) -> dict[str, Any]:
        """The server's cores and each core's busy fraction between two instants."""
        a, b = self._at(start), self._at(end)
        if b[0] - a[0] < self.interval / 2:
            return {"server_cores": float("nan"), "core_busy": []}
        seconds = b[0] - a[0]
        busy = [
            (b1 - b0) / max(1e-9, t1 - t0) for (b0, t0), (b1, t1) in zip(a[2], b[2], strict=True)
        ]
        return {"server_cores": (b[1] - a[1]) / seconds, "core_busy": busy}


# -- the Locust runs ---------------------------------------------------------------------


def locust_run(
    server: ServerProcess,
    steps: list[int],
    spawn_rate: float,
    hold: float,
    settle: float,
    args: argparse.Namespace,
    name: str,
    unpaced: bool = False,
) -> dict[str, Any]:
    """One headless Locust process through ``steps``; its result and Locust's own stats.
    ``unpaced``: the spawn path as it was (``_locustfile_lag.py --lag-unpaced``)."""
    spawned = sum(max(0, b - a) for a, b in zip([0, *steps], steps, strict=False))
    budget = len(steps) * (32 + settle + hold) + 3 * spawned / spawn_rate + 30
    with tempfile.TemporaryDirectory(prefix="bench-locust-") as tmp:
        stats_file = os.path.join(tmp, "stats")
        argv = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--host",
            server.url,
            "--ocpp-profile",
            "idle",
            "--fleet-size",
            str(max(steps)),
            "--heartbeat-interval",
            str(args.heartbeat_interval),
            "--time-scale",
            "1",
            "--spawn-rate",
            f"{spawn_rate:g}",
            "--lag-steps",
            ",".join(map(str, steps)),
            "--lag-hold",
            f"{hold:g}",
            "--lag-settle",
            f"{settle:g}",
            "--lag-limit-ms",
            f"{args.lag_limit_ms:g}",
            "--lag-budget",
            f"{budget:.0f}",
            "--only-summary",
            "--loglevel",
            "WARNING",
            "--exit-code-on-error",
            "0",
            "--json-file",
            stats_file,
            "--prometheus-port",  # no /metrics server: it would listen on 0.0.0.0
            "0",
            "--ocpp-version",
            args.ocpp_version,
        ]
        if args.keep_going:
            argv.append("--lag-keep-going")
        if unpaced:
            argv.append("--lag-unpaced")
        result = run_worker(argv, [args.locust_core], budget + 120, name)
        with open(stats_file + ".json") as f:
            result["locust_stats"] = json.load(f)
    return result


def histogram_percentile(times: dict[int, int], count: int, fraction: float) -> int:
    """Locust's ``calculate_response_time_percentile`` (importing ``locust`` here would
    monkey-patch this process with gevent)."""
    keep = int(count * fraction)
    seen = 0
    for value in sorted(times, reverse=True):
        seen += times[value]
        if count - seen <= keep:
            return value
    return 0


def locust_entry(stats: list[dict[str, Any]], method: str, name: str) -> dict[str, Any]:
    """One entry of Locust's ``--json-file``: requests, failures, percentiles (ms)."""
    for entry in stats:
        if entry["method"] == method and entry["name"] == name:
            times = {int(float(k)): v for k, v in entry["response_times"].items()}
            n = entry["num_requests"]
            return {
                "requests": n,
                "failures": entry["num_failures"],
                **{
                    f"p{q}": float(histogram_percentile(times, n, q / 100)) if n else float("nan")
                    for q in (50, 95, 99)
                },
                "max": entry["max_response_time"] if n else float("nan"),
            }
    return {"requests": 0, "failures": 0} | dict.fromkeys(
        ("p50", "p95", "p99", "max"), float("nan")
    )


# -- the baseline: the raw asyncio client (runs in a ClientGroup process) --------------------


def usage() -> dict[str, float]:
    times = os.times()
    return {
        "at": time.perf_counter(),
        "cpu": times.user + times.system,
        "rss": psutil.Process().memory_info().rss,
    }


async def asyncio_worker(control: Control, config: dict[str, Any]) -> list[dict[str, Any]]:
    """Hold ``steps`` idle connections (connect, boot, heartbeat), measured like Locust."""
    url, interval, timeout = config["url"], config["heartbeat_interval"], 30.0
    prefix = f"aio-{uuid.uuid4().hex[:6]}"
    perf = time.perf_counter
    lags, hb_rtt = array("d"), array("d")
    totals = {"heartbeat_failures": 0, "connect_failures": 0}
    chargers: list[Charger] = []
    tasks: list[asyncio.Task[None]] = []

    async def probe(period: float) -> None:
        while True:
            began = perf()
            await asyncio.sleep(period)
            lags.append(perf() - began - period)

    async def heartbeats(charger: Charger) -> None:
        due = perf() + interval
        while True:
            await asyncio.sleep(max(0.0, due - perf()))
            began = perf()
            try:
                await charger.call(*v201.heartbeat(), timeout)
            except Exception:  # counted; a closed connection ends the loop
                totals["heartbeat_failures"] += 1
                if charger.ws.state.name != "OPEN":
                    return
            else:
                hb_rtt.append(perf() - began)
            due += interval

    async def start(i: int) -> None:
        charger_id = f"{prefix}-{i:05d}"
        charger = await Charger.connect(url, charger_id, timeout=timeout)
        await charger.call(*v201.boot_notification("Bench", "Idle-1", charger_id, "1.0"), timeout)
        chargers.append(charger)
        tasks.append(asyncio.create_task(heartbeats(charger)))

    probe_task = asyncio.create_task(probe(0.05))
    control.send("ready")
    await control.receive("go", timeout=300)
    results = []
    for target in config["steps"]:
        began, have = perf(), len(chargers)
        lag_from = len(lags)
        outcomes = await ramp(
            max(0, target - have), config["spawn_rate"], lambda i, have=have: start(have + i)
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        totals["connect_failures"] += len(failures)
        ramp_seconds = perf() - began
        ramp_lag = latency_ms(lags[lag_from:])
        freeze_gc()  # as every _common load client does once its connections are up
        await asyncio.sleep(config["settle"])
        before, lag_from, hb_from = usage(), len(lags), len(hb_rtt)
        await asyncio.sleep(config["hold"])
        after = usage()
        lag = latency_ms(lags[lag_from:])
        rtts = hb_rtt[hb_from:]
        results.append(
            {
                "target": target,
                "connected": len(chargers),
                **totals,
                "first_failure": repr(failures[0]) if failures else None,
                "spawn": {"seconds": ramp_seconds, "lag_ms": ramp_lag},
                "hold": {
                    "window": [before["at"], after["at"]],
                    "seconds": after["at"] - before["at"],
                    "lag_ms": lag,
                    "cpu_cores": (after["cpu"] - before["cpu"]) / (after["at"] - before["at"]),
                    "rss": after["rss"],
                    "heartbeats": len(rtts),
                    "heartbeat_ms": latency_ms(rtts),
                },
            }
        )
        print(
            f"   [asyncio] {len(chargers):,} connections held {after['at'] - before['at']:.0f} "
            f"s: lag p99 {lag['p99']:.1f} ms, "
            f"{results[-1]['hold']['cpu_cores']:.2f} cores, RSS {after['rss'] / MB:.0f} MB",
            file=sys.stderr,
            flush=True,
        )
    probe_task.cancel()
    return results


def asyncio_run(server: ServerProcess, steps: list[int], args: argparse.Namespace) -> Any:
    config = {
        "url": server.url,
        "steps": steps,
        "spawn_rate": args.spawn_rate,
        "heartbeat_interval": args.heartbeat_interval,
        "settle": args.settle,
        "hold": args.hold,
    }
    budget = len(steps) * (30 + args.settle + args.hold) + 3 * max(steps) / args.spawn_rate
    with ClientGroup(asyncio_worker, [config], [args.locust_core], budget + 60) as clients:
        clients.receive_all("ready", timeout=60)
        clients.send_all("go")
        return clients.receive_all("result", timeout=budget + 60)[0]


# -- the report ------------------------------------------------------------------------------


def report_steps(
    run: dict[str, Any], aio: list[dict[str, Any]] | None, args: argparse.Namespace
) -> int:
    steps = run["steps"]
    rss0 = steps[0]["hold"]["rss"] if steps and steps[0]["target"] == 0 else float("nan")
    aio_by_target = {r["target"]: r for r in aio or []}
    aio_rss0 = aio_by_target[0]["hold"]["rss"] if 0 in aio_by_target else float("nan")
    rows, best = [], 0
    for s in steps:
        h, users = s["hold"], s["users"]
        lag = h["lag_ms"]
        kb = (h["rss"] - rss0) / users / 1024 if users else float("nan")
        ok = nan(lag["p99"]) < args.lag_limit_ms and s["booted_total"] >= s["target"]
        if ok:
            best = max(best, users)
        gc2 = h["gc"]["gen2_ms"]
        rows.append(
            [
                users,
                s["booted_total"],
                nan(lag["p50"]),
                nan(lag["p99"]),
                nan(lag["max"]),
                h["cpu_cores"],
                h["rss"] / MB,
                kb,
                h["heartbeats"] / h["seconds"],
                nan(h["heartbeat_ms"]["p50"]),
                nan(h["heartbeat_ms"]["p99"]),
                f"{len(gc2)} / {max(gc2, default=0):.0f}",
                h["sampled"]["server_cores"],
                " ".join(f"{b * 100:.0f}%" for b in h["sampled"]["core_busy"]),
                "ok" if ok else "MISSED",
            ]
        )
    print_table(
        [
            "users",
            "booted",
            "lag p50",
            "lag p99",
            "lag max",
            "cores",
            "RSS MB",
            "KB/charger",
            "HB/s",
            "HB p50",
            "HB p99",
            "gen2 GCs/max ms",
            "srv cores",
            "core busy",
            "p99<limit",
        ],
        rows,
        title=(
            f"One Locust process (core {args.locust_core}), idle chargers, Heartbeat every "
            f"{args.heartbeat_interval:g} s, spawn {args.spawn_rate:g}/s, each step held "
            f"{args.hold:g} s; fast baseline server on core {args.server_core}"
        ),
    )
    print(
        "   lag = how late a 50 ms sleep in the Locust process woke (ms, during the hold); "
        "cores/RSS = the Locust process; KB/charger = (RSS - RSS at 0 users) / users; HB = "
        "Heartbeat round trips from Locust's stats (ms, 1 ms resolution); gen2 GCs = full "
        "collections during the hold and the longest (ms); core busy = each core, anyone's use"
    )
    if aio:
        rows = []
        for r in aio:
            h = r["hold"]
            kb = (h["rss"] - aio_rss0) / r["connected"] / 1024 if r["connected"] else float("nan")
            rows.append(
                [
                    r["connected"],
                    nan(h["lag_ms"]["p99"]),
                    nan(h["lag_ms"]["max"]),
                    h["cpu_cores"],
                    h["rss"] / MB,
                    kb,
                    h["heartbeats"] / h["seconds"],
                    nan(h["heartbeat_ms"]["p50"]),
                    nan(h["heartbeat_ms"]["p99"]),
                    r["connect_failures"] + r["heartbeat_failures"],
                ]
            )
        print_table(
            [
                "connections",
                "lag p99",
                "lag max",
                "cores",
                "RSS MB",
                "KB/conn",
                "HB/s",
                "HB p50",
                "HB p99",
                "errors",
            ],
            rows,
            title="Baseline: the raw asyncio client (_common.charger), same steps, same core",
        )
        print()
        for s in steps:
            r = aio_by_target.get(s["target"])
            if not s["users"] or r is None or not r["connected"]:
                continue
            kb = (s["hold"]["rss"] - rss0) / s["users"] / 1024
            kb_aio = (r["hold"]["rss"] - aio_rss0) / r["connected"] / 1024
            print(
                f"{s['users']:>6,} chargers: Locust {kb:.1f} KB/charger = {kb / kb_aio:.1f} x "
                f"asyncio ({kb_aio:.1f} KB); CPU {s['hold']['cpu_cores']:.3f} vs "
                f"{r['hold']['cpu_cores']:.3f} cores = "
                f"{s['hold']['cpu_cores'] / max(1e-9, r['hold']['cpu_cores']):.1f} x"
            )
    overall = run.get("overall", {})
    if overall:
        hb = overall["heartbeat"]
        print(
            f"\nLocust's own stats (--json-file, whole run): {hb['requests']:,} heartbeats, "
            f"{hb['failures']} failed, p50/p95/p99 {hb['p50']:.0f}/{hb.get('p95', 0):.0f}/"
            f"{hb['p99']:.0f} ms; connects {overall['connect']['requests']:,} "
            f"({overall['connect']['failures']} failed, p99 {overall['connect']['p99']:.0f} "
            f"ms); BootNotification p99 {overall['boot']['p99']:.0f} ms"
        )
    met = best >= CHARGERS_TARGET
    print(
        f"\nChargers per process with p99 timer lag < {args.lag_limit_ms:g} ms: {best:,} "
        f"(target {CHARGERS_TARGET:,}: {'met' if met else 'MISSED'})"
    )
    return 0 if met else 1


def spawn_cpu_us(sp: dict[str, Any]) -> float:
    """The Locust process's CPU per charger booted during a spawn, µs."""
    seconds = sp["window"][1] - sp["window"][0]
    return sp["cpu_cores"] * seconds / sp["booted"] * 1e6 if sp["booted"] else float("nan")


def report_spawn(runs: list[dict[str, Any]], args: argparse.Namespace) -> int:
    rows = []
    for run in runs:
        s = run["steps"][-1]
        sp = s["spawn"]
        rows.append(
            [
                "unpaced" if run["unpaced"] else "paced",
                f"{run['spawn_rate']:g}/s",
                sp["users"],
                sp["booted"],
                sp["seconds"],
                nan(sp.get("rate")),
                nan(sp.get("steady_rate")),
                nan(sp["lag_ms"]["p99"]),
                nan(sp["lag_ms"]["max"]),
                spawn_cpu_us(sp),
                sp["cpu_cores"],
                sp["gc"]["total_ms"],
                sp["sampled"]["server_cores"],
                " ".join(f"{b * 100:.0f}%" for b in sp["sampled"]["core_busy"]),
                s["boot_failures"] + s["connect_failures"],
                run["overall"]["connect"]["p99"],
                run["overall"]["boot"]["p99"],
            ]
        )
    print_table(
        [
            "generator",
            "asked",
            "users",
            "booted",
            "all booted s",
            "rate /s",
            "steady /s",
            "lag p99",
            "lag max",
            "CPU us/charger",
            "cores",
            "GC ms",
            "srv cores",
            "core busy",
            "errors",
            "connect p99",
            "boot p99",
        ],
        rows,
        title="Spawn rate: a fresh Locust process spawning chargers from 0 (connected + booted)",
    )
    print(
        "   rate = booted / (last BootNotification reply - start of the spawn); steady = the "
        "same between the 10th and 90th percentile boots; lag = how late a 50 ms sleep woke "
        "while spawning (every connected charger's timers wait as long); CPU us/charger = the "
        "Locust process's CPU during the spawn / chargers booted; GC ms = time in the "
        "collector during the spawn; unpaced = the same process with each batch started at "
        "once, no gc.freeze(), an address lookup per connect (the spawn path before)"
    )
    by_rate: dict[float, dict[bool, dict[str, Any]]] = {}
    for run in runs:
        by_rate.setdefault(run["spawn_rate"], {})[run["unpaced"]] = run["steps"][-1]["spawn"]
    for rate, pair in by_rate.items():
        if True in pair and False in pair:
            new, old = pair[False], pair[True]
            print(
                f"{rate:>6g}/s: paced / unpaced: CPU per charger {spawn_cpu_us(new):,.0f} / "
                f"{spawn_cpu_us(old):,.0f} us = {spawn_cpu_us(new) / spawn_cpu_us(old):.2f} x; "
                f"steady rate {nan(new.get('steady_rate')):,.0f} / "
                f"{nan(old.get('steady_rate')):,.0f} /s; lag p99 "
                f"{nan(new['lag_ms']['p99']):.0f} / {nan(old['lag_ms']['p99']):.0f} ms"
            )
    best: tuple[float, float, float] | None = None  # (steady rate, asked, lag p99)
    for run in runs:
        if run["unpaced"]:
            continue
        sp = run["steps"][-1]["spawn"]
        achieved, lag = nan(sp.get("steady_rate")), nan(sp["lag_ms"]["p99"])
        kept = sp["booted"] >= sp["users"] and lag < args.lag_limit_ms
        if kept and (best is None or achieved > best[0]):
            best = (achieved, run["spawn_rate"], lag)
        if run["spawn_rate"] == args.spawn_rate:
            print(
                f"\nSpawn rate at --spawn-rate {args.spawn_rate:g}: {achieved:,.0f} chargers/s "
                f"connected and booted (steady), timer lag p99 {lag:.0f} ms; "
                f"{spawn_cpu_us(sp):,.0f} us of CPU per charger: "
                f"~{1e6 / spawn_cpu_us(sp):,.0f}/s on one free core"
            )
    # What one process can do: the most it connected and booted while its connected
    # chargers' timers stayed within the lag limit (asking exactly the target gives a little
    # less: Locust's own batches start late).
    met = best is not None and best[0] >= 0.95 * SPAWN_TARGET
    said = (
        "none within the lag limit"
        if best is None
        else (f"{best[0]:,.0f} chargers/s steady at {best[1]:g}/s asked, lag p99 {best[2]:.0f} ms")
    )
    print(
        f"The most one process connected and booted with timer lag p99 < "
        f"{args.lag_limit_ms:g} ms: {said} (target {SPAWN_TARGET:,.0f}/s: "
        f"{'met' if met else 'MISSED'})"
    )
    return 0 if met else 1


# -- main ------------------------------------------------------------------------------------


@contextlib.contextmanager
def baseline_server(args: argparse.Namespace) -> Iterator[tuple[ServerProcess, Sampler]]:
    with (
        baseline_process(
            args.server_core, replies="ocpp", heartbeat_interval=int(args.heartbeat_interval)
        ) as server,
        Sampler(server) as sampler,
    ):
        yield server, sampler


def annotate(run: dict[str, Any], sampler: Sampler) -> None:
    """Add the server's CPU and the cores' busy time to each window of a Locust run."""
    for s in run["steps"]:
        for key in ("spawn", "hold"):
            s[key]["sampled"] = sampler.window(*s[key]["window"])
    stats = run.pop("locust_stats")
    run["overall"] = {
        "heartbeat": locust_entry(stats, "OCPP", "Heartbeat"),
        "boot": locust_entry(stats, "OCPP", "BootNotification"),
        "connect": locust_entry(stats, "WebSocket", "connect"),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-chargers", type=int, default=CHARGERS_TARGET)
    parser.add_argument(
        "--steps",
        type=int,
        nargs="+",
        default=[1000, 2500, 5000, 7500, 10_000],
        help="user counts (those above --max-chargers are dropped, --max-chargers is added)",
    )
    parser.add_argument("--hold", type=float, default=20.0, help="seconds measured per step")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before each hold")
    parser.add_argument("--spawn-rate", type=float, default=SPAWN_TARGET, help="users/s")
    parser.add_argument(
        "--ceiling-rates",
        type=float,
        nargs="*",
        default=[2000.0],
        help="also spawn at these rates, to find the ceiling (none: don't)",
    )
    parser.add_argument("--spawn-users", type=int, help="default: --max-chargers")
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=20.0,
        help="seconds, time scale 1 (default 20: one heartbeat per charger per 20 s hold)",
    )
    parser.add_argument("--lag-limit-ms", type=float, default=LAG_TARGET_MS)
    parser.add_argument(
        "--ocpp-version",
        default="2.0.1",
        choices=["2.1", "2.0.1", "1.6"],
        help="what the Locust chargers speak (the asyncio baseline speaks 2.0.1)",
    )
    parser.add_argument("--keep-going", action="store_true", help="don't stop at a missed step")
    parser.add_argument(
        "--no-unpaced",
        action="store_true",
        help="skip the spawn runs of the unpaced generator (the spawn phase's baseline)",
    )
    parser.add_argument("--no-spawn", action="store_true", help="skip the spawn-rate runs")
    parser.add_argument("--no-baseline", action="store_true", help="skip the asyncio client")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--locust-core", type=int, default=1)
    parser.add_argument(
        "--quiet-wait", type=float, default=30.0, help="seconds to wait for an idle CPU first"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    server_core, _ = split_cores(args.server_core, [args.locust_core])
    steps = sorted({n for n in args.steps if 0 < n <= args.max_chargers} | {args.max_chargers})
    steps = [0, *steps]
    spawn_users = args.spawn_users or args.max_chargers
    rates = [args.spawn_rate, *(r for r in args.ceiling_rates if r > 0)]
    per_step = 35 + args.settle + args.hold
    budget = (
        len(steps) * per_step * (1 if args.no_baseline else 2)
        + 4 * args.max_chargers / args.spawn_rate * (1 if args.no_baseline else 2)
        + (0 if args.no_spawn else sum(70 + 3 * spawn_users / r for r in rates))
        * (1 if args.no_unpaced else 2)
        + 4 * (args.quiet_wait + 60)
    )
    if args.hold < args.heartbeat_interval:
        print(
            f"note: --hold {args.hold:g} < --heartbeat-interval {args.heartbeat_interval:g}: "
            "the chargers a step adds may send no heartbeat during its hold"
        )
    install_exit_handlers(budget)
    limit = raise_nofile(20_000)  # the servers and Locust inherit it
    if limit < max(args.max_chargers, spawn_users) + 500:
        raise SystemExit(f"open-file limit {limit} is too low for {args.max_chargers} chargers")
    # This process only waits and samples: keep it off the measured core.
    os.sched_setaffinity(0, {server_core})
    print(
        f"locust_worker: {machine_note()}; open-file limit {limit}; OCPP "
        f"{args.ocpp_version}; Locust on core {args.locust_core}, server on core "
        f"{server_core}; budget {budget:.0f} s",
        flush=True,
    )
    figures: dict[str, Any] = {"args": vars(args)}
    status = 0

    wait_for_quiet(args.quiet_wait)
    with (
        phase(f"Locust, steps {', '.join(f'{n:,}' for n in steps)}"),
        baseline_server(args) as (server, sampler),
    ):
        run = locust_run(
            server, steps, args.spawn_rate, args.hold, args.settle, args, "Locust (steps)"
        )
        time.sleep(0.5)
        annotate(run, sampler)
    figures["steps"] = run
    aio = None
    if not args.no_baseline:
        wait_for_quiet(args.quiet_wait)
        held = [s["target"] for s in run["steps"]]  # the steps Locust got through
        with phase("baseline: raw asyncio client"), baseline_server(args) as (server, _):
            aio = asyncio_run(server, held, args)
        figures["asyncio"] = aio
    spawn_runs = []
    if not args.no_spawn:
        for rate in rates:
            for unpaced in (False,) if args.no_unpaced else (True, False):
                wait_for_quiet(args.quiet_wait)
                kind = "unpaced" if unpaced else "paced"
                with (
                    phase(f"Locust ({kind}), spawn {spawn_users:,} at {rate:g}/s"),
                    baseline_server(args) as (server, sampler),
                ):
                    spawn = locust_run(
                        server, [0, spawn_users], rate, 5.0, 1.0, args, "Locust (spawn)", unpaced
                    )
                    time.sleep(0.5)
                    annotate(spawn, sampler)
                spawn["unpaced"] = unpaced
                spawn_runs.append(spawn)
        figures["spawn"] = spawn_runs
    print(f"\nlocust_worker: {machine_note()}")
    status |= report_steps(run, aio, args)
    if spawn_runs:
        status |= report_spawn(spawn_runs, args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=2, default=str)
    return status


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # every subprocess was stopped on the way out
        print("interrupted: servers and Locust stopped", file=sys.stderr)
        raise SystemExit(130) from None
