"""The harness the seed's scenarios run in (``python -m loadgen.scenarios``).

Each scenario drives real stations (the same :class:`~loadgen.station.Station` and link as
the load generator) on gevent, prints what happens in the seed's words
(``charging started: <tx>``, ``TransactionEvent sent (Updated): 0.50 kWh`` ...) and checks
every step. With ``--api`` (csms_stub's HTTP API, or one like it) the checks also compare
what the CSMS stored with what the stations sent.
"""

from __future__ import annotations

import collections
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import gevent

from loadgen import fleet as fleets
from loadgen.link import NullObserver
from loadgen.physics import ScaledClock
from loadgen.protocols import get_version
from loadgen.runner import RetryBackOff, StationRunner
from loadgen.station import Station, StationConfig, Transaction


class ScenarioFailed(Exception):
    """A step's check did not hold; the message says which."""


class ProtocolErrors(NullObserver):
    """A CallObserver that counts what the CSMS sent that broke OCPP-J or the schemas."""

    def __init__(self) -> None:
        self.kinds: collections.Counter[str] = collections.Counter()

    def protocol_error(self, kind: str) -> None:
        self.kinds[kind] += 1


@dataclass
class Harness:
    csms: str
    api: str | None
    time_scale: float = 1.0
    out: TextIO | None = None
    fleet: fleets.Fleet = field(default_factory=lambda: fleets.load(fleets.SEED_FLEET))
    version: str = "2.0.1"
    #: security profile 1: used for chargers whose fleet entry has no password; never logged
    password: str | None = field(default=None, repr=False)
    #: security profiles 2 and 3 (wss://)
    ssl_context: Any = None
    #: --ocpp-validate: the stations check every frame both ways against the schemas
    validate: bool = False
    checks: int = 0
    failures: list[str] = field(default_factory=list)
    runners: list[StationRunner] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.clock = ScaledClock(self.time_scale)
        self.protocol_errors = ProtocolErrors()

    def check_protocol(self) -> None:
        """With ``validate``: nothing the CSMS sent broke the schemas or OCPP-J."""
        if self.validate:
            kinds = dict(self.protocol_errors.kinds)
            self.check(not kinds, f"every frame valid OCPP {self.version} ({kinds or 'both ways'})")

    # -- output and checks ---------------------------------------------------------------

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def check(self, condition: bool, what: str) -> bool:
        self.checks += 1
        self.say(f"  {'ok  ' if condition else 'FAIL'} {what}")
        if not condition:
            self.failures.append(what)
        return condition

    # -- stations ------------------------------------------------------------------------

    def station(
        self, charger_id: str, *, meter_interval: float = 5.0, backoff: RetryBackOff | None = None
    ) -> StationRunner:
        charger = self.fleet.chargers[charger_id]
        station = Station(
            charger,
            get_version(self.version),
            self.clock,
            StationConfig(meter_interval=meter_interval),
            listener=lambda kind, detail: self._narrate(charger_id, kind, detail),
        )
        password = charger.password or self.password
        runner = StationRunner(
            station,
            self.csms,
            clock=self.clock,
            backoff=backoff,
            on_event=lambda kind, detail: self._narrate(charger_id, kind, detail),
            basic_auth=(charger.id, password) if password else None,
            ssl_context=self.ssl_context,
            validate=self.validate,
            observer=self.protocol_errors,
        )
        self.runners.append(runner)
        runner.start()
        return runner

    def _narrate(self, charger_id: str, kind: str, detail: dict[str, Any]) -> None:
        prefix = f"[{charger_id}]"
        if kind == "boot":
            self.say(
                f"{prefix} BootNotification: {detail['status']} "
                f"(heartbeat interval {detail['interval']:g} s)"
            )
        elif kind == "started":
            self.say(f"{prefix} charging started: {detail['transaction'].transaction_id}")
        elif kind == "meter":
            sent = (
                "MeterValues sent" if self.version == "1.6" else "TransactionEvent sent (Updated)"
            )
            self.say(
                f"{prefix} {sent}: "
                f"{(detail['energy_wh'] - detail['transaction'].start_wh) / 1000:.2f} kWh, "
                f"{detail['power_w'] / 1000:.1f} kW, SoC {detail['soc']:.1f} %"
            )
        elif kind == "stopped":
            transaction = detail["transaction"]
            self.say(
                f"{prefix} charging stopped: {transaction.transaction_id} "
                f"(total: {transaction.energy_wh / 1000:.2f} kWh)"
            )
        elif kind == "sent" and detail["action"] == "Heartbeat":
            self.say(f"{prefix} Heartbeat")
        elif kind == "disconnected":
            self.say(f"{prefix} connection closed ({detail['code']}: {detail['reason']})")
        elif kind == "retry":
            self.say(
                f"{prefix} reconnect attempt {detail['attempt']} in "
                f"{detail['delay']:.1f} s ({detail['reason']})"
            )
        elif kind == "connected" and detail["count"] > 1:
            self.say(f"{prefix} reconnected")
        elif kind == "csms_call":
            self.say(f"{prefix} CSMS asks {detail['action']} {json.dumps(detail['payload'])}")
        elif kind == "gave_up":
            self.say(f"{prefix} gave up connecting: {detail['reason']}")

    def wait_for(
        self, condition: Callable[[], Any], simulated: float, what: str, real_floor: float = 5.0
    ) -> Any:
        """Wait until ``condition()`` is truthy: ``simulated`` seconds of scenario time
        (but at least ``real_floor`` real seconds, for the network)."""
        deadline = time.monotonic() + max(real_floor, self.clock.real_seconds(simulated))
        while time.monotonic() < deadline:
            result = condition()
            if result:
                return result
            gevent.sleep(0.02)
        raise ScenarioFailed(f"timed out waiting for {what}")

    def sleep(self, simulated: float) -> None:
        gevent.sleep(self.clock.real_seconds(simulated))

    def stop_all(self) -> None:
        gevent.joinall([gevent.spawn(runner.stop) for runner in self.runners], timeout=30)
        self.runners.clear()

    # -- the CSMS's HTTP API -------------------------------------------------------------

    def api_call(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        assert self.api is not None
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.api.rstrip("/") + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def stored_transactions(self, charger_id: str) -> dict[str, dict[str, Any]]:
        _, rows = self.api_call("GET", f"/transactions?charger_id={charger_id}")
        return {row["transaction_id"]: row for row in rows}

    def check_stored(self, charger_id: str, transactions: list[Transaction]) -> None:
        """The CSMS has each transaction, closed, with the station's energy."""
        if self.api is None:
            return
        stored = self.stored_transactions(charger_id)
        for transaction in transactions:
            row = stored.get(transaction.transaction_id)
            if not self.check(
                row is not None, f"CSMS stored transaction {transaction.transaction_id}"
            ):
                continue
            self.check(row["end_time"] is not None, f"CSMS closed {transaction.transaction_id}")
            self.check(
                abs(row["energy_consumed"] - transaction.energy_wh / 1000) < 0.001,
                f"CSMS energy {row['energy_consumed']:.3f} kWh = station's "
                f"{transaction.energy_wh / 1000:.3f} kWh",
            )
