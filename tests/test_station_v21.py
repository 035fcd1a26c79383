"""What a 2.1 station adds to 2.0.1's (pure, on the fake clock, MemoryCsms validating every
message both ways against the 2.1 schemas): running cost from the CSMS's tariff,
transaction limits honoured, the 2.1-only CSMS actions answered with state."""

from __future__ import annotations

from typing import Any

import pytest

from loadgen import fleet as fleets
from loadgen.physics import EV, FakeClock
from loadgen.protocols import OCPP21, v21
from loadgen.station import Station
from loadgen.tariffs import Tariff, Tariffs
from tests.station_driver import MemoryCsms, drive, run_for
from tests.test_commands import ask
from tests.test_commands import make as commands_make

CHARGER = fleets.load(fleets.SEED_FLEET).chargers["emart_jeju_01"]  # 100 kW, one EVSE
#: 0.40 per kWh and 0.10 per minute
TARIFF = v21.tariff("day-rate", "EUR", price_kwh=0.4, price_minute=0.1)


def make(**config: Any) -> tuple[Station, MemoryCsms, FakeClock]:
    """test_commands' booted station, in 2.1."""
    return commands_make(OCPP21, **config)


def big_ev() -> EV:
    return EV(capacity_wh=200_000, soc=0.1, max_power_w=100_000)


def events(csms: MemoryCsms) -> list[dict[str, Any]]:
    return csms.of("TransactionEvent")


# -- tariffs and running cost ------------------------------------------------------------


def test_tariff_cost_is_fixed_plus_energy_plus_time() -> None:
    tariff = Tariff.from_ocpp(v21.tariff("t", price_kwh=0.4, price_minute=0.1, fixed_fee=1.0))
    assert tariff.cost(10_000, 600) == pytest.approx(1.0 + 4.0 + 1.0)
    assert Tariff.from_ocpp(v21.tariff("free")).cost(10_000, 600) == 0.0


def test_default_tariffs_per_evse_before_the_station_wide_one() -> None:
    tariffs = Tariffs()
    wide, own = Tariff.from_ocpp(v21.tariff("wide")), Tariff.from_ocpp(v21.tariff("own"))
    later = Tariff.from_ocpp(v21.tariff("later", valid_from=1000.0))
    assert tariffs.set_default(0, wide) == "Accepted"
    assert tariffs.set_default(1, own) == "Accepted"
    assert tariffs.set_default(1, later) == "Accepted"
    assert tariffs.set_default(2, own) == "DuplicateTariffId"
    assert tariffs.for_evse(1, 0.0) is own and tariffs.for_evse(1, 2000.0) is later
    assert tariffs.for_evse(2, 0.0) is wide
    assert tariffs.clear(["own", "later"], 1) == [
        {"tariffId": "own", "status": "Accepted"},
        {"tariffId": "later", "status": "Accepted"},
    ]
    assert tariffs.for_evse(1, 0.0) is wide
    assert tariffs.clear(None, None) == [{"tariffId": "wide", "status": "Accepted"}]
    assert tariffs.clear(None, None) == [{"status": "NoTariff"}]


def test_a_default_tariff_prices_the_transaction_in_every_event() -> None:
    station, csms, clock = make(meter_interval=60)
    assert ask(station, *v21.set_default_tariff(0, TARIFF)) == {"status": "Accepted"}
    station.start_session(1, "driver-1", big_ev())
    run_for(station, csms, clock, 600)
    station.stop_session(1)
    drive(station, csms)
    sent = events(csms)
    assert sent[0]["transactionInfo"]["operationMode"] == "ChargingOnly"
    assert all(e["transactionInfo"]["tariffId"] == "day-rate" for e in sent)
    costs = [e["costDetails"]["totalCost"]["total"]["exclTax"] for e in sent]
    assert costs == sorted(costs) and costs[0] == 0.0
    # 10 minutes at 100 kW: 16.67 kWh at 0.40 + 10 minutes at 0.10 = 7.67
    assert costs[-1] == pytest.approx(16.667 * 0.4 + 1.0, abs=0.01)
    usage = sent[-1]["costDetails"]["totalUsage"]
    assert usage["chargingTime"] == 600 and usage["energy"] == pytest.approx(16_667, abs=1)


def test_without_a_tariff_no_cost_is_sent() -> None:
    station, csms, clock = make(meter_interval=60)
    station.start_session(1, "driver-1", big_ev())
    run_for(station, csms, clock, 120)
    assert events(csms) and not any("costDetails" in e for e in events(csms))


def test_the_authorize_response_tariff_is_the_drivers() -> None:
    station, csms, clock = make(meter_interval=60)
    ask(station, *v21.set_default_tariff(0, TARIFF))
    driver = v21.tariff("driver-plan", "EUR", price_kwh=0.2)
    csms.responders["Authorize"] = lambda _: {
        "idTokenInfo": {"status": "Accepted"},
        "tariff": driver,
    }
    station.start_session(1, "driver-1", big_ev(), authorize=True)
    run_for(station, csms, clock, 60)
    last = events(csms)[-1]
    assert last["transactionInfo"]["tariffId"] == "driver-plan"
    assert last["costDetails"]["totalCost"]["total"]["exclTax"] == pytest.approx(
        100 / 60 * 0.2, abs=0.01
    )
    got = ask(station, *v21.get_tariffs(0))
    kinds = {a["tariffId"]: a["tariffKind"] for a in got["tariffAssignments"]}
    assert kinds == {"day-rate": "DefaultTariff", "driver-plan": "DriverTariff"}


def test_change_transaction_tariff_reprices_the_running_transaction() -> None:
    station, csms, clock = make(meter_interval=60)
    transaction = station.start_session(1, "driver-1", big_ev())
    assert transaction is not None
    run_for(station, csms, clock, 60)
    unknown = ask(station, *v21.change_transaction_tariff("nope", TARIFF))
    assert unknown["status"] == "TxNotFound"
    reply = ask(station, *v21.change_transaction_tariff(transaction.transaction_id, TARIFF))
    assert reply == {"status": "Accepted"}
    drive(station, csms)
    changed = events(csms)[-1]
    assert changed["triggerReason"] == "TariffChanged"
    assert changed["transactionInfo"]["tariffId"] == "day-rate"
    other = v21.tariff("usd", "USD", price_kwh=0.1)
    moved = ask(station, *v21.change_transaction_tariff(transaction.transaction_id, other))
    assert moved["status"] == "NoCurrencyChange"


def test_get_and_clear_tariffs() -> None:
    station, _, _ = make()
    assert ask(station, *v21.get_tariffs(0)) == {"status": "NoTariff"}
    ask(station, *v21.set_default_tariff(1, TARIFF))
    assert ask(station, *v21.set_default_tariff(7, TARIFF))["status"] == "Rejected"
    got = ask(station, *v21.get_tariffs(1))
    assert got["tariffAssignments"] == [
        {"tariffId": "day-rate", "tariffKind": "DefaultTariff", "evseIds": [1]}
    ]
    cleared = ask(station, *v21.clear_tariffs())
    assert cleared == {"clearTariffsResult": [{"tariffId": "day-rate", "status": "Accepted"}]}
    assert ask(station, *v21.get_tariffs(0)) == {"status": "NoTariff"}


# -- transaction limits ------------------------------------------------------------------


def limited(limit: dict[str, Any], **config: Any) -> tuple[Station, MemoryCsms, FakeClock]:
    """A station whose CSMS answers the Started event with ``limit``."""
    station, csms, clock = make(**config)
    csms.responders["TransactionEvent"] = lambda event: (
        {"transactionLimit": limit} if event["eventType"] == "Started" else {}
    )
    return station, csms, clock


@pytest.mark.parametrize(
    ("limit", "reason", "trigger", "ends_after"),
    [
        # 5 kWh at 100 kW: 180 s, not the next meter value (at 300 s)
        (v21.transaction_limit(max_energy=5000), "EnergyLimitReached", "EnergyLimitReached", 180),
        (v21.transaction_limit(max_time=420), "TimeLimitReached", "TimeLimitReached", 420),
        # 0.40/kWh + 0.10/min at 100 kW: 0.7667 a minute; 3.00 after 234.8 s
        (v21.transaction_limit(max_cost=3.0), "Other", "CostLimitReached", 234.8),
    ],
)
def test_a_transaction_limit_ends_the_transaction_when_reached(
    limit: dict[str, Any], reason: str, trigger: str, ends_after: float
) -> None:
    station, csms, clock = limited(limit, meter_interval=300)
    ask(station, *v21.set_default_tariff(0, TARIFF))
    transaction = station.start_session(1, "driver-1", big_ev())
    assert transaction is not None
    run_for(station, csms, clock, 3600)
    sent = events(csms)
    confirm = sent[1]
    assert confirm["triggerReason"] == "LimitSet"
    assert confirm["transactionInfo"]["transactionLimit"] == limit
    ended = sent[-1]
    assert ended["eventType"] == "Ended" and ended["triggerReason"] == trigger
    assert ended["transactionInfo"]["stoppedReason"] == reason
    assert transaction.ended_at is not None
    assert transaction.ended_at - transaction.started_at == pytest.approx(ends_after, abs=1.0)


def test_a_soc_limit_ends_the_transaction_at_the_next_reading() -> None:
    station, csms, clock = limited(v21.transaction_limit(max_soc=20), meter_interval=60)
    # 10 % of 200 kWh at 100 kW: 20 % after 12 minutes
    station.start_session(1, "driver-1", big_ev())
    run_for(station, csms, clock, 3600)
    ended = events(csms)[-1]
    assert ended["triggerReason"] == "SoCLimitReached"
    assert ended["transactionInfo"]["stoppedReason"] == "SOCLimitReached"
    soc = ended["meterValue"][0]["sampledValue"][-1]["value"]
    assert 20 <= soc <= 21


def test_a_limit_in_a_later_reply_replaces_the_first_and_is_confirmed_once() -> None:
    station, csms, clock = make(meter_interval=60)
    replies = iter([{}, {"transactionLimit": {"maxTime": 7200}}])
    csms.responders["TransactionEvent"] = lambda _: next(
        replies, {"transactionLimit": {"maxTime": 7200}}
    )
    station.start_session(1, "driver-1", big_ev())
    run_for(station, csms, clock, 600)
    assert [e["triggerReason"] for e in events(csms)].count("LimitSet") == 1
    assert station.transactions[0].limit == {"maxTime": 7200}


# -- the other 2.1 CSMS actions ------------------------------------------------------------


def test_der_battery_swap_and_streams_are_refused_with_reasons() -> None:
    station, _, _ = make()
    set_der = {"isDefault": False, "controlId": "c1", "controlType": "FreqDroop"}
    assert ask(station, "SetDERControl", set_der)["status"] == "NotSupported"
    swap = {"requestId": 1, "idToken": {"idToken": "x", "type": "Central"}}
    assert ask(station, "RequestBatterySwap", swap)["statusInfo"]["reasonCode"]
    assert ask(station, "GetPeriodicEventStream", {}) == {}
    adjust = {"id": 1, "params": {"interval": 10}}
    assert ask(station, "AdjustPeriodicEventStream", adjust)["status"] == "Rejected"


def test_allowed_energy_transfer_and_priority_charging_know_the_transaction() -> None:
    station, csms, _ = make()
    transaction = station.start_session(1, "driver-1", big_ev())
    assert transaction is not None
    drive(station, csms)
    tid = transaction.transaction_id
    charge = {"transactionId": tid, "allowedEnergyTransfer": ["DC"]}
    assert ask(station, "NotifyAllowedEnergyTransfer", charge) == {"status": "Accepted"}
    v2x = {"transactionId": tid, "allowedEnergyTransfer": ["DC_BPT"]}
    assert ask(station, "NotifyAllowedEnergyTransfer", v2x)["status"] == "Rejected"
    priority = {"transactionId": tid, "activate": True}
    assert ask(station, "UsePriorityCharging", priority)["status"] == "NoProfile"
    none = {"transactionId": "nope", "activate": True}
    assert ask(station, "UsePriorityCharging", none)["status"] == "Rejected"


def test_a_tariff_whose_cost_overflows_is_reported_as_a_failure_to_calculate() -> None:
    station, csms, clock = make(meter_interval=60)
    ask(station, *v21.set_default_tariff(0, v21.tariff("absurd", price_kwh=1e308)))
    station.start_session(1, "driver-1", big_ev())
    run_for(station, csms, clock, 120)  # every event went through the 2.1 schemas
    details = events(csms)[-1]["costDetails"]
    assert details["failureToCalculate"] is True
    assert details["totalCost"]["total"] == {"exclTax": 0.0}


def test_an_empty_limit_is_no_limit_and_sends_nothing() -> None:
    station, csms, clock = limited({}, meter_interval=60)
    station.start_session(1, "driver-1", big_ev())
    run_for(station, csms, clock, 120)
    assert "LimitSet" not in [e["triggerReason"] for e in events(csms)]
    assert station.transactions[0].limit is None
