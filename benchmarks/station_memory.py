"""Resident memory per idle connected station in one load-generator process.

For each ``--chargers`` count (default 1,000 and 5,000) a fresh gevent process pinned to one
core (the first of ``--client-cores``, default: every core but ``--server-core``) connects
that many of one kind of thing to a CSMS pinned to ``--server-core``, waits ``--duration``
seconds, and reports its resident set size (``psutil``, after ``gc.collect()``) before and
after, per connection = (after - before) / N, with the live greenlets and Python objects per
connection. Kinds, each in its own process so that no run reuses another's freed memory:

- ``raw socket``: a gevent socket that did the WebSocket handshake by hand, nothing else
  (no protocol object, no greenlet): the floor of any client;
- ``Link``: a bare :class:`loadgen.link.Link`, connected (``websockets`` sans-I/O protocol,
  an I/O watcher, no greenlet), no station: what the link costs;
- ``Station``: a real :class:`~loadgen.station.Station` driven by a
  :class:`~loadgen.runner.StationRunner` over its link: booted (Accepted), StatusNotification
  sent, heartbeats every ``--heartbeat-interval`` seconds (long: the station is idle);
  ``Station - Link`` is what the station and its runner add.

The CSMS is ``_common.baseline``'s fast baseline server (``--replies ocpp``: schema-valid replies,
no state), so the CSMS is not the limit; the Station kind runs against ``csms_stub`` too
(SQLite) unless ``--no-stub``. "Before" is measured once ``--warmup`` objects of the kind
are already connected, so one-time costs (imports, first-use caches) are not charged per
connection. Target: at most 50 KB per idle station (docs/design.md's floor: ~16-24 KB).
Several ``--ocpp-version`` values measure each in turn against the same servers and compare
each station with the first version's (``--ocpp-version 2.0.1 2.1``: what 2.1 costs).

    .venv/bin/python benchmarks/station_memory.py --chargers 1000 5000
    .venv/bin/python benchmarks/station_memory.py --chargers 1000 --ocpp-version 2.0.1 2.1
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import os
import sys
import time
import uuid
from typing import Any

import orjson
import psutil
from _common.clients import run_worker
from _common.databases import Database
from _common.figures import machine_note, phase, print_table
from _common.machine import install_exit_handlers, raise_nofile, split_cores
from _common.servers import ServerProcess, baseline_process, stub_process

TARGET_KB = 50.0
KINDS = {"raw": "raw socket", "link": "Link", "station": "Station"}


def progress(text: str) -> None:
    print(f"   {text}", file=sys.stderr, flush=True)


# -- the worker (a fresh gevent process per kind and count) ----------------------------------


def memory_worker(config: dict[str, Any]) -> dict[str, Any]:
    import gevent
    import gevent.pool
    import gevent.socket
    import greenlet

    from loadgen.fleet import Charger
    from loadgen.link import ConnectFailed, Link
    from loadgen.ocppj import CallErrorReply, ErrorCode
    from loadgen.physics import ScaledClock
    from loadgen.protocols import get_version
    from loadgen.runner import StationRunner
    from loadgen.station import Station, StationConfig

    kind, url, prefix = config["kind"], config["url"], config["prefix"]
    version = get_version(config["version"])
    host, port = url.removeprefix("ws://").split(":")
    me = psutil.Process()
    clock = ScaledClock(1.0)
    held: list[Any] = []
    failures: list[str] = []
    deadline = time.monotonic() + config["connect_timeout"]

    class Handler:
        def on_call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
            raise CallErrorReply(ErrorCode.NOT_IMPLEMENTED, action)

        def on_disconnect(self, code: int | None, reason: str) -> None:
            pass

    handler = Handler()

    def open_raw(charger_id: str) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET /{charger_id} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {version.subprotocol}\r\n\r\n"
        ).encode()
        sock = gevent.socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(request)
        response = b""
        while b"\r\n\r\n" not in response:
            data = sock.recv(4096)
            if not data:
                raise ConnectionError("closed during the handshake")
            response += data
        if not response.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(response.split(b"\r\n", 1)[0].decode(errors="replace"))
        sock.settimeout(None)
        held.append(sock)

    def open_link(charger_id: str) -> None:
        link = Link(f"{url}/{charger_id}", version, handler)
        link.connect()
        held.append(link)

    station_config = StationConfig(heartbeat_interval=config["heartbeat_interval"])

    def open_station(charger_id: str) -> None:
        charger = Charger(charger_id, "bench", 22_000.0, serial_number=charger_id)
        station = Station(charger, version, clock, station_config)
        runner = StationRunner(station, url, clock=clock)
        runner.start()
        held.append(runner)
        while not (station.accepted and station.settled):
            if runner.failed or time.monotonic() > deadline:
                raise ConnectionError(runner.failed or "not booted in time")
            gevent.sleep(0.02)

    opener = {"raw": open_raw, "link": open_link, "station": open_station}[kind]

    def open_one(charger_id: str) -> None:
        try:
            opener(charger_id)
        except (OSError, ConnectFailed) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")

    def open_many(first: int, count: int) -> None:
        pool = gevent.pool.Pool(config["connect_concurrency"])
        for i in range(first, first + count):
            pool.spawn(open_one, f"{prefix}-{i:05d}")
        if not pool.join(timeout=max(1.0, deadline - time.monotonic())):
            raise TimeoutError(f"connecting {count} took longer than the connect budget")

    def live_greenlets(objects: list[Any]) -> int:
        return sum(1 for o in objects if isinstance(o, greenlet.greenlet) and not o.dead)

    def measure() -> dict[str, Any]:
        gc.collect()
        rss = me.memory_info().rss  # before gc.get_objects() allocates its list
        objects = gc.get_objects()
        figures = {"rss": rss, "objects": len(objects), "greenlets": live_greenlets(objects)}
        del objects
        loop = gevent.get_hub().loop
        figures["watchers"] = getattr(loop, "activecnt", -1)  # active libev watchers
        return figures

    def connected() -> int:
        if kind == "raw":
            return sum(1 for sock in held if sock.fileno() >= 0)
        if kind == "link":
            return sum(1 for link in held if link.connected)
        return sum(
            1
            for runner in held
            if runner.link is not None and runner.link.connected and runner.station.accepted
        )

    warmup = config["warmup"]
    open_many(0, warmup)
    gevent.sleep(0.5)
    before = measure()
    began = time.monotonic()
    open_many(warmup, config["chargers"])
    connect_seconds = time.monotonic() - began
    progress(f"{kind}: {len(held) - warmup} connected in {connect_seconds:.1f} s")
    gevent.sleep(config["duration"])  # idle: nothing is due (long heartbeat interval)
    after = measure()
    n = config["chargers"]
    return {
        "kind": kind,
        "chargers": n,
        "connected": connected() - warmup,
        "connect_failures": len(failures),
        "first_failure": failures[0] if failures else None,
        "connect_seconds": connect_seconds,
        "rss_before": before["rss"],
        "rss_after": after["rss"],
        "kb_per_connection": (after["rss"] - before["rss"]) / n / 1024,
        "greenlets_per_connection": (after["greenlets"] - before["greenlets"]) / n,
        "objects_per_connection": (after["objects"] - before["objects"]) / n,
        "watchers_per_connection": (after["watchers"] - before["watchers"]) / n,
    }


def worker_main(config: dict[str, Any]) -> None:
    raise_nofile(20_000)
    # 127.0.0.1 needs no resolver threads; with the default (a thread pool) the pool's
    # threads and their greenlets come and go between the two measurements.
    os.environ.setdefault("GEVENT_RESOLVER", "block")
    result = memory_worker(config)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # the connections close with the process


# -- the benchmark side ----------------------------------------------------------------------


def run_kind(
    kind: str, chargers: int, server: ServerProcess, args: argparse.Namespace, version: str
) -> dict[str, Any]:
    config = {
        "kind": kind,
        "url": server.url,
        "prefix": f"mem-{kind}-{uuid.uuid4().hex[:6]}",
        "version": version,
        "chargers": chargers,
        "warmup": args.warmup,
        "duration": args.duration,
        "heartbeat_interval": args.heartbeat_interval,
        "connect_concurrency": args.connect_concurrency,
        "connect_timeout": 60 + chargers / 20,
    }
    argv = [sys.executable, os.path.abspath(__file__), "--worker", orjson.dumps(config).decode()]
    timeout = config["connect_timeout"] + args.duration + 60
    result = run_worker(argv, [args.cores[0]], timeout, f"{KINDS[kind]} worker")
    result["server"] = server.name
    result["server_rss"] = server.sample().rss
    result["version"] = version
    return result


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> int:
    mb = 2**20
    rows = []
    for r in results:
        label = KINDS[r["kind"]] + (" (csms_stub)" if r["server"] == "csms_stub" else "")
        rows.append(
            [
                label,
                r["version"],
                r["chargers"],
                r["connected"],
                r["rss_before"] / mb,
                r["rss_after"] / mb,
                r["kb_per_connection"],
                r["greenlets_per_connection"],
                r["watchers_per_connection"],
                r["objects_per_connection"],
                r["connect_seconds"],
            ]
        )
    print_table(
        [
            "kind",
            "OCPP",
            "N",
            "connected",
            "RSS before MB",
            "RSS after MB",
            "KB each",
            "greenlets each",
            "watchers each",
            "objects each",
            "connect s",
        ],
        rows,
        title=(
            f"Idle connections in one gevent process (core {args.cores[0]}), CSMS on core "
            f"{args.server_core}, measured after {args.duration:g} s idle"
        ),
    )
    status = 0
    for version, n in ((v, n) for v in args.ocpp_version for n in args.chargers):
        by_kind = {
            r["kind"]: r
            for r in results
            if r["chargers"] == n and r["server"] != "csms_stub" and r["version"] == version
        }
        station, link, raw = by_kind.get("station"), by_kind.get("link"), by_kind.get("raw")
        parts = []
        if station is not None:
            kb = station["kb_per_connection"]
            verdict = "met" if kb <= TARGET_KB else "MISSED"
            status |= kb > TARGET_KB
            parts.append(f"station {kb:.1f} KB (target <= {TARGET_KB:g} KB: {verdict})")
            if link is not None:
                parts.append(
                    f"= {kb / link['kb_per_connection']:.2f} x a bare Link; the station and "
                    f"runner add {kb - link['kb_per_connection']:.1f} KB"
                )
        if link is not None and raw is not None:
            parts.append(
                f"a Link costs {link['kb_per_connection']:.1f} KB = "
                f"{link['kb_per_connection'] - raw['kb_per_connection']:.1f} KB over a raw "
                f"socket ({raw['kb_per_connection']:.1f} KB)"
            )
        if parts:
            print(f"\nOCPP {version}, N = {n:,}: " + "; ".join(parts))
    status |= compare_versions(results, args)
    for r in results:
        if r["connected"] < r["chargers"]:
            print(
                f"{KINDS[r['kind']]} {r['version']} on {r['server']}, N = {r['chargers']:,}: only "
                f"{r['connected']:,} connected ({r['connect_failures']} failed, e.g. "
                f"{r['first_failure']})"
            )
            status = 1
    return status


def compare_versions(results: list[dict[str, Any]], args: argparse.Namespace) -> int:
    """Each further ``--ocpp-version``'s stations against the first's, measured in the same
    run on the same server (the per-charger figures must hold across versions)."""
    baseline, *others = args.ocpp_version
    status = 0
    for version in others:
        for n in args.chargers:
            for server in sorted({r["server"] for r in results}):
                pair = {
                    r["version"]: r
                    for r in results
                    if r["kind"] == "station" and r["chargers"] == n and r["server"] == server
                }
                if baseline not in pair or version not in pair:
                    continue
                kb = pair[version]["kb_per_connection"]
                base_kb = pair[baseline]["kb_per_connection"]
                verdict = "met" if kb <= TARGET_KB else "MISSED"
                status |= kb > TARGET_KB
                print(
                    f"OCPP {version} vs {baseline} station, N = {n:,}, {server}: {kb:.1f} KB vs "
                    f"{base_kb:.1f} KB = {kb / base_kb:.2f} x (target <= {TARGET_KB:g} KB: "
                    f"{verdict}); objects {pair[version]['objects_per_connection']:.0f} vs "
                    f"{pair[baseline]['objects_per_connection']:.0f}"
                )
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chargers", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--kinds", nargs="+", choices=list(KINDS), default=list(KINDS), help="what to connect"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds idle before measuring")
    parser.add_argument("--warmup", type=int, default=50, help="connections before 'before'")
    parser.add_argument("--heartbeat-interval", type=int, default=600, help="seconds")
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument(
        "--ocpp-version",
        nargs="+",
        default=["2.0.1"],
        choices=["2.1", "2.0.1", "1.6"],
        help="each measured in turn; the first is the baseline of the others (2.0.1 2.1)",
    )
    parser.add_argument("--no-stub", action="store_true", help="skip the csms_stub run")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument(
        "--client-cores", type=int, nargs="*", help="default: every core but the server's"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one measurement
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.worker:
        worker_main(orjson.loads(args.worker))
    args.server_core, args.cores = split_cores(args.server_core, args.client_cores)
    limit = raise_nofile(20_000)  # the servers inherit it
    if limit < max(args.chargers) + args.warmup + 100:
        raise SystemExit(f"open-file limit {limit} is too low for {max(args.chargers)} chargers")
    stub = "station" in args.kinds and not args.no_stub
    runs = (len(args.kinds) + (1 if stub else 0)) * len(args.ocpp_version)
    budget = sum(runs * (180 + n / 20 + args.duration) for n in args.chargers)
    install_exit_handlers(budget + 60)
    os.sched_setaffinity(0, set(args.cores))  # keep this process off the server's core
    print(f"station_memory: {machine_note()}; open-file limit {limit}", flush=True)
    results: list[dict[str, Any]] = []
    with baseline_process(
        args.server_core, replies="ocpp", heartbeat_interval=args.heartbeat_interval
    ) as server:
        for n in args.chargers:
            for kind in args.kinds:
                for version in args.ocpp_version:
                    with phase(f"{KINDS[kind]} x {n:,}, OCPP {version}, fast server"):
                        results.append(run_kind(kind, n, server, args, version))
    if stub:
        for n, version in ((n, v) for n in args.chargers for v in args.ocpp_version):
            with (
                phase(f"Station x {n:,}, OCPP {version}, csms_stub (SQLite)"),
                Database("sqlite") as database,
                stub_process(
                    args.server_core,
                    database.url,
                    heartbeat_interval=args.heartbeat_interval,
                ) as server,
            ):
                results.append(run_kind("station", n, server, args, version))
    status = report(results, args)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return status


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:  # every subprocess was stopped on the way out
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
