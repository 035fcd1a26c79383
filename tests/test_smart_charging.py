"""Smart charging: profiles, the limit in force, a station following it (pure, fake clock)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import ServerConnection

from loadgen import fleet as fleets
from loadgen.physics import EV, FakeClock, ScaledClock
from loadgen.protocols import OCPP16, OCPP21, OCPP201, Version, iso_timestamp, schemas, v16, v201
from loadgen.runner import StationRunner
from loadgen.smart_charging import (
    MAX_PROFILES,
    STATION_MAX,
    TX,
    TX_DEFAULT,
    ActiveTransaction,
    ChargingProfile,
    Period,
    ProfileRejected,
    SmartCharging,
)
from loadgen.station import Station, StationConfig
from tests.fake_csms import FakeCsms, csms_call, wait_for
from tests.station_driver import MemoryCsms, drive, run_for

CHARGER = fleets.load(fleets.SEED_FLEET).chargers["emart_jeju_01"]  # rated 100 kW
T0 = 1_780_000_000.0
EV_150KW = dict(capacity_wh=200_000, soc=0.2, max_power_w=150_000)


def profile(
    profile_id: int,
    purpose: str,
    periods: list[tuple[int, float]],
    *,
    stack_level: int = 0,
    evse_id: int = 1,
    kind: str = "Relative",
    **fields: Any,
) -> ChargingProfile:
    return ChargingProfile(
        id=profile_id,
        stack_level=stack_level,
        purpose=purpose,
        kind=kind,
        rate_unit=fields.pop("rate_unit", "W"),
        periods=[Period(start, limit) for start, limit in periods],
        evse_id=evse_id,
        **fields,
    )


# -- the profiles on their own -------------------------------------------------------------


def test_the_highest_stack_level_wins_while_its_schedule_lasts() -> None:
    smart = SmartCharging([1, 2])
    transaction = ActiveTransaction("tx", T0)
    smart.install(profile(1, TX_DEFAULT, [(0, 11_000)]), None, T0)
    smart.install(profile(2, TX_DEFAULT, [(0, 7_000)], stack_level=1, duration=3600), None, T0)
    assert smart.limit_w(1, T0 + 10, transaction) == 7_000
    assert smart.next_change(1, T0 + 10, transaction) == T0 + 3600
    assert smart.limit_w(1, T0 + 3600, transaction) == 11_000  # level 1 has run out
    # A TxProfile of the transaction beats every TxDefaultProfile, whatever its level.
    smart.install(profile(3, TX, [(0, 16_000)]), transaction, T0)
    assert smart.limit_w(1, T0 + 10, transaction) == 16_000
    assert smart.limit_w(1, T0 + 10, ActiveTransaction("other", T0)) == 7_000


def test_the_station_maximum_caps_every_evse() -> None:
    smart = SmartCharging([1, 2])
    smart.install(profile(1, STATION_MAX, [(0, 5_000)], evse_id=0), None, T0)
    smart.install(profile(2, TX_DEFAULT, [(0, 7_000)], evse_id=0), None, T0)
    assert smart.limit_w(1, T0, ActiveTransaction("a", T0)) == 5_000
    assert smart.limit_w(2, T0, ActiveTransaction("b", T0)) == 5_000
    assert smart.limit_w(0, T0) == 5_000


def test_a_profile_on_the_evse_beats_one_on_evse_0_at_the_same_level() -> None:
    smart = SmartCharging([1, 2])
    smart.install(profile(1, TX_DEFAULT, [(0, 7_000)], evse_id=0), None, T0)
    smart.install(profile(2, TX_DEFAULT, [(0, 22_000)], evse_id=2), None, T0)
    assert smart.limit_w(1, T0, ActiveTransaction("a", T0)) == 7_000
    assert smart.limit_w(2, T0, ActiveTransaction("b", T0)) == 22_000


def test_amperes_become_watts_at_230_v_per_phase() -> None:
    smart = SmartCharging([1])
    smart.install(
        ChargingProfile(
            1, 0, TX_DEFAULT, "Relative", "A", [Period(0, 16), Period(60, 16, number_phases=1)], 1
        ),
        None,
        T0,
    )
    transaction = ActiveTransaction("a", T0)
    assert smart.limit_w(1, T0, transaction) == pytest.approx(16 * 230 * 3)
    assert smart.limit_w(1, T0 + 60, transaction) == pytest.approx(16 * 230)


def test_daily_recurring_profile_and_its_validity() -> None:
    midnight = 1_780_012_800.0  # 2026-05-29T00:00:00Z
    smart = SmartCharging([1])
    night_and_day = profile(
        1,
        STATION_MAX,
        [(0, 3_000), (8 * 3600, 11_000)],
        evse_id=0,
        kind="Recurring",
        recurrency="Daily",
        start_schedule=midnight,
        valid_to=midnight + 3 * 86_400,
    )
    smart.install(night_and_day, None, midnight)
    for day in range(3):
        assert smart.limit_w(1, midnight + day * 86_400 + 3600) == 3_000
        assert smart.limit_w(1, midnight + day * 86_400 + 9 * 3600) == 11_000
        assert (
            smart.next_change(1, midnight + day * 86_400 + 9 * 3600)
            == midnight + (day + 1) * 86_400
        )
    assert smart.limit_w(1, midnight + 3 * 86_400 + 3600) is None  # validTo has passed


def test_composite_schedule_is_the_minimum_over_time() -> None:
    smart = SmartCharging([1])
    smart.install(profile(1, STATION_MAX, [(0, 20_000), (1800, 5_000)], evse_id=0), None, T0)
    smart.install(profile(2, TX_DEFAULT, [(0, 7_000), (600, 50_000)]), None, T0)
    periods = smart.composite(1, T0, 3600, rated_w=100_000, transaction=None)
    assert periods == [(0, 7_000), (600, 20_000), (1800, 5_000)]
    # nothing in force: the EVSE's rating
    assert SmartCharging([1]).composite(1, T0, 60, rated_w=100_000) == [(0, 100_000)]


@st.composite
def profile_sets(draw: st.DrawFn) -> list[ChargingProfile]:
    """A few profiles of every purpose and kind, installable on EVSE 1 of a station."""
    found = []
    for n in range(draw(st.integers(1, 5))):
        purpose = draw(st.sampled_from([STATION_MAX, TX_DEFAULT, TX]))
        kind = draw(st.sampled_from(["Absolute", "Relative", "Recurring"]))
        offsets = sorted(set(draw(st.lists(st.integers(1, 4 * 3600), max_size=3))))
        found.append(
            profile(
                n + 1,
                purpose,
                [(o, draw(st.integers(0, 200)) * 500) for o in [0, *offsets]],
                stack_level=n,  # distinct: no duplicates to refuse
                evse_id=0 if purpose == STATION_MAX else 1,
                kind=kind,
                recurrency="Daily" if kind == "Recurring" else None,
                start_schedule=T0 + draw(st.integers(-86_400, 3600)),
                duration=draw(st.none() | st.integers(60, 6 * 3600)),
                valid_from=draw(st.none() | st.integers(-3600, 3600).map(lambda d: T0 + d)),
                valid_to=draw(st.none() | st.integers(3600 * 2, 3600 * 30).map(lambda d: T0 + d)),
            )
        )
    return found


@settings(max_examples=60, deadline=None)
@given(profiles=profile_sets(), moments=st.lists(st.integers(0, 8 * 3600 - 1), max_size=20))
def test_the_composite_schedule_is_the_limit_at_every_moment(
    profiles: list[ChargingProfile], moments: list[int]
) -> None:
    smart = SmartCharging([1])
    transaction = ActiveTransaction("tx", T0 - 120)
    for candidate in profiles:
        smart.install(candidate, transaction, T0 - 600)
    periods = smart.composite(1, T0, 8 * 3600, rated_w=50_000, transaction=transaction)
    assert periods[0][0] == 0
    assert [start for start, _ in periods] == sorted({start for start, _ in periods})
    for moment in moments:
        in_force = smart.limit_w(1, T0 + moment, transaction)
        expected = 50_000 if in_force is None else min(in_force, 50_000)
        scheduled = [limit for start, limit in periods if start <= moment][-1]
        assert scheduled == expected, (moment, periods)


@pytest.mark.parametrize(
    ("candidate", "transaction", "reason"),
    [
        (profile(1, TX, [(0, 7_000)]), None, "TxNotFound"),
        (profile(1, TX, [(0, 7_000)], transaction_id="other"), "tx", "TxNotFound"),
        (profile(1, TX, [(0, 7_000)], evse_id=0), "tx", "InvalidProfile"),
        (profile(1, TX_DEFAULT, [(0, 7_000)], evse_id=9), None, "UnknownEvse"),
        (profile(1, STATION_MAX, [(0, 7_000)], evse_id=1), None, "InvalidProfile"),
        (profile(1, TX_DEFAULT, [(10, 7_000)]), None, "InvalidSchedule"),
        (profile(1, TX_DEFAULT, [(0, 7_000), (0, 1)]), None, "InvalidSchedule"),
        (profile(1, TX_DEFAULT, [(0, -1)]), None, "InvalidSchedule"),
        (profile(1, TX_DEFAULT, [(0, 1)], kind="Recurring"), None, "InvalidProfile"),
        (profile(1, TX_DEFAULT, [(0, 1)], stack_level=-1), None, "InvalidStackLevel"),
        (profile(1, TX_DEFAULT, [(0, 1)], valid_from=T0, valid_to=T0), None, "InvalidProfile"),
    ],
)
def test_profiles_a_charger_refuses(
    candidate: ChargingProfile, transaction: str | None, reason: str
) -> None:
    smart = SmartCharging([1])
    running = ActiveTransaction(transaction, T0) if transaction else None
    with pytest.raises(ProfileRejected) as refused:
        smart.install(candidate, running, T0)
    assert refused.value.reason_code == reason
    assert smart.profiles == []


def test_same_purpose_and_stack_level_is_a_duplicate_in_201_and_replaces_in_16() -> None:
    strict, lenient = SmartCharging([1]), SmartCharging([1], replace_same_stack_level=True)
    for smart in (strict, lenient):
        smart.install(profile(1, TX_DEFAULT, [(0, 7_000)]), None, T0)
        smart.install(profile(1, TX_DEFAULT, [(0, 8_000)]), None, T0)  # same id: replaced
    with pytest.raises(ProfileRejected, match="DuplicateProfile"):
        strict.install(profile(2, TX_DEFAULT, [(0, 9_000)]), None, T0)
    lenient.install(profile(2, TX_DEFAULT, [(0, 9_000)]), None, T0)
    assert [p.id for p in strict.profiles] == [1] and [p.id for p in lenient.profiles] == [2]


def test_a_station_holds_a_bounded_number_of_profiles() -> None:
    smart = SmartCharging([1])
    for n in range(MAX_PROFILES):
        smart.install(profile(n, TX_DEFAULT, [(0, 7_000)], stack_level=n), None, T0)
    with pytest.raises(ProfileRejected, match="TooManyProfiles"):
        smart.install(profile(999, TX_DEFAULT, [(0, 7_000)], stack_level=999), None, T0)
    smart.install(profile(3, TX_DEFAULT, [(0, 1_000)], stack_level=3), None, T0)  # a replacement
    assert len(smart.profiles) == MAX_PROFILES


# -- a station following the limits, against an in-memory CSMS ----------------------------


def make(version: Version, **config: Any) -> tuple[Station, MemoryCsms, FakeClock]:
    clock = FakeClock(T0)
    station = Station(CHARGER, version, clock, StationConfig(meter_interval=60, **config))
    csms = MemoryCsms(version)
    station.on_connected()
    drive(station, csms)
    assert station.accepted
    return station, csms, clock


def ask(station: Station, request: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    """Send a CSMS CALL, both ways valid against the schema."""
    action, payload = request
    schemas.validate(station.version, action, payload)
    reply = station.handle_csms_call(action, payload)
    schemas.validate(station.version, action, reply, response=True)
    return reply


def powers(csms: MemoryCsms) -> list[float]:
    """The power in every meter reading the station sent, in order."""
    found = []
    for action, payload in csms.received:
        if action == "TransactionEvent":
            readings = payload.get("meterValue", [])
        elif action == "MeterValues":
            readings = payload["meterValue"]
        else:
            continue
        for reading in readings:
            for sample in reading["sampledValue"]:
                if sample.get("measurand") == "Power.Active.Import":
                    found.append(float(sample["value"]))
    return found


@pytest.mark.parametrize("version", [OCPP201, OCPP21])
def test_201_the_ev_follows_a_tx_profile_and_recovers_when_it_is_cleared(version: Version) -> None:
    station, csms, clock = make(version)
    station.start_session(1, "tok", EV(**EV_150KW))
    run_for(station, csms, clock, 120)
    assert powers(csms)[-1] == 100_000  # the EVSE's rating
    tx_profile = v201.charging_profile(5, 0, TX, [(0, 7_000)], kind="Relative")
    assert ask(station, v201.set_charging_profile(1, tx_profile)) == {"status": "Accepted"}
    drive(station, csms)
    changed = csms.of("TransactionEvent")[-1]
    assert changed["triggerReason"] == "ChargingRateChanged"
    assert powers(csms)[-1] == 7_000
    before = station.evses[1].register.wh
    run_for(station, csms, clock, 600)
    assert set(powers(csms)[-10:]) == {7_000}
    assert station.evses[1].register.wh - before == pytest.approx(7_000 * 600 / 3600, rel=1e-3)
    assert ask(station, v201.clear_charging_profile(5)) == {"status": "Accepted"}
    drive(station, csms)
    assert powers(csms)[-1] == 100_000
    assert ask(station, v201.clear_charging_profile(5))["status"] == "Unknown"


def test_16_the_ev_follows_a_tx_profile_named_by_the_csms_transaction_id() -> None:
    station, csms, clock = make(OCPP16)
    station.start_session(1, "tok", EV(**EV_150KW))
    drive(station, csms)
    csms_id = station.evses[1].transaction.csms_id
    wrong = v16.charging_profile(5, 0, TX, [(0, 7_000)], kind="Relative", transaction_id=999)
    assert ask(station, v16.set_charging_profile(1, wrong)) == {"status": "Rejected"}
    right = v16.charging_profile(5, 0, TX, [(0, 32)], kind="Relative", rate_unit="A")
    right["transactionId"] = csms_id
    assert ask(station, v16.set_charging_profile(1, right)) == {"status": "Accepted"}
    run_for(station, csms, clock, 60)
    assert powers(csms)[-1] == pytest.approx(32 * 230 * 3)
    composite = ask(station, v16.get_composite_schedule(1, 3600, "A"))
    assert composite["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 32.0}
    ]
    assert ask(station, v16.clear_charging_profile(connector_id=1, purpose=TX)) == {
        "status": "Accepted"
    }
    run_for(station, csms, clock, 60)
    assert powers(csms)[-1] == 100_000


def test_201_a_schedule_period_starting_changes_the_power_when_it_starts() -> None:
    station, csms, clock = make(OCPP201)
    station.start_session(1, "tok", EV(**EV_150KW))
    drive(station, csms)
    start = station.now_wall()
    limits = v201.charging_profile(
        1, 0, STATION_MAX, [(0, 11_000), (90, 3_000), (150, 0)], start_schedule=start
    )
    assert ask(station, v201.set_charging_profile(0, limits))["status"] == "Accepted"
    register = station.evses[1].register
    at_set = register.wh
    run_for(station, csms, clock, 200)
    # 90 s at 11 kW, 60 s at 3 kW, then nothing
    assert register.wh - at_set == pytest.approx((11_000 * 90 + 3_000 * 60) / 3600, rel=1e-3)
    changes = [e for e in csms.of("TransactionEvent") if e["eventType"] == "Updated"]
    assert [e["transactionInfo"]["chargingState"] for e in changes][-1] == "SuspendedEVSE"
    limited = [p for p in powers(csms) if p < 100_000]
    assert [p for n, p in enumerate(limited) if n == 0 or limited[n - 1] != p] == [11_000, 3_000, 0]
    state_changed = [e for e in changes if e["triggerReason"] == "ChargingStateChanged"]
    assert state_changed, "a limit of 0 suspends the EVSE"


def test_201_a_tx_default_profile_limits_the_session_from_its_start() -> None:
    station, csms, clock = make(OCPP201)
    default = v201.charging_profile(1, 0, TX_DEFAULT, [(0, 22_000)], kind="Relative")
    assert ask(station, v201.set_charging_profile(0, default))["status"] == "Accepted"
    station.start_session(1, "tok", EV(**EV_150KW))
    run_for(station, csms, clock, 60)
    started = csms.of("TransactionEvent")[0]
    assert started["eventType"] == "Started"
    assert set(powers(csms)) == {22_000}


def test_201_get_charging_profiles_reports_them_per_evse() -> None:
    station, csms, _ = make(OCPP201)
    assert ask(station, v201.get_charging_profiles(1, None)) == {"status": "NoProfiles"}
    drive(station, csms)
    assert "ReportChargingProfiles" not in csms.actions()
    station.start_session(1, "tok", EV(**EV_150KW))
    max_profile = v201.charging_profile(1, 0, STATION_MAX, [(0, 50_000)], kind="Relative")
    tx_profile = v201.charging_profile(2, 3, TX, [(0, 7_000)], kind="Relative")
    ask(station, v201.set_charging_profile(0, max_profile))
    ask(station, v201.set_charging_profile(1, tx_profile))
    assert ask(station, v201.get_charging_profiles(7, None)) == {"status": "Accepted"}
    drive(station, csms)
    reports = csms.of("ReportChargingProfiles")
    assert [(r["evseId"], r.get("tbc", False)) for r in reports] == [(0, True), (1, False)]
    assert reports[0]["chargingProfile"] == [max_profile]
    transaction_id = station.evses[1].transaction.transaction_id
    assert reports[1]["chargingProfile"] == [{**tx_profile, "transactionId": transaction_id}]
    assert {r["requestId"] for r in reports} == {7}
    # criteria
    assert ask(station, v201.get_charging_profiles(8, 1, purpose=TX_DEFAULT))["status"] == (
        "NoProfiles"
    )
    only_max = ask(station, v201.get_charging_profiles(9, purpose=STATION_MAX, stack_level=0))
    assert only_max["status"] == "Accepted"
    # A TxProfile ends with its transaction.
    station.stop_session(1)
    drive(station, csms)
    assert ask(station, v201.get_charging_profiles(10, 1)) == {"status": "NoProfiles"}


def test_201_rejections_say_why() -> None:
    station, _, _ = make(OCPP201)
    tx_profile = v201.charging_profile(1, 0, TX, [(0, 7_000)], kind="Relative")
    reply = ask(station, v201.set_charging_profile(1, tx_profile))
    assert reply["status"] == "Rejected" and reply["statusInfo"]["reasonCode"] == "TxNotFound"
    default = v201.charging_profile(2, 0, TX_DEFAULT, [(0, 7_000)], kind="Relative")
    reply = ask(station, v201.set_charging_profile(4, default))
    assert reply["statusInfo"]["reasonCode"] == "UnknownEvse"
    reply = ask(station, v201.get_composite_schedule(60, 4))
    assert reply["status"] == "Rejected" and reply["statusInfo"]["reasonCode"] == "UnknownEvse"
    bad_time = {**default, "validFrom": "2026-13-45T99:00:00Z"}
    reply = station.handle_csms_call(
        "SetChargingProfile", {"evseId": 1, "chargingProfile": bad_time}
    )
    assert reply["status"] == "Rejected" and reply["statusInfo"]["reasonCode"] == "InvalidValue"


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
def test_composite_schedule_of_an_idle_evse_and_of_the_station(version: Version) -> None:
    station, _, clock = make(version)
    build = v16 if version is OCPP16 else v201
    start = clock.now()
    max_profile = build.charging_profile(
        1, 0, STATION_MAX, [(0, 40_000), (1800, 10_000)], start_schedule=start
    )
    default = build.charging_profile(2, 0, TX_DEFAULT, [(0, 20_000)], kind="Relative")
    ask(station, build.set_charging_profile(0, max_profile))
    ask(station, build.set_charging_profile(1, default))
    if version is OCPP16:
        reply = ask(station, v16.get_composite_schedule(1, 3600))
        schedule = reply["chargingSchedule"]
        assert reply["scheduleStart"] == iso_timestamp(start)
    else:
        reply = ask(station, v201.get_composite_schedule(3600, 1))
        schedule = reply["schedule"]
        assert schedule["scheduleStart"] == iso_timestamp(start)
    assert schedule["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 20_000},
        {"startPeriod": 1800, "limit": 10_000},
    ]
    station_wide = (
        ask(station, v16.get_composite_schedule(0, 3600, "W"))["chargingSchedule"]
        if version is OCPP16
        else ask(station, v201.get_composite_schedule(3600, 0, "W"))["schedule"]
    )
    assert [p["limit"] for p in station_wide["chargingSchedulePeriod"]] == [40_000, 10_000]


@pytest.mark.parametrize("version", [OCPP201, OCPP21, OCPP16])
def test_a_remote_start_honours_its_tx_profile(version: Version) -> None:
    station, csms, clock = make(version)
    build = v16 if version is OCPP16 else v201
    tx_profile = build.charging_profile(9, 0, TX, [(0, 7_400)], kind="Relative")
    if version is OCPP16:
        reply = ask(station, v16.remote_start_transaction("tok", 1, tx_profile))
    else:
        reply = ask(station, v201.request_start_transaction(1, v201.id_token("tok"), 1, tx_profile))
    assert reply["status"] == "Accepted"
    run_for(station, csms, clock, 120)
    assert powers(csms)[-1] == 7_400
    # Only a TxProfile may come with a remote start.
    station.stop_session(1)
    drive(station, csms)
    not_tx = build.charging_profile(9, 0, TX_DEFAULT, [(0, 7_400)], kind="Relative")
    if version is OCPP16:
        reply = ask(station, v16.remote_start_transaction("tok", 1, not_tx))
    else:
        reply = ask(station, v201.request_start_transaction(2, v201.id_token("tok"), 1, not_tx))
        assert reply["statusInfo"]["reasonCode"] == "InvalidProfile"
    assert reply["status"] == "Rejected"
    assert station.evses[1].transaction is None


# -- over real sockets -----------------------------------------------------------------------


def test_a_csms_limits_a_station_over_the_wire() -> None:
    """SetChargingProfile from a CSMS on a real socket: the reply, then ~7 kW in the next
    meter values; GetChargingProfiles is answered and followed by ReportChargingProfiles."""

    async def friendly(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        reply = {"currentTime": "2026-01-01T00:00:00.000Z", "interval": 300, "status": "Accepted"}
        await csms.answer(ws, call, reply if call[2] == "BootNotification" else {})

    def calls(csms: FakeCsms, action: str) -> list[dict[str, Any]]:
        return [f[3] for f in csms.frames() if f[0] == 2 and f[2] == action]

    def reply_to(csms: FakeCsms, message_id: str) -> Any:
        return next((f for f in csms.frames() if f[0] in (3, 4) and f[1] == message_id), None)

    clock = ScaledClock(20)  # a meter value every 0.1 s
    station = Station(CHARGER, OCPP201, clock, StationConfig(meter_interval=2))
    with FakeCsms(friendly) as csms:
        runner = StationRunner(station, csms.url.rsplit("/", 1)[0], clock=clock, validate=True)
        runner.start()
        try:
            wait_for(lambda: station.accepted)
            station.start_session(1, "tok", EV(**EV_150KW))
            runner.wake()
            wait_for(lambda: len(calls(csms, "TransactionEvent")) >= 2)
            tx_profile = v201.charging_profile(1, 0, TX, [(0, 7_000)], kind="Relative")
            _, request = v201.set_charging_profile(1, tx_profile)
            csms.push(csms_call("set-1", "SetChargingProfile", request))
            assert wait_for(lambda: reply_to(csms, "set-1")) == [3, "set-1", {"status": "Accepted"}]
            sent_before = len(calls(csms, "TransactionEvent"))
            wait_for(lambda: len(calls(csms, "TransactionEvent")) >= sent_before + 2)
            after = calls(csms, "TransactionEvent")[sent_before:]
            _, power, _ = after[-1]["meterValue"][0]["sampledValue"]
            assert power["measurand"] == "Power.Active.Import" and power["value"] == 7_000
            _, request = v201.get_charging_profiles(42, 1)
            csms.push(csms_call("get-1", "GetChargingProfiles", request))
            assert wait_for(lambda: reply_to(csms, "get-1"))[2] == {"status": "Accepted"}
            (report,) = wait_for(lambda: calls(csms, "ReportChargingProfiles"))
            assert report["requestId"] == 42 and report["chargingProfile"][0]["id"] == 1
        finally:
            station.stop_session(1)
            runner.stop(timeout=5)


# -- whatever a CSMS sends -------------------------------------------------------------------

DATES = st.none() | st.sampled_from(
    [
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999Z",
        iso_timestamp(T0),
        iso_timestamp(T0 + 90),
        "2026-05-28T20:26:40+14:00",
    ]
)
ANY_INT = st.integers(-(2**31), 2**31 - 1)


@st.composite
def absurd_profiles(draw: st.DrawFn) -> dict[str, Any]:
    """A 2.0.1 ChargingProfileType, schema-valid in form but with any values in it."""
    periods = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "startPeriod": st.integers(-10, 10) | ANY_INT,
                    "limit": st.floats(allow_nan=False, allow_infinity=False)
                    | st.integers(0, 50_000),
                },
                optional={"numberPhases": st.integers(-1, 5)},
            ),
            min_size=1,
            max_size=4,
        )
    )
    if draw(st.integers(0, 4)):  # mostly a schedule a charger takes, to reach the physics
        start = 0
        for period in periods:
            period["startPeriod"], period["limit"] = start, abs(period["limit"])
            start += draw(st.sampled_from([30, 60, 3600, 2**20]))
    schedule = {"id": draw(ANY_INT), "chargingRateUnit": draw(st.sampled_from("WA"))}
    schedule["chargingSchedulePeriod"] = periods
    if (start := draw(DATES)) is not None:
        schedule["startSchedule"] = start
    if (duration := draw(st.none() | st.integers(-10, 10**6) | ANY_INT)) is not None:
        schedule["duration"] = duration
    found: dict[str, Any] = {
        "id": draw(ANY_INT),
        "stackLevel": draw(st.integers(-1, 3) | st.integers(0, 2**31 - 1)),
        "chargingProfilePurpose": draw(st.sampled_from([STATION_MAX, TX_DEFAULT, TX])),
        "chargingProfileKind": draw(st.sampled_from(["Absolute", "Relative", "Recurring"])),
        "chargingSchedule": [schedule],
    }
    for key, value in (
        ("recurrencyKind", draw(st.none() | st.sampled_from(["Daily", "Weekly"]))),
        ("validFrom", draw(DATES)),
        ("validTo", draw(DATES)),
        ("transactionId", draw(st.none() | st.just("nope"))),
    ):
        if value is not None:
            found[key] = value
    return found


@settings(max_examples=150, deadline=None)
@given(
    version=st.sampled_from([OCPP201, OCPP21, OCPP16]),
    raw=st.lists(absurd_profiles(), min_size=1, max_size=4),
    evse_ids=st.lists(st.sampled_from([0, 1, 0, 1, 2, -1]), min_size=4, max_size=4),
)
def test_any_profile_gets_a_valid_answer_and_the_station_charges_on(
    version: Version, raw: list[dict[str, Any]], evse_ids: list[int]
) -> None:
    station, csms, clock = make(version)
    station.start_session(1, "tok", EV(**EV_150KW))
    for candidate, evse_id in zip(raw, evse_ids, strict=False):
        if version is OCPP16:
            schedule = candidate["chargingSchedule"][0]
            profile_16 = v16.charging_profile(
                candidate["id"],
                candidate["stackLevel"],
                candidate["chargingProfilePurpose"],
                [(p["startPeriod"], p["limit"]) for p in schedule["chargingSchedulePeriod"]],
                kind=candidate["chargingProfileKind"],
                rate_unit=schedule["chargingRateUnit"],
                start_schedule=schedule.get("startSchedule"),
                duration=schedule.get("duration"),
                recurrency=candidate.get("recurrencyKind"),
                valid_from=candidate.get("validFrom"),
                valid_to=candidate.get("validTo"),
            )
            request = v16.set_charging_profile(evse_id, profile_16)
        else:
            request = v201.set_charging_profile(evse_id, candidate)
        try:
            schemas.validate(version, *request)
        except schemas.PayloadError:
            continue  # the link answers it with a CALLERROR before the station sees it
        status = ask(station, request)["status"]
        event(status)
        assert status in ("Accepted", "Rejected")
    for evse_id in (0, 1):
        if version is OCPP16:
            ask(station, v16.get_composite_schedule(evse_id, 7 * 86_400))
        else:
            ask(station, v201.get_composite_schedule(7 * 86_400, evse_id))
            ask(station, v201.get_charging_profiles(1, evse_id))
    run_for(station, csms, clock, 600)  # every message valid (MemoryCsms checks)
    limit = station.evses[1].physics.charger_limit_w
    assert 0 <= limit <= CHARGER.rated_power_w
    assert station.next_deadline() is not None
    assert station.next_deadline() <= clock.now() + 86_400
