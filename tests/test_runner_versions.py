"""StationRunner with several offered versions (``--ocpp-version 2.1,2.0.1``): the station
speaks what the CSMS chose, over a real Link against a CSMS that picks by its own preference."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
import pytest
from websockets.asyncio.server import ServerConnection

from loadgen import fleet as fleets
from loadgen.physics import ScaledClock
from loadgen.protocols import OCPP16, OCPP21, OCPP201, Version, v16, v21
from loadgen.runner import RetryBackOff, StationRunner
from loadgen.station import Station, StationConfig
from loadgen.stations import rules_for
from loadgen.stations import v21 as v21_stations
from tests.conftest import StubProcess
from tests.fake_csms import FakeCsms, wait_for
from tests.test_locust import get

CHARGER = fleets.load(fleets.SEED_FLEET).chargers["emart_jeju_01"]
NOW = "2026-01-01T00:00:00.000Z"
SUBPROTOCOLS = ("ocpp2.1", "ocpp2.0.1", "ocpp1.6")
REPLIES = {
    "BootNotification": {"currentTime": NOW, "interval": 60, "status": "Accepted"},
    "Heartbeat": {"currentTime": NOW},
    "StatusNotification": {},
    "NotifyEvent": {},
}


async def polite(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
    await csms.answer(ws, call, REPLIES.get(call[2], {}))


def _run(built_for: Version, offer: tuple[Version, ...], server: tuple[str, ...]) -> Station:
    clock = ScaledClock(10)
    station = Station(CHARGER, built_for, clock, StationConfig(meter_interval=60))
    with FakeCsms(polite, subprotocols=server) as csms:
        runner = StationRunner(
            station,
            csms.url.rsplit("/", 1)[0],
            clock=clock,
            backoff=RetryBackOff(0.1, 0.0, cap=0.2),
            validate=True,  # every frame in the chosen version's schemas
            offer=offer,
        )
        runner.start()
        wait_for(lambda: station.accepted, timeout=10)
        assert runner.link is not None and runner.link.version is station.version
        runner.stop(timeout=5)
    return station


def test_a_station_built_for_2_0_1_speaks_2_1_when_the_csms_chooses_it() -> None:
    station = _run(OCPP201, (OCPP201, OCPP21), ("ocpp2.1", "ocpp2.0.1"))
    assert station.version is OCPP21 and station.rules is rules_for(OCPP21)
    assert station.messages is v21  # the 2.1 builders, not the 2.0.1 ones it was built with


def test_a_station_keeps_its_version_when_the_csms_takes_it() -> None:
    station = _run(OCPP21, (OCPP21, OCPP201), ("ocpp2.1", "ocpp2.0.1"))
    assert station.version is OCPP21


def test_before_its_first_connection_a_station_may_change_to_1_6() -> None:
    station = _run(OCPP21, (OCPP21, OCPP16), ("ocpp1.6",))
    assert station.version is OCPP16 and station.rules is rules_for(OCPP16)
    assert station.messages is v16


def quick_runner(
    station: Station,
    csms: FakeCsms,
    clock: ScaledClock,
    on_event: Callable[[str, dict[str, Any]], None],
    fallback: Version,
) -> StationRunner:
    """A runner offering 2.1 then ``fallback`` to ``csms``, reconnecting within 0.1 s."""
    return StationRunner(
        station,
        csms.url.rsplit("/", 1)[0],
        clock=clock,
        backoff=RetryBackOff(0.05, 0.0, cap=0.1),
        on_event=on_event,
        offer=(OCPP21, fallback),
    )


def test_a_csms_that_changes_a_station_between_2_x_and_1_6_is_refused() -> None:
    picks = iter(["ocpp2.1"])  # then 1.6 for ever

    def select(connection: Any, offered: list[str]) -> str:
        return next(picks, "ocpp1.6")

    events: list[tuple[str, dict[str, Any]]] = []
    clock = ScaledClock(10)
    station = Station(CHARGER, OCPP21, clock, StationConfig(meter_interval=60))
    with FakeCsms(polite, subprotocols=SUBPROTOCOLS, select_subprotocol=select) as csms:
        runner = quick_runner(
            station, csms, clock, lambda kind, detail: events.append((kind, detail)), OCPP16
        )
        runner.start()
        wait_for(lambda: station.accepted, timeout=10)
        csms.close_with(1011, "switching")
        wait_for(lambda: sum(kind == "retry" for kind, _ in events) >= 2, timeout=10)
        runner.stop(timeout=5)
    assert station.version is OCPP21 and station.rules is rules_for(OCPP21)  # never half 1.6
    reasons = [detail["reason"] for kind, detail in events if kind == "retry"]
    # after the drop, every connect is refused: the CSMS keeps choosing 1.6
    assert reasons[1:] and all("does not change between 1.6 and 2.x" in r for r in reasons[1:])
    assert runner.connects == 1


def test_the_metrics_count_what_each_connection_speaks() -> None:
    """``version_chargers`` and ``connections_total`` follow the CSMS's pick, connection by
    connection: 2.1 first, then 2.0.1 after a reconnect."""
    from loadgen.metrics.collectors import Metrics
    from loadgen.metrics.observer import MetricsObserver

    picks = iter(["ocpp2.1"])  # then 2.0.1 for ever

    def select(connection: Any, offered: list[str]) -> str:
        return next(picks, "ocpp2.0.1")

    metrics = Metrics()
    observer = MetricsObserver(metrics)
    clock = ScaledClock(10)
    station = Station(CHARGER, OCPP21, clock, StationConfig(meter_interval=60))
    observer.add_station(station)

    def counted(name: str, version: str) -> float:
        return metrics.registry.get_sample_value(f"ocpp_loadgen_{name}", {"version": version}) or 0

    with FakeCsms(polite, subprotocols=SUBPROTOCOLS, select_subprotocol=select) as csms:
        runner = quick_runner(
            station,
            csms,
            clock,
            lambda kind, detail: observer.runner_event(detail["charger_id"], kind, detail),
            OCPP201,
        )
        runner.start()
        wait_for(lambda: station.accepted, timeout=10)
        assert counted("version_chargers", "2.1") == 1
        assert counted("version_chargers", "2.0.1") == 0
        csms.close_with(1011, "switching")
        wait_for(lambda: runner.connects == 2 and station.accepted, timeout=10)
        assert station.version is OCPP201
        assert counted("version_chargers", "2.1") == 0
        assert counted("version_chargers", "2.0.1") == 1
        runner.stop(timeout=5)
    assert counted("version_chargers", "2.0.1") == 0  # disconnected: counted nowhere
    assert counted("connections_total", "2.1") == 1
    assert counted("connections_total", "2.0.1") == 1
    assert counted("connections_total", "1.6") == 0  # exported from the start, at 0
    observer.remove_station(CHARGER.id)
    assert all(counted("version_chargers", v) == 0 for v in ("1.6", "2.0.1", "2.1"))


def test_a_2_1_station_is_priced_by_the_stubs_tariff_and_reports_the_same_cost(
    stub_process: StubProcess,
) -> None:
    """Against the real csms_stub: an accepted Authorize gives the driver's tariff, every
    TransactionEvent carries the running cost (validated both ways), and the cost the
    station reports at the end is the one the CSMS stored."""
    (charger,) = fleets.generate(1, prefix="TARIFF21").chargers.values()
    clock = ScaledClock(30)
    station = Station(charger, OCPP21, clock, StationConfig(meter_interval=10))
    runner = StationRunner(
        station,
        stub_process.ws_url,
        clock=clock,
        backoff=RetryBackOff(0.1, 0.0, cap=0.2),
        validate=True,  # every frame, both ways, in the 2.1 schemas
    )
    runner.start()
    try:
        wait_for(lambda: station.accepted and station.settled, timeout=10)
        transaction = station.start_session(1, "tariff-token", authorize=True)
        runner.wake()
        wait_for(lambda: transaction is not None and transaction.tariff is not None, timeout=10)
        assert transaction is not None and transaction.tariff is not None
        assert (transaction.tariff.id, transaction.tariff.currency) == ("csms_stub", "KRW")
        gevent.sleep(2)  # a simulated minute: six meter values
        station.stop_session(1)
        runner.wake()
        wait_for(lambda: station.settled, timeout=10)
    finally:
        runner.stop(timeout=5)
    cost = v21_stations.running_cost(station, transaction, station.evses[1])
    assert cost is not None and cost > 0
    (stored,) = [
        row
        for row in get(stub_process.api_url, f"/transactions?charger_id={charger.id}")
        if row["transaction_id"] == transaction.transaction_id
    ]
    assert stored["cost"] == pytest.approx(cost, abs=0.01)  # 150 KRW per kWh, both sides
