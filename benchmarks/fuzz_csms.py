"""A hostile CSMS against the load generator's stations: does anything it sends break them?

    .venv/bin/python benchmarks/fuzz_csms.py                      # 1,000 stations, 30 s
    .venv/bin/python benchmarks/fuzz_csms.py --stations 100 --duration 10 --seed 7

Two processes on 127.0.0.1. The **hostile CSMS** (``fuzz_csms.py serve``, asyncio
``websockets``) answers the stations' CALLs with garbage (non-JSON, wrong message types,
wrong or unknown message ids, schema-invalid results, CALLERRORs with odd codes, huge and
binary frames, nothing at all), sends hostile CALLs of its own (unknown actions, invalid
payloads, valid but absurd values, floods), closes connections at random with random close
codes and refuses handshakes (HTTP 500 / 404, no or a wrong subprotocol). It checks every
answer the stations give to its CALLs. The **stations** (``fuzz_csms.py stations``) are
real :class:`~loadgen.station.Station` objects driven by
:class:`~loadgen.runner.StationRunner` and :class:`~loadgen.link.Link` under gevent in one
process, observed by the load generator's own :class:`~loadgen.metrics.observer.MetricsObserver`,
as a Locust worker runs them; some charge EVs so that transaction messages are in flight.

``--ocpp-version 2.1`` adds OCPP 2.1's hostility: the 2.1-only CSMS calls (tariffs,
DER control, battery swap, priority charging, periodic event streams...) absurd and
invalid, SEND frames (which a station must never answer) and CALLRESULTERRORs about the
stations' CALLRESULTs, whole and broken, and replies that carry 2.1's absurd but valid
transaction limits and tariffs.

Everything is seeded (``--seed``): the same seed sends the same kinds of hostility in the
same proportions (timing still varies). At the end it checks that the stations' process
did not crash, logged no traceback and no unhandled greenlet error, every station is still
alive (connected or in back-off), every CSMS CALL got a result or the OCPP-correct CALLERROR,
the metrics counted the protocol errors, and memory stayed bounded; prints a table; exit 1
if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from _common import HOST
from _common.baseline import ocpp_reply
from _common.clients import run_worker
from _common.figures import machine_note, print_table
from _common.machine import free_port, install_exit_handlers, raise_nofile, split_cores
from _common.servers import ServerProcess

# Answers the stations' CALLs get, with weights: mostly correct, so stations boot and
# charge and the hostile answers hit every state.
REPLY_KINDS = {
    "correct": 55,
    "not_json": 4,
    "wrong_type": 4,  # [7, id, ...]: a message type OCPP-J does not have
    "short_frame": 3,  # [3, id]
    "unknown_id": 4,
    "invalid_result": 8,  # schema-invalid payload with the right id
    "odd_callerror": 5,  # CALLERROR with a code OCPP does not define, odd details
    "huge_frame": 1,  # over the link's max_size
    "binary_frame": 3,
    "never_answer": 5,
    "late_answer": 3,  # answered after the station's call timeout
    "close": 3,  # the connection closed with a random code instead of an answer
    "correct_twice": 2,
}

# CSMS-initiated CALLs (2.0.1): what each should get back. "result": a CALLRESULT;
# a set: a CALLERROR with one of these codes.
SCHEMA_ERRORS = frozenset(
    {
        "FormatViolation",
        "FormationViolation",
        "OccurrenceConstraintViolation",
        "PropertyConstraintViolation",
        "TypeConstraintViolation",
        "ProtocolError",
        "RpcFrameworkError",
    }
)
NOT_IMPLEMENTED = frozenset({"NotImplemented", "NotSupported"})

ABSURD_CALLS: list[tuple[str, dict[str, Any]]] = [
    (
        "RequestStartTransaction",
        {"idToken": {"idToken": "x", "type": "ISO14443"}, "remoteStartId": 1, "evseId": 2**31},
    ),
    (
        "RequestStartTransaction",
        {"idToken": {"idToken": "\u0000" * 36, "type": "Central"}, "remoteStartId": -(2**31)},
    ),
    ("RequestStopTransaction", {"transactionId": "\u0000" * 36}),
    (
        "SetChargingProfile",
        {
            "evseId": 0,
            "chargingProfile": {
                "id": -(2**31),
                "stackLevel": 2**31 - 1,
                "chargingProfilePurpose": "ChargingStationMaxProfile",
                "chargingProfileKind": "Recurring",
                "recurrencyKind": "Weekly",
                "validTo": "9999-12-31T23:59:59Z",
                "chargingSchedule": [
                    {
                        "id": 0,
                        "startSchedule": "0001-01-01T00:00:00Z",
                        "chargingRateUnit": "A",
                        "chargingSchedulePeriod": [
                            {"startPeriod": 0, "limit": 1e308, "numberPhases": 3},
                            {"startPeriod": 2**31 - 1, "limit": 0},
                        ],
                    }
                ],
            },
        },
    ),
    (
        "SetChargingProfile",
        {
            "evseId": 1,
            "chargingProfile": {
                "id": 1,
                "stackLevel": 0,
                "chargingProfilePurpose": "TxProfile",
                "chargingProfileKind": "Relative",
                "transactionId": "\u0000" * 36,
                "chargingSchedule": [
                    {
                        "id": 1,
                        "chargingRateUnit": "W",
                        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": -1}],
                    }
                ],
            },
        },
    ),
    ("GetCompositeSchedule", {"duration": 2**31 - 1, "evseId": 0, "chargingRateUnit": "A"}),
    ("GetCompositeSchedule", {"duration": -1, "evseId": 2**31}),
    ("GetChargingProfiles", {"requestId": -1, "chargingProfile": {"stackLevel": -1}}),
    ("ClearChargingProfile", {"chargingProfileCriteria": {"evseId": 2**31}}),
    ("Reset", {"type": "Immediate"}),
    ("Reset", {"type": "OnIdle", "evseId": 2**31}),
    ("ChangeAvailability", {"operationalStatus": "Inoperative", "evse": {"id": 2**31}}),
    ("ChangeAvailability", {"operationalStatus": "Operative"}),
    ("TriggerMessage", {"requestedMessage": "BootNotification"}),
    ("TriggerMessage", {"requestedMessage": "StatusNotification", "evse": {"id": 2**31}}),
    ("TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"}),
    ("UnlockConnector", {"evseId": 2**31, "connectorId": -1}),
    (
        "GetVariables",
        {"getVariableData": [{"component": {"name": "\u0000"}, "variable": {"name": "x" * 50}}]},
    ),
    (
        "SetVariables",
        {
            "setVariableData": [
                {
                    "component": {"name": "OCPPCommCtrlr"},
                    "variable": {"name": "HeartbeatInterval"},
                    "attributeValue": "0",
                }
            ]
        },
    ),
    ("ClearCache", {}),
    ("DataTransfer", {"vendorId": "\u0000" * 255, "data": [[[[[]]]]]}),
]
ABSURD_SET_VALUES = ["0", "-1", "1e-9", "nan", "inf", "1e400", "99999999999999999999", "x"]

INVALID_CALLS: list[tuple[str, Any]] = [
    ("RequestStartTransaction", {}),
    ("RequestStartTransaction", {"idToken": "not an object", "remoteStartId": "1"}),
    ("Reset", {"type": "Sideways"}),
    ("ChangeAvailability", {"operationalStatus": 1}),
    ("TriggerMessage", {"requestedMessage": None}),
    ("GetVariables", {"getVariableData": "all"}),
    ("SetVariables", {"setVariableData": [{}]}),
    ("UnlockConnector", {"evseId": "one"}),
    ("RequestStopTransaction", {"transactionId": 7}),
    ("Reset", {"type": "Immediate", "surprise": True}),
]
# OCPP 2.1 only: schema-valid but absurd (a CALLRESULT is due) and schema-invalid ones
ABSURD_TARIFF = {
    "tariffId": "\u0000" * 60,
    "currency": "XXX",
    "energy": {"prices": [{"priceKwh": 1e308}]},
    "chargingTime": {"prices": [{"priceMinute": -1e308}]},
    "fixedFee": {"prices": [{"priceFixed": 5e-324}]},
    "validFrom": "0001-01-01T00:00:00Z",
}
ABSURD_CALLS_21: list[tuple[str, dict[str, Any]]] = [
    ("SetDefaultTariff", {"evseId": 0, "tariff": ABSURD_TARIFF}),
    ("SetDefaultTariff", {"evseId": 2**31, "tariff": {"tariffId": "t", "currency": "EUR"}}),
    (
        "SetDefaultTariff",
        {"evseId": 1, "tariff": {**ABSURD_TARIFF, "validFrom": "9999-12-31T23:59:59Z"}},
    ),
    ("ChangeTransactionTariff", {"transactionId": "\u0000" * 36, "tariff": ABSURD_TARIFF}),
    ("GetTariffs", {"evseId": 2**31}),
    ("ClearTariffs", {"tariffIds": ["\u0000" * 60] * 50, "evseId": 2**31}),
    ("ClearTariffs", {}),
    ("UsePriorityCharging", {"transactionId": "x", "activate": True}),
    ("UpdateDynamicSchedule", {"chargingProfileId": -1, "scheduleUpdate": {"limit": 1e308}}),
    ("RequestBatterySwap", {"idToken": {"idToken": "x" * 255, "type": "VIN"}, "requestId": 0}),
    ("GetDERControl", {"requestId": -(2**31)}),
    ("ClearDERControl", {"isDefault": True}),
    ("AFRRSignal", {"timestamp": "0001-01-01T00:00:00Z", "signal": -(2**31)}),
    ("AdjustPeriodicEventStream", {"id": 2**31, "params": {"interval": 0, "values": 0}}),
    ("GetPeriodicEventStream", {}),
    (
        "NotifyAllowedEnergyTransfer",
        {"transactionId": "\u0000", "allowedEnergyTransfer": ["DC_BPT"] * 10},
    ),
    ("NotifyWebPaymentStarted", {"evseId": 2**31, "timeout": -1}),
    (
        "RequestStartTransaction",
        {"idToken": {"idToken": "\u0000" * 255, "type": "x" * 20}, "remoteStartId": 1},
    ),
]
INVALID_CALLS_21: list[tuple[str, Any]] = [
    ("SetDefaultTariff", {"evseId": 1}),
    ("SetDefaultTariff", {"evseId": 1, "tariff": {"tariffId": "t", "currency": "EURO!"}}),
    ("ChangeTransactionTariff", {"transactionId": 1, "tariff": {}}),
    ("GetTariffs", {"evseId": "all"}),
    ("ClearTariffs", {"tariffIds": "all"}),
    ("UsePriorityCharging", {"transactionId": "x"}),
    ("SetDERControl", {"isDefault": "yes"}),
    ("RequestBatterySwap", {"requestId": 1}),
    (
        "RequestStartTransaction",
        {"idToken": {"idToken": "x", "type": "y" * 21}, "remoteStartId": 1},
    ),
]
#: what a 2.1 CSMS answers that a 2.0.1 one cannot: limits and tariffs, absurd but valid
ABSURD_LIMITS = [
    {"maxEnergy": 0},
    {"maxTime": 0, "maxSoC": 0},
    {"maxCost": 1e308, "maxEnergy": 1e308},
    {"maxEnergy": -1.0, "maxTime": -(2**31)},
    {},
]
UNKNOWN_ACTIONS = ["FlyToTheMoon", "x" * 1000, "Reset\u0000", "../v16/schemas/Reset", "__class__"]
# Frames that are not well-formed CALLs: a CALLERROR (id -1 or theirs) or nothing.
BROKEN_CALLS = [
    '[2, "b1", "Reset"]',
    '[2, "b2", "Reset", {}, "extra"]',
    '[2, 5, "Reset", {"type": "Immediate"}]',
    '[2, "b4", 5, {}]',
    '[2, "b5", "Reset", []]',
    '[2, "b6", "", {}]',
    "[2]",
]


def weighted(rng: random.Random, table: dict[str, int]) -> str:
    kinds = list(table)
    return rng.choices(kinds, weights=[table[k] for k in kinds])[0]


def absurd_expected(version: str, action: str, payload: Any) -> str:
    """A 2.0.1 absurd CALL is a result; 2.1's schemas refuse a few of its values (a
    negative stackLevel or connectorId): then the schema's CALLERROR is the right answer."""
    from loadgen.protocols import get_version, schemas

    try:
        schemas.validate(get_version(version), action, payload)
    except schemas.PayloadError:
        return "schema_error"
    return "result"


def hostile_call(rng: random.Random, version: str = "2.0.1") -> tuple[str, Any, str]:
    """(action, payload, expected): a CSMS CALL and what a correct station answers."""
    roll = rng.random()
    if version == "2.1" and rng.random() < 0.4:
        if roll < 0.6:
            action, payload = rng.choice(ABSURD_CALLS_21)
            return action, payload, "result"
        action, payload = rng.choice(INVALID_CALLS_21)
        return action, payload, "schema_error"
    if roll < 0.5:
        action, payload = rng.choice(ABSURD_CALLS)
        if action == "SetVariables":
            payload = json.loads(json.dumps(payload))
            payload["setVariableData"][0]["attributeValue"] = rng.choice(ABSURD_SET_VALUES)
        return action, payload, absurd_expected(version, action, payload)
    if roll < 0.85:
        action, payload = rng.choice(INVALID_CALLS)
        return action, payload, "schema_error"
    return rng.choice(UNKNOWN_ACTIONS), {}, "not_implemented"


def invalid_result(rng: random.Random, action: str) -> Any:
    return rng.choice(
        [
            {"status": 42},
            {"interval": "soon", "currentTime": 7, "status": "Accepted"},
            {"currentTime": "yesterday", "interval": -(2**40), "status": "Accepted"},
            {"currentTime": "2024-01-01T00:00:00Z", "interval": 0, "status": "Pending"},
            {"idTokenInfo": {"status": "Unheard"}},
            {"idTokenInfo": "Accepted", "totalCost": "free"},
            [],
            None,
            "result",
            {"x" * 100: [None] * 100},
        ]
    )


def correct_result(action: str, rng: random.Random | None = None) -> dict[str, Any]:
    """The smallest valid reply (the same in 2.0.1 and 2.1); given ``rng`` (2.1), sometimes
    with a transaction limit or a driver's tariff, absurd but valid."""
    reply = ocpp_reply(heartbeat_interval=30)("ocpp2.0.1", action)
    if rng is not None and rng.random() < 0.3:
        if action == "TransactionEvent":
            reply = {**reply, "transactionLimit": rng.choice(ABSURD_LIMITS)}
        elif action == "Authorize":
            reply = {
                **reply,
                "tariff": rng.choice([ABSURD_TARIFF, {**ABSURD_TARIFF, "currency": "EUR"}]),
            }
    return reply


# -- the hostile CSMS (asyncio) -------------------------------------------------------------


class HostileCsms:
    """Answers and calls the stations badly, and judges what they answer."""

    def __init__(self, seed: int, call_timeout: float, calls_per_second: float) -> None:
        self.rng = random.Random(seed)
        self.call_timeout = call_timeout
        self.calls_per_second = calls_per_second
        self.stats: Counter[str] = Counter()
        self.wrong: list[str] = []  # a few examples of wrong answers

    def stat(self, key: str, n: int = 1) -> None:
        self.stats[key] += n

    # handshake hostility

    def process_request(self, ws: Any, request: Any) -> Any:
        roll = self.rng.random()
        if roll < 0.02:
            self.stat("handshake_http_500")
            return ws.respond(500, "hostile CSMS: internal error\n")
        if roll < 0.03:
            self.stat("handshake_http_404")
            return ws.respond(404, "hostile CSMS: no such charger\n")
        return None

    def select_subprotocol(self, ws: Any, offered: Any) -> Any:
        roll = self.rng.random()
        if roll < 0.02:
            self.stat("handshake_no_subprotocol")
            return None
        return offered[0] if offered else None

    def process_response(self, ws: Any, request: Any, response: Any) -> Any:
        if response.status_code == 101 and self.rng.random() < 0.01:
            self.stat("handshake_wrong_subprotocol")
            del response.headers["Sec-WebSocket-Protocol"]
            response.headers["Sec-WebSocket-Protocol"] = "ocpp9.9"
        return response

    # a connection

    async def handle(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        self.stat("connections")
        pending: dict[str, tuple[float, str, str]] = {}  # id -> (sent at, action, expected)
        if ws.subprotocol == "ocpp2.1":
            self.stat("connections_ocpp2.1")
        caller = asyncio.create_task(self.call_station(ws, pending))
        try:
            async for frame in ws:
                await self.on_frame(ws, frame, pending)
        except ConnectionClosed:
            pass
        finally:
            caller.cancel()
            now = time.monotonic()
            for sent_at, action, _ in pending.values():
                # answered too late or not at all while the connection stayed up
                if now - sent_at > self.call_timeout:
                    self.stat("csms_calls_unanswered")
                    self.example(f"{action}: no answer in {self.call_timeout:g} s")
                else:
                    self.stat("csms_calls_cut_by_close")

    async def on_frame(self, ws: Any, frame: Any, pending: dict[str, Any]) -> None:
        if isinstance(frame, bytes):
            self.stat("station_binary_frames")
            return
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError:
            self.stat("station_non_json")
            self.example(f"non-JSON from a station: {frame[:80]!r}")
            return
        if not isinstance(message, list) or not message:
            self.stat("station_malformed")
            return
        if len(message) > 1 and isinstance(message[1], str) and message[1].startswith("send-"):
            # an answer (or anything) with the id of a SEND: OCPP-J 2.1 forbids any
            self.stat("sends_answered")
            self.example(f"a SEND was answered: {frame[:80]!r}")
        elif message[0] == 2 and len(message) == 4:
            self.stat("station_calls")
            await self.answer(ws, message)
        elif message[0] in (3, 4) and len(message) >= 3:
            self.judge(message, pending)
        elif message[0] == 5 and len(message) == 5 and ws.subprotocol == "ocpp2.1":
            self.stat("station_callresulterrors")  # about an invalid CALLRESULT of ours
        else:
            self.stat("station_malformed")

    def judge(self, message: list[Any], pending: dict[str, Any]) -> None:
        message_id = message[1]
        if message_id == "-1" or message_id not in pending:
            # a CALLERROR to a frame we broke on purpose (no usable id): that is correct
            self.stat("broken_call_answers" if message[0] == 4 else "answers_to_unknown_ids")
            return
        _, action, expected = pending.pop(message_id)
        code = message[2] if message[0] == 4 else None
        ok = (
            (expected == "result" and code is None)
            or (expected == "schema_error" and code in SCHEMA_ERRORS)
            or (expected == "not_implemented" and code in NOT_IMPLEMENTED)
        )
        self.stat("csms_calls_answered")
        if not ok:
            self.stat("csms_calls_wrong_answer")
            got = "CALLRESULT" if code is None else f"CALLERROR {code}"
            self.example(f"{action[:40]}: expected {expected}, got {got}")

    def example(self, text: str) -> None:
        if len(self.wrong) < 20 and text not in self.wrong:
            self.wrong.append(text)

    async def answer(self, ws: Any, call: list[Any]) -> None:
        rng = self.rng
        _, message_id, action, _ = call
        kind = weighted(rng, REPLY_KINDS)
        if action == "BootNotification" and kind == "correct" and rng.random() < 0.1:
            kind = "invalid_result"
        self.stat(f"reply_{kind}")
        dumps = orjson.dumps
        v21 = ws.subprotocol == "ocpp2.1"
        if kind == "correct":
            reply = correct_result(action, rng if v21 else None)
            await ws.send(dumps([3, message_id, reply]).decode())
        elif kind == "correct_twice":
            text = dumps([3, message_id, correct_result(action)]).decode()
            await ws.send(text)
            await ws.send(text)
        elif kind == "not_json":
            await ws.send(rng.choice(["{", "[3, ", "\u0000", "null", "[]", "NaN", '"'] * 1))
        elif kind == "wrong_type":
            await ws.send(dumps([rng.choice([0, 1, 5, 7, -3, 2**70]), message_id, {}]).decode())
        elif kind == "short_frame":
            await ws.send(dumps([rng.choice([3, 4]), message_id]).decode())
        elif kind == "unknown_id":
            await ws.send(dumps([3, f"{message_id}-other", correct_result(action)]).decode())
        elif kind == "invalid_result":
            await ws.send(dumps([3, message_id, invalid_result(rng, action)]).decode())
        elif kind == "odd_callerror":
            code = rng.choice(["", "Oops", "\u0000", "x" * 300, 42, None])
            await ws.send(dumps([4, message_id, code, {"not": "a string"}, []]).decode())
        elif kind == "huge_frame":
            await ws.send(dumps([3, message_id, {"pad": "x" * (2 << 20)}]).decode())
        elif kind == "binary_frame":
            await ws.send(dumps([3, message_id, correct_result(action)]))
        elif kind == "late_answer":
            asyncio.get_running_loop().call_later(
                self.call_timeout + 1, self._send_late, ws, message_id, action
            )
        elif kind == "close":
            code = rng.choice([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011, 3000, 4999])
            await ws.close(code, rng.choice(["", "bye", "x" * 120]))

    def _send_late(self, ws: Any, message_id: str, action: str) -> None:
        text = orjson.dumps([3, message_id, correct_result(action)]).decode()
        task = asyncio.ensure_future(ws.send(text))
        task.add_done_callback(lambda t: t.exception())  # closed meanwhile: fine

    async def call_station(self, ws: Any, pending: dict[str, Any]) -> None:
        """CSMS-initiated hostility: CALLs at ``calls_per_second`` on average, floods, closes."""
        rng = self.rng
        ids = iter(range(1, 1 << 62))
        while True:
            await asyncio.sleep(rng.expovariate(self.calls_per_second))
            roll = rng.random()
            count = rng.randint(20, 60) if roll < 0.05 else 1
            if roll < 0.05:
                self.stat("floods")
            v21 = ws.subprotocol == "ocpp2.1"
            for _ in range(count):
                if rng.random() < 0.08:
                    self.stat("csms_broken_calls")
                    await ws.send(rng.choice(BROKEN_CALLS))
                    continue
                if v21 and rng.random() < 0.15:
                    await self.send_21_frame(ws, next(ids), pending)
                    continue
                action, payload, expected = hostile_call(rng, "2.1" if v21 else "2.0.1")
                message_id = f"h{next(ids)}"
                pending[message_id] = (time.monotonic(), action, expected)
                self.stat("csms_calls")
                await ws.send(orjson.dumps([2, message_id, action, payload]).decode())
            if rng.random() < 0.02:
                self.stat("random_closes")
                code = rng.choice([1000, 1001, 1006 - 5, 1011, 1012, 1013, 4000])
                await ws.close(code, "hostile CSMS closes")
                return

    async def send_21_frame(self, ws: Any, serial: int, pending: dict[str, Any]) -> None:
        """OCPP-J 2.1's own frames: SENDs (ids ``send-...``: nothing may come back), whole or
        broken, and CALLRESULTERRORs about a station's CALLRESULT or about nothing."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            self.stat("csms_sends")
            action, payload, _ = hostile_call(rng, "2.1")
            if rng.random() < 0.5:
                action, payload = (
                    "NotifyPeriodicEventStream",
                    {
                        "id": 1,
                        "pending": 0,
                        "basetime": "2026-01-01T00:00:00Z",
                        "data": [{"t": 0, "v": "1"}],
                    },
                )
            await ws.send(orjson.dumps([6, f"send-{serial}", action, payload]).decode())
        elif roll < 0.8:
            self.stat("csms_callresulterrors")
            about = rng.choice([f"h{serial - 1}", f"h{serial - 2}", "unknown", ""])
            code = rng.choice(["FormatViolation", "PropertyConstraintViolation", "Odd", ""])
            await ws.send(orjson.dumps([5, about, code, "x" * rng.randint(0, 300), {}]).decode())
        else:
            self.stat("csms_broken_21_frames")
            await ws.send(
                rng.choice(
                    [
                        f'[6, "send-{serial}"]',
                        f'[6, "send-{serial}", "Reset", []]',
                        f'[6, "send-{serial}", 6, {{}}]',
                        '[5, "x"]',
                        '[5, "x", 5, 5, 5]',
                        f'[6, "send-{serial}", "Reset", {{"type": "Immediate"}}, "extra"]',
                    ]
                )
            )


async def serve(args: argparse.Namespace) -> None:
    from websockets.asyncio.server import serve as ws_serve

    csms = HostileCsms(args.seed, args.call_timeout, args.calls_per_second)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with ws_serve(
        csms.handle,
        HOST,
        args.port,
        subprotocols=["ocpp2.1", "ocpp2.0.1", "ocpp1.6"],
        select_subprotocol=csms.select_subprotocol,
        process_request=csms.process_request,
        process_response=csms.process_response,
        compression=None,
        ping_interval=None,
        max_size=1 << 20,
        close_timeout=2,
        backlog=4096,
    ) as server:
        await stop.wait()
        server.close(close_connections=True)
    Path(args.stats).write_bytes(
        orjson.dumps({"stats": dict(csms.stats), "wrong": csms.wrong}, option=orjson.OPT_INDENT_2)
    )


# -- the stations (gevent) ------------------------------------------------------------------


class Watch(logging.Handler):
    """Counts warnings and errors by logger, and every record that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.levels: Counter[str] = Counter()
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.levels[f"{record.levelname} {record.name}"] += 1
        if record.exc_info and len(self.tracebacks) < 5:
            self.tracebacks.append(self.format(record))


def run_stations(args: argparse.Namespace) -> dict[str, Any]:
    import gevent
    import psutil

    from loadgen import fleet as fleets
    from loadgen.metrics.collectors import Metrics
    from loadgen.metrics.observer import MetricsObserver
    from loadgen.physics import EV, ScaledClock
    from loadgen.protocols import get_version
    from loadgen.runner import RetryBackOff, StationRunner
    from loadgen.station import Station, StationConfig

    raise_nofile()
    watch = Watch()
    watch.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger().addHandler(watch)
    hub_errors: list[str] = []
    hub = gevent.get_hub()
    original_print = hub.print_exception

    def print_exception(context: Any, kind: Any, value: Any, tb: Any) -> None:
        hub_errors.append(f"{kind.__name__}: {value}"[:300])
        original_print(context, kind, value, tb)

    hub.print_exception = print_exception  # type: ignore[method-assign]
    rng = random.Random(args.seed)
    fleet = fleets.generate(args.stations, prefix="FZ")
    version = get_version(args.ocpp_version)
    clock = ScaledClock(args.time_scale)
    metrics = Metrics("fuzz")
    observer = MetricsObserver(metrics, fleet.sites)
    runners: list[StationRunner] = []
    for charger in fleet.chargers.values():
        station = Station(charger, version, clock, StationConfig(meter_interval=30))
        observer.add_station(station)
        runner = StationRunner(
            station,
            args.url,
            clock=clock,
            backoff=RetryBackOff(0.5, 0.5, cap=4.0),
            observer=observer,
            link_factory=observer.link_factory(),
            call_timeout=args.call_timeout,
            connect_timeout=5.0,
        )
        runners.append(runner)
    process = psutil.Process()
    for runner in runners:
        runner.start()
        gevent.sleep(1 / args.connect_rate)
    gevent.sleep(2)
    rss_start = process.memory_info().rss
    deadline = time.monotonic() + args.duration
    sessions = 0
    while time.monotonic() < deadline:
        gevent.sleep(0.5)
        # keep EVs charging on a share of the stations: transaction messages in flight
        for runner in rng.sample(runners, max(1, len(runners) // 50)):
            station = runner.station
            if station.accepted and station.free_evse() is not None:
                evse = station.free_evse()
                if station.start_session(evse.id, f"fuzz{sessions}", EV(soc=0.5)) is not None:
                    sessions += 1
                    runner.wake()
    gevent.sleep(0.5)
    rss_end = process.memory_info().rss
    dead = [r.station.charger.id for r in runners if r._greenlet is not None and r._greenlet.dead]
    dead_errors = [
        f"{r.station.charger.id}: {type(r._greenlet.exception).__name__}: {r._greenlet.exception}"
        for r in runners
        if r._greenlet is not None and r._greenlet.exception is not None
    ]
    connected = sum(1 for r in runners if r.link is not None and r.link.connected)
    protocol_errors = {
        sample.labels["kind"]: sample.value
        for sample in metrics.protocol_errors.collect()[0].samples
        if sample.name.endswith("_total") and sample.value
    }
    messages = {
        f"{sample.labels['direction']} {sample.labels['type']}": int(sample.value)
        for sample in metrics.messages.collect()[0].samples
        if sample.name.endswith("_total") and sample.value
    }
    csms_calls = Counter[str]()
    for sample in metrics.registry.collect():
        if sample.name.endswith("csms_calls"):
            for s in sample.samples:
                if s.name.endswith("_total"):
                    csms_calls[s.labels.get("outcome", "?")] += int(s.value)
    for runner in runners:
        runner.stop(timeout=0)
    return {
        "stations": len(runners),
        "alive": len(runners) - len(dead),
        "dead": dead[:10],
        "dead_errors": dead_errors[:10],
        "connected_at_end": connected,
        "connects": sum(r.connects for r in runners),
        "sessions_started": sessions,
        "gave_up": sum(1 for r in runners if r.failed),
        "hub_errors": hub_errors[:10],
        "hub_error_count": len(hub_errors),
        "log_levels": dict(watch.levels),
        "tracebacks": watch.tracebacks,
        "protocol_errors": protocol_errors,
        "messages": messages,
        "csms_call_answers": dict(csms_calls),
        "rss_start": rss_start,
        "rss_end": rss_end,
    }


# -- the benchmark ------------------------------------------------------------------------


def checks(worker: dict[str, Any], server: dict[str, Any], args: argparse.Namespace) -> list:
    stats = server["stats"]
    growth = worker["rss_end"] - worker["rss_start"]
    limit = args.rss_growth_mb * 1024 * 1024
    return [
        ("process did not crash", True, "exit 0 and a result"),
        (
            "no traceback logged",
            not worker["tracebacks"] and not worker["hub_error_count"],
            f"{len(worker['tracebacks'])} in the log, {worker['hub_error_count']} greenlet errors",
        ),
        (
            "every station alive",
            worker["alive"] == worker["stations"] and not worker["gave_up"],
            f"{worker['alive']:,} of {worker['stations']:,}; "
            f"{worker['connected_at_end']:,} connected at the end, the rest in back-off",
        ),
        (
            "CSMS CALLs answered correctly",
            not stats.get("csms_calls_wrong_answer") and not stats.get("csms_calls_unanswered"),
            f"{stats.get('csms_calls_answered', 0):,} answered, "
            f"{stats.get('csms_calls_wrong_answer', 0):,} wrongly, "
            f"{stats.get('csms_calls_unanswered', 0):,} unanswered, "
            f"{stats.get('csms_calls_cut_by_close', 0):,} cut by a close",
        ),
        (
            "protocol errors counted",
            sum(worker["protocol_errors"].values()) > 0,
            ", ".join(f"{k} {int(v):,}" for k, v in sorted(worker["protocol_errors"].items())),
        ),
        *(
            [
                (
                    "2.1 frames: SENDs unanswered, counted",
                    not stats.get("sends_answered")
                    and stats.get("connections_ocpp2.1", 0) > 0
                    and (
                        not stats.get("csms_sends")
                        or worker["messages"].get("received send", 0) > 0
                    )
                    and (
                        not stats.get("csms_callresulterrors")
                        or worker["protocol_errors"].get("callresulterror", 0) > 0
                    ),
                    f"{stats.get('csms_sends', 0):,} SENDs, "
                    f"{stats.get('sends_answered', 0):,} answered; "
                    f"{worker['messages'].get('received send', 0):,} counted received; "
                    f"{stats.get('csms_callresulterrors', 0):,} CALLRESULTERRORs, "
                    f"{int(worker['protocol_errors'].get('callresulterror', 0)):,} counted; "
                    f"{worker['messages'].get('sent callresulterror', 0):,} sent by stations",
                )
            ]
            if args.ocpp_version == "2.1"
            else []
        ),
        (
            "memory bounded",
            growth <= limit,
            f"RSS {worker['rss_start'] / 2**20:.0f} -> {worker['rss_end'] / 2**20:.0f} MB "
            f"(limit +{args.rss_growth_mb} MB)",
        ),
    ]


def run(args: argparse.Namespace) -> int:
    server_core, client_cores = split_cores(args.server_core, None)
    budget = args.duration + args.stations / args.connect_rate + 90
    install_exit_handlers(budget)
    with tempfile.TemporaryDirectory(prefix="fuzz-csms-") as tmp:
        stats_file = os.path.join(tmp, "stats.json")
        port = free_port()
        argv = [
            sys.executable,
            str(Path(__file__).resolve()),
            "serve",
            "--port",
            str(port),
            "--seed",
            str(args.seed),
            "--stats",
            stats_file,
            "--call-timeout",
            f"{args.call_timeout:g}",
            "--calls-per-second",
            f"{args.calls_per_second:g}",
        ]
        server = ServerProcess("hostile-csms", argv, port, server_core)
        with server:
            print(
                f"fuzz_csms: {args.stations:,} stations against a hostile CSMS for "
                f"{args.duration:g} s, seed {args.seed} ({machine_note()})",
                flush=True,
            )
            worker_argv = [
                sys.executable,
                str(Path(__file__).resolve()),
                "stations",
                "--url",
                server.url,
                "--stations",
                str(args.stations),
                "--duration",
                f"{args.duration:g}",
                "--seed",
                str(args.seed),
                "--call-timeout",
                f"{args.call_timeout:g}",
                "--connect-rate",
                f"{args.connect_rate:g}",
                "--time-scale",
                f"{args.time_scale:g}",
                "--ocpp-version",
                args.ocpp_version,
            ]
            try:
                worker = run_worker(worker_argv, client_cores, budget, "stations")
            except RuntimeError as exc:
                print(f"FAIL: the stations' process crashed: {exc}")
                return 1
            server.stop()
        server_stats = orjson.loads(Path(stats_file).read_bytes())
    results = checks(worker, server_stats, args)
    print_table(
        ["hostility", "count"],
        sorted(server_stats["stats"].items()),
        title="what the hostile CSMS did",
    )
    print_table(
        ["check", "verdict", "detail"],
        [(name, "ok" if ok else "FAIL", detail) for name, ok, detail in results],
        title="checks",
    )
    for label, items in (
        ("wrong answers", server_stats["wrong"]),
        ("tracebacks", worker["tracebacks"]),
        ("greenlet errors", worker["hub_errors"]),
        ("dead stations", worker["dead_errors"]),
    ):
        if items:
            print(f"\n{label} (first {len(items)}):")
            for item in items:
                print(f"  {item}")
    if worker["log_levels"]:
        print("\nwarnings and errors logged:", dict(worker["log_levels"]))
    if args.json:
        Path(args.json).write_bytes(
            orjson.dumps({"worker": worker, "server": server_stats}, option=orjson.OPT_INDENT_2)
        )
    return 0 if all(ok for _, ok, _ in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of hostility (30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ocpp-version", choices=("2.0.1", "2.1"), default="2.0.1")
    parser.add_argument("--call-timeout", type=float, default=5.0)
    parser.add_argument("--calls-per-second", type=float, default=0.2, help="per connection")
    parser.add_argument("--connect-rate", type=float, default=500.0)
    parser.add_argument("--time-scale", type=float, default=20.0)
    parser.add_argument("--rss-growth-mb", type=int, default=64)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--json", help="write every figure to this file")
    serve_parser = sub.add_parser("serve", help="(internal) the hostile CSMS")
    serve_parser.add_argument("--port", type=int, required=True)
    serve_parser.add_argument("--seed", type=int, default=1)
    serve_parser.add_argument("--stats", required=True)
    serve_parser.add_argument("--call-timeout", type=float, default=5.0)
    serve_parser.add_argument("--calls-per-second", type=float, default=0.2)
    stations = sub.add_parser("stations", help="(internal) the stations, under gevent")
    stations.add_argument("--url", required=True)
    for name, kind, default in (
        ("--stations", int, 1000),
        ("--duration", float, 30.0),
        ("--seed", int, 1),
        ("--call-timeout", float, 5.0),
        ("--connect-rate", float, 500.0),
        ("--time-scale", float, 20.0),
    ):
        stations.add_argument(name, type=kind, default=default)
    stations.add_argument("--ocpp-version", default="2.0.1")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        raise_nofile()
        asyncio.run(serve(args))
        return 0
    if args.command == "stations":
        result = run_stations(args)
        sys.stdout.write(orjson.dumps(result).decode() + "\n")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
