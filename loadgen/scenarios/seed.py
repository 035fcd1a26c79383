"""The five scenarios of ``docs/scenarios.md``."""

from __future__ import annotations

from loadgen.physics import EV
from loadgen.runner import RetryBackOff
from loadgen.scenarios.harness import Harness, ScenarioFailed

MAIN = "emart_jeju_01"
#: the seed's tokens (token_user_001, ...) are app accounts, not card UIDs: a strict CSMS
#: would refuse them as ISO14443
APP_TOKEN = "Central"
#: scenario 5's station backs off 1, 2, 4, 8 s as the seed describes (no random range:
#: one station has no crowd to spread)
SEED_BACKOFF = RetryBackOff(wait_minimum=1, random_range=0, repeat_times=3, cap=8)


def scenario_1(h: Harness) -> None:
    """Connect and boot: BootNotification accepted, then heartbeats at the interval."""
    runner = h.station(MAIN)
    station = runner.station
    h.wait_for(lambda: station.boot_status, 30, "the BootNotification reply")
    h.check(station.accepted, "BootNotification accepted")
    beats: list[float] = []
    station_listener = station.listener

    def count(kind: str, detail: dict) -> None:
        if kind == "sent" and detail["action"] == "Heartbeat":
            beats.append(h.clock.now())
        if station_listener:
            station_listener(kind, detail)

    station.listener = count
    h.wait_for(lambda: beats and station.settled, station.heartbeat_interval * 1.5, "a Heartbeat")
    h.check(len(beats) >= 1, f"Heartbeat sent after {station.heartbeat_interval:g} s and answered")
    if h.api:
        _, charger = h.api_call("GET", f"/chargers/{MAIN}")
        h.check(charger.get("boot_count", 0) >= 1, "CSMS recorded the boot")
        h.check(charger.get("last_heartbeat_at") is not None, "CSMS recorded the heartbeat")
    h.stop_all()


def scenario_2(h: Harness) -> None:
    """One session: start, charge (tapering past 80 % SoC), Updated every 5 s, stop."""
    runner = h.station(MAIN, meter_interval=5)
    station = runner.station
    h.wait_for(lambda: station.accepted, 30, "an accepted boot")
    # A 64 kWh car arriving at 79 %: it draws the full 100 kW, then tapers past 80 %.
    transaction = station.start_session(
        1, "token_user_001", EV(64_000, soc=0.79, max_power_w=150_000), token_type=APP_TOKEN
    )
    runner.wake()
    if transaction is None:
        raise ScenarioFailed("the station could not start a transaction")
    h.sleep(30)
    station.stop_session(1, "Local")
    runner.wake()
    h.wait_for(lambda: station.settled, 30, "the CSMS to acknowledge every message")
    h.check(
        transaction.messages >= 7,
        f"{transaction.messages} transaction messages "
        "acknowledged (Started, Updated every 5 s, Ended)",
    )
    h.check(transaction.energy_wh > 0, f"energy delivered: {transaction.energy_wh:.0f} Wh")
    h.check(
        all(status == "Available" for status in station.evses[1].connectors.values()),
        "connector back to Available",
    )
    h.check_stored(MAIN, [transaction])
    h.stop_all()


def scenario_3(h: Harness) -> None:
    """The CSMS starts and, 10 s later, stops a transaction through its HTTP API."""
    if not h.api:
        raise ScenarioFailed("scenario 3 needs the CSMS's HTTP API: pass --api")
    runner = h.station(MAIN, meter_interval=5)
    station = runner.station
    h.wait_for(lambda: station.accepted and station.settled, 30, "an accepted boot")
    status, reply = h.api_call(
        "POST",
        f"/chargers/{MAIN}/start",
        {"evse_id": 1, "connector_id": 1, "id_token": "token_user_003"},
    )
    h.say(f"POST /chargers/{MAIN}/start -> {status} {reply}")
    h.check(status == 200 and reply.get("status") == "success", "remote start accepted")
    transaction = h.wait_for(lambda: station.evses[1].transaction, 10, "the transaction")
    h.check(transaction.token == "token_user_003", "transaction started for token_user_003")
    h.sleep(10)
    status, reply = h.api_call(
        "POST", f"/chargers/{MAIN}/stop", {"transaction_id": transaction.transaction_id}
    )
    h.say(f"POST /chargers/{MAIN}/stop -> {status} {reply}")
    h.check(status == 200 and reply.get("status") == "success", "remote stop accepted")
    h.wait_for(
        lambda: station.evses[1].transaction is None and station.settled,
        30,
        "the transaction to end",
    )
    h.check(transaction.stop_reason == "Remote", "transaction ended with reason Remote")
    h.check_stored(MAIN, [transaction])
    h.stop_all()


def scenario_4(h: Harness) -> None:
    """All five chargers: the 100 kW ones start, then the 50 kW ones; 15 s; all stop."""
    runners = {
        charger_id: h.station(charger_id, meter_interval=5) for charger_id in h.fleet.chargers
    }
    h.wait_for(
        lambda: all(r.station.accepted for r in runners.values()), 60, "every charger to boot"
    )
    h.check(True, f"{len(runners)} chargers booted in parallel")
    # emart_jeju_03's car takes at most 50 kW: the fleet peaks at 350 kW, as in the seed.
    cars = {"emart_jeju_03": EV(max_power_w=50_000)}
    fast = [c for c in runners if h.fleet.chargers[c].rated_power_w >= 100_000]
    slow = [c for c in runners if c not in fast]
    transactions = {}
    for group in (fast, slow):
        for charger_id in group:
            runner = runners[charger_id]
            transactions[charger_id] = runner.station.start_session(
                1,
                f"token_user_{len(transactions) + 100}",
                cars.get(charger_id, EV()),
                token_type=APP_TOKEN,
            )
            runner.wake()
        h.sleep(5)
    h.sleep(10)
    peak = sum(
        r.station.evses[1].physics.power_w
        for r in runners.values()
        if r.station.evses[1].physics is not None
    )
    h.check(abs(peak - 350_000) < 1, f"fleet power {peak / 1000:.0f} kW with all charging")
    for runner in runners.values():
        runner.station.stop_session(1, "Local")
        runner.wake()
    h.wait_for(
        lambda: all(r.station.settled for r in runners.values()),
        30,
        "every message to be acknowledged",
    )
    h.check(
        all(
            all(s == "Available" for s in r.station.evses[1].connectors.values())
            for r in runners.values()
        ),
        "every charger back to Available",
    )
    for charger_id, transaction in transactions.items():
        h.check_stored(charger_id, [transaction])
    if h.api:
        _, stats = h.api_call("GET", "/stats")
        h.check(
            stats.get("peak_power_w", 0) >= 350_000 - 1,
            f"CSMS peak power {stats.get('peak_power_w', 0) / 1000:.0f} kW",
        )
    h.stop_all()


def scenario_5(h: Harness, down_timeout: float = 120.0, back_timeout: float = 180.0) -> None:
    """Errors and reconnection: the CSMS dies mid-transaction and comes back.

    The station backs off (1, 2, 4 s ...), reconnects, boots again and resumes heartbeats
    and its transaction; what it measured offline is replayed and nothing is lost."""
    runner = h.station(MAIN, meter_interval=5, backoff=SEED_BACKOFF)
    station = runner.station
    h.wait_for(lambda: station.accepted, 30, "an accepted boot")
    transaction = station.start_session(
        1, "token_user_005", EV(64_000, soc=0.3), token_type=APP_TOKEN
    )
    runner.wake()
    h.wait_for(lambda: transaction.messages >= 2 and station.settled, 15, "charging")
    first_connects = runner.connects
    h.say(f"STOP THE CSMS NOW: waiting up to {down_timeout:g} s for the connection to drop")
    h.wait_for(lambda: not station.online, 1e9, "the CSMS to go away", real_floor=down_timeout)
    h.check(True, "station noticed the connection drop")
    h.say(f"START THE CSMS AGAIN: waiting up to {back_timeout:g} s for it to come back")
    h.wait_for(
        lambda: runner.connects > first_connects and station.accepted,
        1e9,
        "the CSMS to come back",
        real_floor=back_timeout,
    )
    h.check(True, "station reconnected and booted again")
    offline = transaction.offline_messages
    h.wait_for(lambda: station.settled, 60, "the offline queue to drain")
    h.check(True, f"{offline} transaction messages queued while offline were replayed")
    h.sleep(10)
    station.stop_session(1, "Local")
    runner.wake()
    h.wait_for(lambda: station.settled, 30, "the end of the transaction")
    h.check(transaction.ended_at is not None, "transaction resumed and ended")
    h.check_stored(MAIN, [transaction])
    h.stop_all()


SCENARIOS = {
    "1": scenario_1,
    "2": scenario_2,
    "3": scenario_3,
    "4": scenario_4,
    "5": scenario_5,
}
