"""Prometheus metrics: the observer fed by a real station, link and runner; worker snapshots
merged on the master; the HTTP exporter on gevent; bounded label cardinality; the lag probe.

Everything runs on real sockets on 127.0.0.1 (the fake CSMS, the exporter) and gevent
without monkey patching, so HTTP clients here are cooperative: gevent sockets in a
greenlet, or a separate process.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
import timeit
from typing import Any

import gevent
import gevent.socket
import gevent.subprocess
import msgpack
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.server import ServerConnection

from loadgen import fleet as fleets
from loadgen.capacity.judgement import ActionStats, bucket_percentile
from loadgen.capacity.measure import measure
from loadgen.metrics import CALL_BUCKETS, LAG_BUCKETS, SPECS
from loadgen.metrics.collectors import Metrics
from loadgen.metrics.exporter import serve
from loadgen.metrics.labels import (
    COORDINATION_OPERATIONS,
    PROTOCOL_ERROR_KINDS,
    RECONNECT_REASONS,
    SITE_STATES,
    reconnect_reason,
)
from loadgen.metrics.merge import MergedCollector
from loadgen.metrics.observer import MetricsObserver
from loadgen.metrics.probe import LagProbe
from loadgen.physics import FakeClock, ScaledClock
from loadgen.protocols import OCPP201, VERSIONS, schemas
from loadgen.runner import RetryBackOff, StationRunner
from loadgen.station import Station, StationConfig
from tests.conftest import free_port
from tests.fake_csms import FakeCsms, csms_call, wait_for

P = "ocpp_loadgen_"
NOW = "2026-01-01T00:00:00.000Z"

#: the metric table the project started with: the public contract (docs/design.md lists all)
DESIGN_METRICS = {
    "ocpp_loadgen_call_duration_seconds",
    "ocpp_loadgen_call_errors_total",
    "ocpp_loadgen_csms_calls_total",
    "ocpp_loadgen_messages_total",
    "ocpp_loadgen_connect_duration_seconds",
    "ocpp_loadgen_chargers_connected",
    "ocpp_loadgen_chargers_connected_peak",
    "ocpp_loadgen_chargers_target",
    "ocpp_loadgen_site_chargers",
    "ocpp_loadgen_transactions_active",
    "ocpp_loadgen_transactions_total",
    "ocpp_loadgen_energy_delivered_wh_total",
    "ocpp_loadgen_power_w",
    "ocpp_loadgen_reconnects_total",
    "ocpp_loadgen_disconnects_total",
    "ocpp_loadgen_offline_queue_depth",
    "ocpp_loadgen_schedule_lag_seconds",
    "ocpp_loadgen_capacity_max_chargers",
    # issue 11: booted beside connected, the connect-rate answer beside max_chargers
    "ocpp_loadgen_chargers_booted",
    "ocpp_loadgen_capacity_max_connect_rate",
}
DESIGN_LABELS = {
    "ocpp_loadgen_call_duration_seconds": ("action", "outcome"),
    "ocpp_loadgen_call_errors_total": ("action", "error_code"),
    "ocpp_loadgen_csms_calls_total": ("action", "status"),
    "ocpp_loadgen_messages_total": ("direction", "type"),
    "ocpp_loadgen_connect_duration_seconds": ("outcome",),
    "ocpp_loadgen_site_chargers": ("site", "lat", "lon", "state"),
    "ocpp_loadgen_transactions_total": ("outcome",),
    "ocpp_loadgen_energy_delivered_wh_total": ("site",),
    "ocpp_loadgen_power_w": ("site",),
    "ocpp_loadgen_reconnects_total": ("reason",),
    "ocpp_loadgen_disconnects_total": ("reason",),
    "ocpp_loadgen_schedule_lag_seconds": ("worker",),
}


def value(metrics: Metrics, name: str, **labels: str) -> float:
    """A sample of ``metrics``' registry; 0 when the series does not exist (yet)."""
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def fetch(url_host: str, port: int, path: str = "/metrics") -> tuple[str, str]:
    """GET over a gevent socket (cooperative without monkey patching): (status line, body)."""
    sock = gevent.socket.create_connection((url_host, port), timeout=10)
    try:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {url_host}\r\n\r\n".encode())
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    finally:
        sock.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0].decode(), body.decode()


def families(text: str) -> dict[str, Any]:
    parsed = {}
    for family in text_string_to_metric_families(text):
        name = family.name + "_total" if family.type == "counter" else family.name
        parsed[name] = family
    return parsed


# -- the spec is the contract --------------------------------------------------------------


def test_the_specs_hold_every_metric_of_the_design_with_its_labels() -> None:
    specs = {spec.name: spec for spec in SPECS}
    assert set(specs) >= DESIGN_METRICS
    for name in DESIGN_METRICS:
        assert specs[name].labels == DESIGN_LABELS.get(name, ()), name
    assert specs[f"{P}call_duration_seconds"].kind == "histogram"
    assert CALL_BUCKETS[0] == 0.001 and CALL_BUCKETS[-1] == 60.0
    assert all(not spec.labels or "charger" not in " ".join(spec.labels) for spec in SPECS)


# -- the observer, fed the way the Locust layer feeds it -----------------------------------


async def friendly(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
    if call[2] == "BootNotification":
        await csms.answer(ws, call, {"currentTime": NOW, "interval": 300, "status": "Accepted"})
    elif call[2] == "Heartbeat":
        await csms.answer(ws, call, {"currentTime": NOW})
    elif call[2] == "Authorize":
        await csms.error(ws, call, "SecurityError", "no such card")
    else:
        await csms.answer(ws, call, {})


def test_observer_follows_a_real_station_over_a_real_link() -> None:
    fleet = fleets.load(fleets.SEED_FLEET)
    charger = fleet.chargers["emart_jeju_01"]
    site = fleet.sites[charger.site_id]
    metrics = Metrics(worker="w1")
    observer = MetricsObserver(metrics, fleet.sites)
    clock = ScaledClock(60)  # meter values every 30 simulated s: every 0.5 s
    station = Station(
        charger,
        OCPP201,
        clock,
        StationConfig(meter_interval=30),
        listener=lambda kind, detail: observer.station_event(charger.id, kind, detail),
    )
    observer.add_station(station)
    where = {"site": site.id, "lat": "33.5115", "lon": "126.522"}  # the fleet's own figures
    assert (float(where["lat"]), float(where["lon"])) == (site.lat, site.lon)

    def state(name: str) -> float:
        return value(metrics, f"{P}site_chargers", **where, state=name)

    assert state("offline") == 1
    with FakeCsms(friendly) as csms:
        runner = StationRunner(
            station,
            csms.url.rsplit("/", 1)[0],
            clock=clock,
            backoff=RetryBackOff(0.05, 0.0, cap=0.1),
            call_timeout=2,
            observer=observer,
            on_event=lambda kind, detail: observer.runner_event(detail["charger_id"], kind, detail),
            link_factory=observer.link_factory(),
        )
        runner.start()
        wait_for(lambda: station.accepted and station.settled, timeout=10)
        assert state("available") == 1 and state("offline") == 0
        assert value(metrics, f"{P}chargers_connected") == 1
        assert value(metrics, f"{P}chargers_booted") == 1

        # The CSMS answers Authorize with a CALLERROR: no verdict, no transaction.
        station.start_session(1, "token_user_001", authorize=True)
        runner.wake()
        wait_for(
            lambda: value(
                metrics, f"{P}call_errors_total", action="Authorize", error_code="SecurityError"
            )
        )
        wait_for(lambda: station.free_evse() is not None)
        assert value(metrics, f"{P}transactions_active") == 0
        # A session without Authorize (the CSMS judges the token in TransactionEvent).
        station.start_session(1, "token_user_001")
        runner.wake()
        wait_for(lambda: value(metrics, f"{P}energy_delivered_wh_total", site=site.id) > 0)
        assert state("charging") == 1
        assert value(metrics, f"{P}transactions_active") == 1
        assert value(metrics, f"{P}power_w", site=site.id) > 0

        # The CSMS asks things: one the station does, one it does not know.
        csms.push(csms_call("m1", "TriggerMessage", {"requestedMessage": "Heartbeat"}))
        csms.push(csms_call("m2", "NoSuchAction", {}))
        wait_for(lambda: value(metrics, f"{P}csms_calls_total", action="Other", status="error"))
        assert value(metrics, f"{P}csms_calls_total", action="TriggerMessage", status="Accepted")

        station.stop_session(1)
        runner.wake()
        wait_for(lambda: value(metrics, f"{P}transactions_total", outcome="completed") == 1)
        assert value(metrics, f"{P}transactions_active") == 0
        assert value(metrics, f"{P}power_w", site=site.id) == 0
        energy = value(metrics, f"{P}energy_delivered_wh_total", site=site.id)
        assert energy == pytest.approx(station.completed[0].energy_wh)

        csms.close_with(1011, "going down")
        wait_for(lambda: value(metrics, f"{P}reconnects_total", reason="closed_by_server") == 1)
        wait_for(lambda: station.accepted)
        wait_for(lambda: value(metrics, f"{P}chargers_booted") == 1)  # booted again
        runner.stop(timeout=5)
    observer.remove_station(charger.id)
    assert value(metrics, f"{P}chargers_booted") == 0

    assert value(metrics, f"{P}disconnects_total", reason="closed_by_server") == 1
    assert value(metrics, f"{P}disconnects_total", reason="closed") == 1
    assert value(metrics, f"{P}chargers_connected") == 0
    assert value(metrics, f"{P}chargers_connected_peak") == 1
    assert value(metrics, f"{P}connect_duration_seconds_count", outcome="ok") == 2
    boots = value(
        metrics, f"{P}call_duration_seconds_count", action="BootNotification", outcome="result"
    )
    assert boots == 2
    assert value(
        metrics, f"{P}call_duration_seconds_count", action="Authorize", outcome="error"
    ) == value(metrics, f"{P}call_errors_total", action="Authorize", error_code="SecurityError")
    assert value(metrics, f"{P}call_errors_total", action="Authorize", error_code="SecurityError")
    sent_calls = value(metrics, f"{P}messages_total", direction="sent", type="call")
    actions = ("BootNotification", "StatusNotification", "Authorize", "TransactionEvent")
    answered = sum(
        value(metrics, f"{P}call_duration_seconds_count", action=action, outcome=outcome)
        for action in (*actions, "Heartbeat")  # the TriggerMessage made one
        for outcome in ("result", "error")
    )
    assert sent_calls == answered
    assert value(metrics, f"{P}messages_total", direction="received", type="call") == 2
    assert value(metrics, f"{P}messages_total", direction="sent", type="error") == 1
    assert all(state(name) == 0 for name in SITE_STATES)  # removed: no longer on the map


def test_offline_queue_transactions_dropped_and_unacknowledged() -> None:
    fleet = fleets.generate(3, sites=1)
    metrics = Metrics()
    observer = MetricsObserver(metrics, fleet.sites)
    clock = FakeClock()
    stations = {}
    for charger in fleet.chargers.values():
        stations[charger.id] = station = Station(
            charger,
            OCPP201,
            clock,
            StationConfig(meter_interval=60, max_attempts=1),
            listener=lambda kind, detail, cid=charger.id: observer.station_event(cid, kind, detail),
        )
        observer.add_station(station)
    # Offline: transactions run and their messages queue up.
    for station in stations.values():
        station.start_session(1, "tok")
    clock.advance(120)
    for station in stations.values():
        station.tick()
    expected = sum(station.queue_depth for station in stations.values())
    assert expected >= 6
    snapshot = metrics.snapshot()
    assert snapshot["metrics"][f"{P}offline_queue_depth"] == [[float(expected)]]
    assert value(metrics, f"{P}transactions_active") == 3

    first, second, third = stations.values()
    # first: online, its Ended event is refused and given up (max_attempts=1)
    first.stop_session(1)
    first.on_connected()
    boot = first.next_call()
    assert boot is not None
    first.on_call_result(boot, {"status": "Accepted", "interval": 300, "currentTime": NOW})
    while (call := first.next_call()) is not None:
        if call.action == "TransactionEvent" and call.payload["eventType"] == "Ended":
            first.on_call_failed(call, "error", "InternalError")
        else:
            first.on_call_result(call, {})
        clock.advance(1)
    assert value(metrics, f"{P}transactions_total", outcome="dropped") == 1
    assert value(metrics, f"{P}dropped_messages_total", action="TransactionEvent") == 1
    # second: ended but never acknowledged before its user went away
    second.stop_session(1)
    observer.remove_station(second.charger.id)
    assert value(metrics, f"{P}transactions_total", outcome="unacknowledged") == 1
    # third: still running when removed (a lost lease): no longer active
    observer.remove_station(third.charger.id)
    assert value(metrics, f"{P}transactions_active") == 0
    assert value(metrics, f"{P}transactions_total", outcome="completed") == 0


def test_the_csms_verdicts_on_id_tokens_are_counted() -> None:
    """By status and message; a 1.6 transaction the CSMS gave no id is not "unacknowledged",
    a 2.0.1 one it deauthorized ends "completed" (the CSMS acknowledged its Ended)."""
    from loadgen.protocols import OCPP16
    from loadgen.station import NO_TRANSACTION_ID
    from tests.station_driver import MemoryCsms, drive

    fleet = fleets.generate(4, sites=1)
    metrics = Metrics()
    observer = MetricsObserver(metrics, fleet.sites)
    clock = FakeClock()
    ids = list(fleet.chargers)
    replies = {
        ids[0]: (OCPP201, "Authorize", {"idTokenInfo": {"status": "NotAtThisTime"}}),
        ids[1]: (OCPP201, "TransactionEvent", {"idTokenInfo": {"status": "Blocked"}}),
        ids[2]: (
            OCPP16,
            "StartTransaction",
            {"transactionId": 0, "idTagInfo": {"status": "Invalid"}},
        ),
        # Accepted, but no id to use: no acceptance
        ids[3]: (
            OCPP16,
            "StartTransaction",
            {"transactionId": 0, "idTagInfo": {"status": "Accepted"}},
        ),
    }
    for charger_id, (version, action, reply) in replies.items():
        station = Station(
            fleet.chargers[charger_id],
            version,
            clock,
            listener=lambda kind, detail, cid=charger_id: observer.station_event(cid, kind, detail),
        )
        observer.add_station(station)
        csms = MemoryCsms(version)
        csms.responders[action] = lambda payload, reply=reply: reply
        station.on_connected()
        drive(station, csms)
        station.start_session(1, "tok", authorize=action == "Authorize")
        drive(station, csms)
        observer.remove_station(charger_id)
    counted = {
        (status, message): value(
            metrics, f"{P}authorizations_total", status=status, message=message
        )
        for status, message in [
            ("NotAtThisTime", "Authorize"),
            ("Blocked", "TransactionEvent"),
            ("Invalid", "StartTransaction"),
            (NO_TRANSACTION_ID, "StartTransaction"),
            ("Accepted", "StartTransaction"),
        ]
    }
    assert counted == {key: 0.0 if key[0] == "Accepted" else 1.0 for key in counted}
    assert value(metrics, f"{P}transactions_total", outcome="completed") == 1
    assert value(metrics, f"{P}transactions_total", outcome="unacknowledged") == 0
    assert value(metrics, f"{P}transactions_active") == 0


def test_reconnect_reasons_come_from_the_links_wording() -> None:
    assert reconnect_reason("closed by the CSMS: 1011 going down") == "closed_by_server"
    assert reconnect_reason("closed by the station: 1000 reconnecting") == "reset"
    assert reconnect_reason("closed by the station: 1000 station stopped") == "closed"
    assert reconnect_reason("connection lost: [Errno 104] reset by peer") == "connection_lost"
    assert reconnect_reason("a write was interrupted") == "connection_lost"
    assert reconnect_reason("message_too_big: over 1 MiB") == "message_too_big"
    assert reconnect_reason("websocket_protocol_error: bad opcode") == "websocket_protocol_error"
    assert reconnect_reason("internal error in the link") == "internal_error"
    assert reconnect_reason("something new") == "other"


# -- snapshots and the master's merge ------------------------------------------------------


def worker_metrics(worker: str, latencies: list[float], connects: int, drops: int) -> Metrics:
    metrics = Metrics(worker=worker)
    observer = MetricsObserver(metrics)
    for seconds in latencies:
        observer.call_done("Heartbeat", "result", seconds, None)
        observer.message("sent", "call")
        observer.message("received", "result")
    observer.call_done("Authorize", "error", 0.2, "SecurityError")
    for _ in range(connects):
        observer.connect_done("ok", 0.01)
    for _ in range(drops):
        observer.disconnected("connection_lost")
    return metrics


def shipped(metrics: Metrics) -> dict[str, Any]:
    """A snapshot as the master receives it: through msgpack (Locust's wire) and JSON."""
    snapshot = metrics.snapshot()
    snapshot = msgpack.loads(msgpack.dumps(snapshot), raw=False, strict_map_key=False)
    return json.loads(json.dumps(snapshot, allow_nan=False))


def bucket(merged: dict[str, Any], name: str, key: tuple[str, ...], le: float) -> float:
    counts, _ = merged[name][key]
    return counts[CALL_BUCKETS.index(le)]


def test_two_workers_merge_histograms_counters_and_gauges() -> None:
    a = worker_metrics("a", [0.004, 0.02, 0.3], connects=5, drops=2)  # peak 5, now 3
    b = worker_metrics("b", [0.004, 45.0], connects=4, drops=0)  # peak 4, now 4
    master = Metrics(worker="master")
    master.set_target(100)
    master.set_capacity(42)
    master.set_connect_rate(22.5)
    a.chargers_booted.set(3)
    b.chargers_booted.set(2)
    merged_collector = MergedCollector(master)
    merged_collector.update("a", shipped(a))
    merged_collector.update("b", shipped(b))
    merged = merged_collector.merged()

    key = ("Heartbeat", "result")
    counts, total = merged[f"{P}call_duration_seconds"][key]
    assert counts[-1] == 5  # +Inf: every observation
    assert bucket(merged, f"{P}call_duration_seconds", key, 0.005) == 2
    assert bucket(merged, f"{P}call_duration_seconds", key, 0.025) == 3
    assert bucket(merged, f"{P}call_duration_seconds", key, 30.0) == 4
    assert total == pytest.approx(0.004 + 0.02 + 0.3 + 0.004 + 45.0)
    assert merged[f"{P}call_errors_total"][("Authorize", "SecurityError")] == 2
    assert merged[f"{P}messages_total"][("sent", "call")] == 5
    assert merged[f"{P}connect_duration_seconds"][("ok",)][0][-1] == 9
    assert merged[f"{P}disconnects_total"][("connection_lost",)] == 2
    assert merged[f"{P}chargers_connected"][()] == 7  # gauges add
    assert merged[f"{P}chargers_connected_peak"][()] == 7  # not 5 + 4: the most at once
    assert merged[f"{P}chargers_target"][()] == 100  # max: the master's setting
    assert merged[f"{P}capacity_max_chargers"][()] == 42
    assert merged[f"{P}chargers_booted"][()] == 5  # added like connected
    assert merged[f"{P}capacity_max_connect_rate"][()] == 22.5  # the master's answer
    assert sorted(merged_collector.workers) == ["a", "b"]


def counter_total(collector: MergedCollector) -> float:
    merged = collector.merged()
    return sum(merged.get(f"{P}messages_total", {}).values()) + sum(
        counts[-1] for counts, _ in merged.get(f"{P}call_duration_seconds", {}).values()
    )


def test_a_departed_worker_leaves_the_gauges_but_not_the_counters() -> None:
    now = [1000.0]
    collector = MergedCollector(stale_after=10.0, clock=lambda: now[0])
    a = worker_metrics("a", [0.01] * 3, connects=3, drops=0)
    b = worker_metrics("b", [0.01] * 5, connects=5, drops=0)
    collector.update("a", shipped(a))
    collector.update("b", shipped(b))
    seen = [counter_total(collector)]
    assert collector.merged()[f"{P}chargers_connected"][()] == 8

    # b stops reporting: after stale_after it no longer counts towards the gauges
    now[0] += 11
    collector.update("a", shipped(a))
    merged = collector.merged()
    assert collector.workers == ["a"]
    assert merged[f"{P}chargers_connected"][()] == 3
    assert merged[f"{P}chargers_connected_peak"][()] == 8  # the run's peak stays
    assert merged[f"{P}call_duration_seconds"][("Heartbeat", "result")][0][-1] == 8
    seen.append(counter_total(collector))

    # b (the same process) comes back with more: counted once, not on top of its past
    observer_b = MetricsObserver(b)
    observer_b.call_done("Heartbeat", "result", 0.01, None)
    collector.update("b", shipped(b))
    merged = collector.merged()
    assert merged[f"{P}call_duration_seconds"][("Heartbeat", "result")][0][-1] == 9
    seen.append(counter_total(collector))

    # a quits (forget), and a new process takes its id: its counters start from zero
    collector.forget("a")
    assert collector.merged()[f"{P}chargers_connected"][()] == 5
    seen.append(counter_total(collector))
    a2 = worker_metrics("a", [0.01], connects=1, drops=0)
    collector.update("a", shipped(a2))
    merged = collector.merged()
    assert merged[f"{P}call_duration_seconds"][("Heartbeat", "result")][0][-1] == 10
    assert merged[f"{P}chargers_connected"][()] == 6
    seen.append(counter_total(collector))

    # retain(): the master's list of live workers
    collector.retain(["a"])
    assert collector.workers == ["a"]
    seen.append(counter_total(collector))
    assert seen == sorted(seen), f"counters went down: {seen}"


def test_departed_workers_fold_into_a_base_beyond_the_limit() -> None:
    collector = MergedCollector(stale_after=None)
    collector.max_departed = 2
    for n in range(5):
        worker = worker_metrics(f"w{n}", [0.01], connects=1, drops=0)
        collector.update(f"w{n}", shipped(worker))
        collector.forget(f"w{n}")
    merged = collector.merged()
    assert merged[f"{P}call_duration_seconds"][("Heartbeat", "result")][0][-1] == 5
    assert merged[f"{P}call_errors_total"][("Authorize", "SecurityError")] == 5
    assert not merged.get(f"{P}chargers_connected")  # no live worker: no gauge values
    assert merged[f"{P}chargers_connected_peak"][()] == 1


def test_broken_snapshots_are_ignored() -> None:
    collector = MergedCollector()
    collector.update("x", None)
    collector.update("x", {"v": 999, "metrics": {}})
    collector.update("y", {"v": 1, "epoch": "e", "metrics": {f"{P}messages_total": [["sent"]]}})
    collector.update(
        "z",
        {"v": 1, "epoch": "e", "metrics": {f"{P}call_duration_seconds": [["A", "result", [1], 1]]}},
    )
    merged = collector.merged()
    assert not merged.get(f"{P}messages_total") and not merged.get(f"{P}call_duration_seconds")


# -- HTTP ----------------------------------------------------------------------------------


def test_exporter_serves_every_metric_of_the_design() -> None:
    assert serve(Metrics(), port=0) is None  # --prometheus-port 0
    a = worker_metrics("a", [0.004, 0.02], connects=2, drops=0)
    b = worker_metrics("b", [0.5], connects=1, drops=1)
    observer = MetricsObserver(b, fleets.generate(2).sites)
    observer.add_station(Station(fleets.generate(2).chargers["CP000001"], OCPP201, FakeClock()))
    collector = MergedCollector(Metrics(worker="master"))
    collector.update("a", shipped(a))
    collector.update("b", shipped(b))
    port = free_port()
    exporter = serve(collector, port=port, host="127.0.0.1")
    assert exporter is not None
    try:
        status, body = fetch("127.0.0.1", port)
        _, only = fetch("127.0.0.1", port, f"/metrics?name[]={P}chargers_target")
    finally:
        exporter.stop()
    assert set(families(only)) == {f"{P}chargers_target"}  # Prometheus' name[] filter
    assert status.endswith("200 OK")
    parsed = families(body)
    assert set(parsed) >= DESIGN_METRICS
    heartbeat = {
        sample.labels["le"]: sample.value
        for sample in parsed[f"{P}call_duration_seconds"].samples
        if sample.name.endswith("_bucket")
        and (sample.labels["action"], sample.labels["outcome"]) == ("Heartbeat", "result")
    }
    assert heartbeat["0.005"] == 1 and heartbeat["0.025"] == 2 and heartbeat["+Inf"] == 3
    gauges = {s.name: s.value for s in parsed[f"{P}chargers_connected"].samples}
    assert gauges == {f"{P}chargers_connected": 2.0}
    site = [s.labels for s in parsed[f"{P}site_chargers"].samples if s.value == 1]
    assert site == [
        {"site": "emart_shinjeju", "lat": "33.4872", "lon": "126.4896", "state": "offline"}
    ]
    # no _created series: the master renders from snapshots, and so does a single process
    assert "_created" not in body


def test_a_single_process_serves_its_own_metrics_while_the_hub_is_busy() -> None:
    metrics = worker_metrics("local", [0.01], connects=1, drops=0)
    port = free_port()
    exporter = serve(metrics, port=port, host="127.0.0.1")
    assert exporter is not None and exporter.url == f"http://127.0.0.1:{port}/metrics"
    script = (
        "import sys, urllib.request; "
        "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=20).read().decode())"
    )
    try:
        client = gevent.subprocess.Popen(
            [sys.executable, "-c", script, exporter.url], stdout=gevent.subprocess.PIPE
        )
        # A busy hub: CPU work in 20 ms slices, yielding in between (as chargers do).
        started = time.monotonic()
        while client.poll() is None:
            assert time.monotonic() - started < 30, "no answer from the exporter"
            until = time.perf_counter() + 0.02
            while time.perf_counter() < until:
                pass
            gevent.sleep(0)
        body, _ = client.communicate()
    finally:
        exporter.stop()
    assert client.returncode == 0
    parsed = families(body.decode())
    assert set(parsed) >= DESIGN_METRICS
    assert parsed[f"{P}chargers_connected"].samples[0].value == 1


# -- cardinality ---------------------------------------------------------------------------


def test_label_cardinality_stays_bounded() -> None:
    rng = random.Random(6)
    fleet = fleets.generate(10_000)
    metrics = Metrics(worker="w")
    observer = MetricsObserver(metrics, fleet.sites)
    clock = FakeClock()
    ids = list(fleet.chargers)
    for charger_id in ids:
        observer.add_station(Station(fleet.chargers[charger_id], OCPP201, clock))

    def junk() -> str:
        return "".join(rng.choice("abcdefXYZ_-0123456789") for _ in range(rng.randint(1, 20)))

    actions = ["Heartbeat", "BootNotification", "TransactionEvent", "StatusNotification"]
    for n, charger_id in enumerate(ids):
        action = rng.choice(actions) if n % 2 else junk()
        observer.call_done(action, rng.choice(["result", "error", "timeout", junk()]), 0.01, None)
        observer.call_done(action, "error", 0.01, rng.choice(["GenericError", junk()]))
        observer.connect_done(rng.choice(["ok", "refused", f"http_{rng.randint(100, 599)}"]), 0.1)
        observer.connect_done(junk(), 0.1)
        observer.disconnected(rng.choice(["closed", junk()]))
        observer.protocol_error(junk())
        observer.csms_call(rng.choice(["Reset", junk()]), rng.choice(["Accepted", junk()]))
        observer.runner_event(charger_id, "connected", {"charger_id": charger_id, "count": 2})
        observer.station_event(charger_id, "boot", {"status": "Accepted"})
        status = {"evse_id": 1, "connector_id": 1, "status": rng.choice(["Faulted", junk()])}
        observer.station_event(charger_id, "status", status)
        observer.station_event(charger_id, "dropped", {"action": junk(), "payload": {}})
        verdict = {"status": rng.choice(["Invalid", junk()]), "message": junk()}
        observer.station_event(charger_id, "authorization", verdict)
        reason = f"closed by the CSMS: {rng.randint(1000, 4999)} {junk()}"
        observer.runner_event(charger_id, "disconnected", {"reason": reason})
        observer.runner_event(junk(), "connected", {"count": 1})  # unknown chargers: ignored
        observer.station_event(junk(), "boot", {"status": "Accepted"})
    snapshot = metrics.snapshot()
    charger_ids = set(ids)
    limits = {
        f"{P}call_duration_seconds": 5 * 4,  # 4 actions + Other, 4 outcomes
        f"{P}call_errors_total": 5 * 2,
        f"{P}connect_duration_seconds": 20,
        f"{P}disconnects_total": 7,
        # closed label sets, all exported from the start at 0
        f"{P}protocol_errors_total": len(PROTOCOL_ERROR_KINDS) + 1,
        f"{P}coordination_failures_total": len(COORDINATION_OPERATIONS) + 1,
        f"{P}csms_calls_total": 4,
        f"{P}site_chargers": 5 * len(SITE_STATES),
        f"{P}reconnects_total": len(RECONNECT_REASONS),
        f"{P}dropped_messages_total": 1,
        f"{P}authorizations_total": 2,  # Invalid and Other, from Other messages
    }
    for name, series in snapshot["metrics"].items():
        assert len(series) <= limits.get(name, 10), (name, len(series))
        for row in series:
            assert not charger_ids & {v for v in row if isinstance(v, str)}, name
    assert sum(row[-1] for row in snapshot["metrics"][f"{P}site_chargers"]) == 10_000
    assert value(metrics, f"{P}reconnects_total", reason="other") == 10_000
    # the observer's caches stay bounded too (junk is resolved, never remembered)
    assert len(observer._durations) <= 4 and len(observer._errors) <= 4
    assert len(observer._connects) <= 64 and len(observer._csms_calls) <= 1


# -- the load generator's own health ------------------------------------------------------


def test_lag_probe_sees_a_blocked_hub() -> None:
    metrics = Metrics(worker="w7")
    probe = LagProbe(metrics, interval=0.01, cpu_window=0.1).start()
    try:
        gevent.sleep(0.05)
        until = time.perf_counter() + 0.3
        while time.perf_counter() < until:  # blocks the hub: no greenlet runs
            pass
        gevent.sleep(0.05)
    finally:
        probe.stop()
    name = f"{P}schedule_lag_seconds"
    count = value(metrics, f"{name}_count", worker="w7")
    assert count >= 3
    assert value(metrics, f"{name}_sum", worker="w7") >= 0.25
    assert value(metrics, f"{name}_bucket", worker="w7", le="0.1") < count  # one was late
    assert value(metrics, f"{P}worker_cpu_ratio", worker="w7") > 0.3


def test_hot_path_overhead_is_small() -> None:
    """A CALL costs the observer one call_done and two message()s; report and bound it."""
    metrics = Metrics()
    observer = MetricsObserver(metrics)
    observer.call_done("Heartbeat", "result", 0.012, None)  # warm the caches

    def one_call() -> None:
        observer.message("sent", "call")
        observer.call_done("Heartbeat", "result", 0.012, None)
        observer.message("received", "result")

    n = 20_000
    per_call = min(timeit.repeat(one_call, number=n, repeat=3)) / n
    print(f"metrics per CALL: {per_call * 1e6:.2f} µs")
    assert per_call < 20e-6  # generous: ~2 µs here; the whole round trip costs ~40 µs


# -- measuring an interval: two merged views -> one capacity step ---------------------------


def expected_ms(samples: list[float], q: float, bounds: tuple[float, ...] = CALL_BUCKETS) -> float:
    """The percentile ``measure`` must report for ``samples`` (seconds): Prometheus's
    cumulative buckets of them, interpolated by ``capacity.bucket_percentile``, in ms."""
    cumulative = [(bound, float(sum(s <= bound for s in samples))) for bound in bounds]
    cumulative.append((math.inf, float(len(samples))))
    found = bucket_percentile(cumulative, q)
    assert found is not None
    return found * 1000


def observe_lag(metrics: Metrics, samples: list[float]) -> None:
    child = metrics.schedule_lag.labels(metrics.worker)
    for seconds in samples:
        child.observe(seconds)


def test_measure_turns_two_merged_views_into_a_step() -> None:
    local = Metrics(worker="master")
    observer = MetricsObserver(local)
    w2 = Metrics(worker="w2")
    w2_observer = MetricsObserver(w2)
    collector = MergedCollector(local, stale_after=None)

    # before the interval: none of this may count
    for _ in range(5):
        observer.call_done("Heartbeat", "result", 0.01, None)
        observer.connect_done("ok", 0.01)
        observer.message("sent", "call")
    observer.call_done("Authorize", "error", 0.2, "SecurityError")
    observer.call_done("Heartbeat", "timeout", 30.0, None)
    observer.connect_done("refused", 0.01)
    observer.disconnected("connection_lost")
    observe_lag(local, [2.0] * 10)  # a terrible lag, but before the interval
    w2_observer.call_done("Heartbeat", "result", 0.01, None)
    observe_lag(w2, [0.5])
    collector.update("w2", shipped(w2))
    before = collector.merged()

    # the interval
    heartbeat_results = [0.004] * 17 + [0.02, 0.3, 0.3]
    for seconds in heartbeat_results:
        observer.call_done("Heartbeat", "result", seconds, None)
    observer.call_done("Heartbeat", "timeout", 30.0, None)  # a reply time: the slowest
    observer.call_done("Heartbeat", "disconnected", 0.5, None)  # not a reply time
    observer.call_done("Authorize", "error", 0.2, "SecurityError")
    observer.call_done("Authorize", "error", 0.2, "SecurityError")
    observer.call_done("Authorize", "error", 0.06, "GenericError")
    observer.call_done("Authorize", "result", 0.08, None)
    observer.call_done("NoSuchAction", "result", 0.01, None)  # labelled Other
    for outcome in ("ok", "ok", "ok", "refused", "refused", "http_503"):
        observer.connect_done(outcome, 0.02)
    for reason in ("closed", "connection_lost", "connection_lost", "closed_by_server"):
        observer.disconnected(reason)
    for _ in range(30):
        observer.message("sent", "call")
    for _ in range(10):
        observer.message("received", "result")
    local_lag = [0.002] * 99 + [0.03]
    observe_lag(local, local_lag)
    local.worker_cpu.labels("master").set(0.4)

    for _ in range(4):
        w2_observer.call_done("Heartbeat", "result", 0.05, None)
    w2_observer.connect_done("ok", 0.01)
    w2_observer.connect_done("ok", 0.01)
    w2_lag = [0.004] * 95 + [0.08] * 5  # the worst worker's p99
    observe_lag(w2, [*w2_lag])
    w2.worker_cpu.labels("w2").set(0.7)
    collector.update("w2", shipped(w2))

    # a worker that joins during the interval: all of it counts
    w3 = Metrics(worker="w3")
    w3_observer = MetricsObserver(w3)
    w3_observer.call_done("Heartbeat", "result", 1.0, None)
    w3_observer.call_done("Heartbeat", "result", 1.0, None)
    for _ in range(8):
        w3_observer.message("sent", "call")
    w3_lag = [0.003] * 5
    observe_lag(w3, w3_lag)
    collector.update("w3", shipped(w3))
    after = collector.merged()

    step = measure(before, after, chargers=50, seconds=8.0)

    heartbeat = [*heartbeat_results, 30.0, 0.05, 0.05, 0.05, 0.05, 1.0, 1.0]
    authorize = [0.2, 0.2, 0.06, 0.08]

    def stats(samples: list[float], count: int, errors: int) -> ActionStats:
        p50, p95, p99 = (expected_ms(samples, q) for q in (50, 95, 99))
        return ActionStats(count, p50, p95, p99, errors)

    assert step.actions == {
        "Heartbeat": stats(heartbeat, count=28, errors=2),  # + the disconnected one
        "Authorize": stats(authorize, count=4, errors=3),
        "Other": stats([0.01], count=1, errors=0),
    }
    # what the buckets say, not the samples: 0.004 s lies in (2.5 ms, 5 ms]
    assert step.actions["Heartbeat"].p50_ms == pytest.approx(2.5 + 2.5 * 13.5 / 17)
    assert step.actions["Heartbeat"].p99_ms == pytest.approx(20_000 + 10_000 * 0.73)
    assert step.call_errors == 5
    assert step.error_codes == {"SecurityError": 2, "GenericError": 1, "timeout": 1,
                                "disconnected": 1}  # fmt: skip
    assert step.connect_attempts == 8 and step.connect_failures == 3
    assert step.unexpected_disconnects == 3  # "closed" is the load generator's own
    assert step.messages_per_s == (30 + 10 + 8) / 8.0
    lags = [expected_ms(samples, 99, LAG_BUCKETS) for samples in (local_lag, w2_lag, w3_lag)]
    assert step.schedule_lag_p99_ms == max(lags) == lags[1]
    assert step.cpu == 0.7  # the busiest process's latest reading
    assert step.connected == (5 - 1) + (3 - 4) + 2
    assert (step.chargers, step.seconds) == (50, 8.0)
    assert step.calls == 33

    # the caller's CPU figure wins; the views are not modified
    again = measure(before, after, chargers=50, seconds=8.0, cpu=0.33)
    assert again.cpu == 0.33
    assert dataclasses.replace(again, cpu=0.7) == step


def test_measure_an_idle_interval() -> None:
    metrics = worker_metrics("local", [0.01, 0.02], connects=3, drops=1)
    collector = MergedCollector(metrics, stale_after=None)
    view = collector.merged()
    step = measure(view, collector.merged(), chargers=10, seconds=0.0)
    assert step.actions == {} and step.calls == 0
    assert (step.call_errors, step.error_codes) == (0, {})
    assert (step.connect_attempts, step.connect_failures, step.unexpected_disconnects) == (0, 0, 0)
    assert step.messages_per_s == 0.0  # no division by zero
    assert step.schedule_lag_p99_ms is None
    assert step.cpu is None  # no process reported its CPU
    assert step.connected == 2
    # from nothing: everything so far
    first = measure({}, view, chargers=10, seconds=2.0)
    assert first.actions["Heartbeat"].count == 2 and first.actions["Authorize"].errors == 1
    assert first.error_codes == {"SecurityError": 1}
    assert (first.connect_attempts, first.unexpected_disconnects) == (3, 1)
    assert first.messages_per_s == 4 / 2.0


# -- the run id, the capacity answer and the target ----------------------------------------


def exported(source: Any) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(source)
    return generate_latest(registry).decode()


UNLABELLED_GAUGES = [spec.name for spec in SPECS if spec.kind == "gauge" and not spec.labels]


def test_the_run_id_labels_every_exported_series() -> None:
    metrics = worker_metrics("master", [0.01], connects=1, drops=0)
    metrics.run_id = "run-42"
    metrics.set_target(7)
    collector = MergedCollector(metrics, stale_after=None)
    collector.update("w2", shipped(worker_metrics("w2", [0.5], connects=2, drops=1)))
    text = exported(collector)
    parsed = families(text)
    assert set(parsed) >= DESIGN_METRICS
    samples = [sample for family in parsed.values() for sample in family.samples]
    assert len(samples) > 50
    assert all(sample.labels.get("run") == "run-42" for sample in samples)
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert all('run="run-42"' in line for line in lines)
    assert len(UNLABELLED_GAUGES) >= 7
    for name in UNLABELLED_GAUGES:  # only the run label: always there
        assert [sample.labels for sample in parsed[name].samples] == [{"run": "run-42"}], name
    values = {name: parsed[name].samples[0].value for name in UNLABELLED_GAUGES}
    assert values[f"{P}chargers_target"] == 7
    assert values[f"{P}chargers_connected"] == 1 + 1
    assert values[f"{P}capacity_max_chargers"] == 0
    heartbeat = [
        s for s in parsed[f"{P}call_duration_seconds"].samples if s.name.endswith("_count")
    ]
    assert {"action": "Heartbeat", "outcome": "result", "run": "run-42"} in [
        s.labels for s in heartbeat
    ]

    # a single process serves its Metrics with the label, too
    port = free_port()
    exporter = serve(metrics, port=port, host="127.0.0.1")
    assert exporter is not None
    try:
        _, body = fetch("127.0.0.1", port)
    finally:
        exporter.stop()
    served = [s for family in families(body).values() for s in family.samples]
    assert served and all(s.labels.get("run") == "run-42" for s in served)

    # no run yet: no run label
    metrics.run_id = None
    assert "run=" not in exported(MergedCollector(metrics, stale_after=None))


def test_no_capacity_answer_exports_nan() -> None:
    metrics = Metrics(worker="local")
    metrics.set_capacity(420)
    assert (
        families(exported(MergedCollector(metrics)))[f"{P}capacity_max_chargers"].samples[0].value
        == 420
    )
    metrics.set_capacity(None, True)
    parsed = families(exported(MergedCollector(metrics)))
    assert math.isnan(parsed[f"{P}capacity_max_chargers"].samples[0].value)
    assert parsed[f"{P}capacity_limited_by_generator"].samples[0].value == 1
    metrics.set_capacity(300)
    parsed = families(exported(MergedCollector(metrics)))
    assert parsed[f"{P}capacity_max_chargers"].samples[0].value == 300
    assert parsed[f"{P}capacity_limited_by_generator"].samples[0].value == 0
    # the connect rate beside it: NaN when no search found one
    metrics.set_connect_rate(21.5)
    parsed = families(exported(MergedCollector(metrics)))
    assert parsed[f"{P}capacity_max_connect_rate"].samples[0].value == 21.5
    metrics.set_connect_rate(None)
    parsed = families(exported(MergedCollector(metrics)))
    assert math.isnan(parsed[f"{P}capacity_max_connect_rate"].samples[0].value)


def test_no_capacity_answer_exports_nan_on_a_master_with_workers() -> None:
    master = Metrics(worker="master")
    master.set_capacity(None, True)
    collector = MergedCollector(master)
    collector.update("w1", shipped(worker_metrics("w1", [0.01], connects=1, drops=0)))
    parsed = families(exported(collector))
    assert parsed[f"{P}capacity_limited_by_generator"].samples[0].value == 1
    assert math.isnan(parsed[f"{P}capacity_max_chargers"].samples[0].value)


def test_target_follows_set_target() -> None:
    metrics = Metrics()
    assert metrics.target == 0
    for chargers in (100, 150, 125, 0):
        metrics.set_target(chargers)
        assert metrics.target == chargers
        assert value(metrics, f"{P}chargers_target") == chargers


def test_closed_label_sets_and_every_fleet_site_are_exported_from_the_start() -> None:
    """rate() sees a burst only if the series existed before it; the fleet map shows
    every site, not only those with a charger already."""
    metrics = Metrics()
    sites = fleets.generate(10).sites
    MetricsObserver(metrics, sites)
    snapshot = metrics.snapshot()["metrics"]
    assert {row[0] for row in snapshot[f"{P}reconnects_total"]} == set(RECONNECT_REASONS)
    assert {row[0] for row in snapshot[f"{P}protocol_errors_total"]} >= PROTOCOL_ERROR_KINDS
    assert all(row[-1] == 0 for row in snapshot[f"{P}reconnects_total"])
    on_map = {(row[0], row[3]) for row in snapshot[f"{P}site_chargers"]}
    assert on_map == {(site, state) for site in sites for state in SITE_STATES}
    assert {row[0] for row in snapshot[f"{P}power_w"]} == set(sites)


def test_known_actions_and_statuses_are_the_ocpp_packages_enumerations() -> None:
    """Read from the enumerations' own files (not through ``ocpp.v21``'s package, which
    imports its RPC layer and jsonschema at every Locust start): the same values."""
    import enum
    import importlib

    from loadgen.metrics.labels import known_actions, known_statuses

    modules = [importlib.import_module(f"ocpp.{v}.enums") for v in ("v16", "v201", "v21")]
    in_schemas = {a for version in VERSIONS.values() for a in schemas.actions(version)}
    assert known_actions() == {a.value for m in modules for a in m.Action} | in_schemas
    statuses = {
        str(member.value)
        for m in modules
        for name, value in vars(m).items()
        if isinstance(value, type) and issubclass(value, enum.Enum) and "Status" in name
        for member in value
    }
    assert known_statuses() == statuses
    assert {"BootNotification", "NotifyPeriodicEventStream"} <= known_actions()
    loaded = gevent.subprocess.run(
        [sys.executable, "-c", "import sys; from loadgen.metrics.labels import known_actions; "
         "known_actions(); print(sorted(m for m in sys.modules if m.startswith('ocpp')))"],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert loaded.stdout.strip() == "['ocpp']"  # no ocpp.v21, no ChargePoint
