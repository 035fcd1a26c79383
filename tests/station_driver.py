"""Drive a pure :class:`~loadgen.station.Station` on a fake clock, against a CSMS in memory.

The in-memory CSMS validates every request against the version's schema and answers with
replies that validate too, so a test that passes here has produced only valid OCPP.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from loadgen.physics import FakeClock
from loadgen.protocols import OCPP16, OCPP21, OCPP201, Version, parse_timestamp, schemas, v201
from loadgen.station import Station

Responder = Callable[[dict[str, Any]], dict[str, Any]]
NOW = "2026-01-01T00:00:00.000Z"
#: how each version's station reports connector status by default (2.1 deprecates
#: StatusNotification: the Connector's AvailabilityState goes in a NotifyEvent)
STATUS_MESSAGE = {
    OCPP16.name: "StatusNotification",
    OCPP201.name: "StatusNotification",
    OCPP21.name: "NotifyEvent",
}


class MemoryCsms:
    def __init__(self, version: Version, boot_status: str = "Accepted", interval: int = 30) -> None:
        self.version = version
        self.boot_status = boot_status
        self.interval = interval
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.responders: dict[str, Responder] = {}
        self._ids = itertools.count(1)

    def reply(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        schemas.validate(self.version, action, payload)
        self.received.append((action, payload))
        responder = self.responders.get(action) or self._default
        result = responder(payload) if action in self.responders else self._default(action, payload)
        schemas.validate(self.version, action, result, response=True)
        return result

    def _default(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        is16 = self.version is OCPP16
        if action == "BootNotification":
            return {"currentTime": NOW, "interval": self.interval, "status": self.boot_status}
        if action == "Heartbeat":
            return {"currentTime": NOW}
        if action == "Authorize":
            return (
                {"idTagInfo": {"status": "Accepted"}}
                if is16
                else {"idTokenInfo": {"status": "Accepted"}}
            )
        if action == "StartTransaction":
            return {"transactionId": next(self._ids), "idTagInfo": {"status": "Accepted"}}
        if action == "TransactionEvent":
            return {} if payload["eventType"] == "Started" else {"totalCost": 1.0}
        return {}

    def actions(self) -> list[str]:
        return [action for action, _ in self.received]

    def of(self, action: str) -> list[dict[str, Any]]:
        return [payload for name, payload in self.received if name == action]

    def statuses(self) -> list[dict[str, Any]]:
        """The connector statuses reported, in order, whichever way: 1.6's and 2.x's
        StatusNotification payloads, and (2.x) a NotifyEvent's AvailabilityState events as
        ``{"evseId", "connectorId", "connectorStatus"}``, as a CSMS reads them."""
        reported: list[dict[str, Any]] = []
        for action, payload in self.received:
            if action == "StatusNotification":
                reported.append(payload)
            elif action == "NotifyEvent":
                reported.extend(
                    {"evseId": evse_id, "connectorId": connector_id, "connectorStatus": status}
                    for evse_id, connector_id, status, _ in v201.availability_states(payload)
                )
        return reported


def drive(station: Station, csms: MemoryCsms, limit: int = 10_000) -> int:
    """Send every CALL the station has ready now; returns how many went out."""
    sent = 0
    while (call := station.next_call()) is not None:
        assert call.payload is not None
        station.on_call_result(call, csms.reply(call.action, call.payload))
        sent += 1
        assert sent < limit, "the station keeps sending"
    return sent


def run_for(station: Station, csms: MemoryCsms | None, clock: FakeClock, seconds: float) -> None:
    """Let ``seconds`` of simulated time pass, firing every timer when it is due."""
    end = clock.now() + seconds
    while True:
        if csms is not None and station.online:
            drive(station, csms)
        deadline = station.next_deadline()
        if deadline is None or deadline > end:
            break
        clock.set(max(deadline, clock.now()))
        station.tick()
    clock.set(end)
    station.tick()
    if csms is not None and station.online:
        drive(station, csms)


class SlowWallClock:
    """A fake wall clock that runs ``scale`` times slower than the fake simulated clock
    ``clock``, from ``start``: what ``--time-scale`` does at run time (the station's clock
    paces it, the wall clock stamps what it sends)."""

    def __init__(self, clock: FakeClock, scale: float, start: float) -> None:
        self.clock, self.scale, self.start, self.sim0 = clock, scale, start, clock.now()

    def now(self) -> float:
        return self.start + (self.clock.now() - self.sim0) / self.scale


#: where a station puts its own time in what it sends: the time of an event or a reading,
#: when a report was made, when a composite schedule starts, (2.1) when a priced period
#: began; a CSMS's own dateTimes that a station only echoes (a profile's startSchedule, a
#: message's startDateTime) are not these
STATION_TIME_KEYS = frozenset({"timestamp", "generatedAt", "scheduleStart", "startPeriod"})


def station_times(payload: object) -> list[float]:
    """Every time (epoch seconds) the station stamped ``payload`` with, at any depth."""
    found: list[float] = []
    stack = [payload]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key in STATION_TIME_KEYS and isinstance(value, str):
                    found.append(parse_timestamp(value).timestamp())
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return found
