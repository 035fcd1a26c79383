"""A bounded, seeded stream of hostile OCPP-J frames at a csms_stub it starts on 127.0.0.1.

``--frames`` frames (100,000 by default) go out over ``--connections`` connections, a third
each OCPP 2.1, 2.0.1 and 1.6: malformed JSON, wrong types, values the schemas allow but a
database cannot hold (huge integers, NUL characters, long strings, extreme dates, odd
unicode), unknown actions, replies to nothing, binary and oversized frames, and handshakes
with odd charger ids, interleaved with well-formed transactions whose acknowledged events
are then looked for in the database. On 2.1 connections also OCPP-J 2.1's SEND (hostile
NotifyPeriodicEventStream and other actions sent as SEND) and CALLRESULTERROR frames, whole
and broken, and 2.1's TransactionEvent fields (costDetails, 255-character idTokens). It
passes (exit 0) when the stub is still alive, no frame was answered InternalError, no SEND
or CALLRESULTERROR was answered, every acknowledged well-formed TransactionEvent is stored,
the write queue drained, and a SIGTERM stops it cleanly.

    .venv/bin/python benchmarks/fuzz_stub.py --frames 100000 --seed 1
    .venv/bin/python benchmarks/fuzz_stub.py --database postgresql --frames 20000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import json
import random
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from _common import DEFAULT_POSTGRES_URL
from _common.clients import split
from _common.databases import Database
from _common.figures import print_table
from _common.machine import check_local_url, install_exit_handlers
from _common.servers import stub_process
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from loadgen import ocppj
from loadgen.protocols import v16, v21, v201

T0 = 1_780_000_000.0
WINDOW = 16  # hostile frames sent before a Heartbeat that brings the replies in order
HUGE_INTS = (2**31, -(2**31) - 1, 2**53, 2**63 - 1, 2**64 + 1)
ODD_TEXT = (
    "\u0000",
    "a\u0000b",
    "x" * 5000,
    "\U0001f4a5" * 40,
    "\u202etxet",
    "\ufeff",
    "'; DROP TABLE charger_info; --",
    "\\u0000",
    "",
)
ODD_DATES = (
    "9999-12-31T23:59:59-01:00",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59.999999Z",
    "2024-02-30T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "2024-01-01T00:00:00+23:59",
)
MALFORMED = (
    "",
    "nope",
    "[",
    "[2,",
    "{}",
    "[]",
    "[2]",
    '[2, "id"]',
    '[2, "id", "Heartbeat"]',
    '[2, "id", "Heartbeat", []]',
    '[2, 1, "Heartbeat", {}]',
    '[2, "", "Heartbeat", {}]',
    f'[2, "{"i" * 40}", "Heartbeat", {{}}]',
    '[9, "id", "Heartbeat", {}]',
    '[2.0, "id", "Heartbeat", {}]',
    '[true, "id", "Heartbeat", {}]',
    '[2, "id", "Heartbeat", {}, 5]',
    '[2, "id", "Heartbeat", {"a": NaN}]',
    '[2, "id", "Heartbeat", {"a": 1e400}]',
    '[2, "id", "DataTransfer", {"vendorId": "\\ud800"}]',
    '[2, "id", "DataTransfer", {"vendorId": "v", "data": 123456789012345678901234567890}]',
    "[" * 10_000,
)
ODD_CHARGER_IDS = (
    "c" * 49,
    "c" * 300,
    "nul%00id",
    "%ff%fe",
    "..",
    "a%2Fb",
    "sp ace",
    "%F0%9F%92%A5",
    "x?y=1",
    "",
)


def requests_201(rng: random.Random, tag: str) -> list[tuple[str, dict[str, Any]]]:
    """Well-formed 2.0.1 CALLs, the raw material of the hostile ones."""
    sampled = v201.sampled_values(rng.uniform(0, 1e6), rng.uniform(0, 3e5), 50)
    return [
        v201.boot_notification("vendor", "model", "sn", "fw"),
        v201.heartbeat(),
        v201.status_notification(1, 1, "Occupied", T0),
        v201.authorize("token"),
        v201.transaction_event(
            "Started",
            f"fz-{tag}",
            rng.randrange(100),
            T0,
            "Authorized",
            evse_id=1,
            connector_id=1,
            token=v201.id_token("token"),
            meter_values=[v201.meter_value(T0, sampled)],
        ),
        v201.meter_values(1, [v201.meter_value(T0, sampled)]),
        v201.data_transfer("vendor", "id", {"k": [1, "v"]}),
        v201.firmware_status_notification("Installed", rng.randrange(10)),
        v201.security_event_notification("Reboot", T0),
    ]


def requests_21(rng: random.Random, tag: str) -> list[tuple[str, dict[str, Any]]]:
    """Well-formed 2.1 CALLs: 2.0.1's, a TransactionEvent with 2.1's fields and a long
    idToken, and messages only 2.1 has."""
    sampled = v21.sampled_values(rng.uniform(0, 1e6), rng.uniform(0, 3e5), 50)
    token = v21.id_token("t" * rng.choice((1, 36, 255)), "VIN")
    return [
        *(request for request in requests_201(rng, tag) if request[0] != "TransactionEvent"),
        v21.transaction_event(
            "Updated",
            f"fz-{tag}",
            rng.randrange(100),
            T0,
            "RunningCost",
            evse_id=1,
            connector_id=1,
            token=token,
            meter_values=[v21.meter_value(T0, sampled)],
            tariff_id="fz-tariff",
            operation_mode="ChargingOnly",
            transaction_limit=v21.transaction_limit(max_energy=5000.0, max_cost=12.5),
            cost_details=v21.cost_details("EUR", 1.25, 5000.0, 600, period_start=T0),
        ),
        (
            "NotifySettlement",
            {
                "pspRef": "psp-1",
                "status": "Settled",
                "settlementAmount": 12.5,
                "settlementTime": "2026-06-01T00:00:00Z",
            },
        ),
        (
            "OpenPeriodicEventStream",
            {"constantStreamData": {"id": 1, "params": {}, "variableMonitoringId": 1}},
        ),
        ("VatNumberValidation", {"vatNumber": "NL123", "evseId": 1}),
    ]


def stream_sample(rng: random.Random) -> dict[str, Any]:
    """A NotifyPeriodicEventStream, a SEND's payload (OCPP-J 2.1)."""
    return {
        "id": rng.randrange(10),
        "pending": 0,
        "basetime": "2026-06-01T00:00:00Z",
        "data": [{"t": float(i), "v": str(rng.uniform(0, 400))} for i in range(rng.randint(1, 5))],
    }


def requests_16(rng: random.Random, tag: str) -> list[tuple[str, dict[str, Any]]]:
    sampled = v16.sampled_values(rng.uniform(0, 1e6), rng.uniform(0, 3e5))
    return [
        v16.boot_notification("vendor", "model", "sn", "fw"),
        v16.heartbeat(),
        v16.status_notification(1, "Charging", T0),
        v16.authorize("token"),
        v16.start_transaction(1, "token", rng.randrange(10**6), T0),
        v16.meter_values(1, [v16.meter_value(T0, sampled)], rng.randrange(1, 50)),
        v16.stop_transaction(rng.randrange(1, 50), rng.randrange(10**6), T0),
        v16.data_transfer("vendor", "id", "data"),
    ]


def leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for index, item in enumerate(value) for leaf in leaves(item, (*path, index))]
    return [(path, value)]


def replaced(payload: Any, path: tuple[Any, ...], new: Any) -> Any:
    payload = copy.deepcopy(payload)
    target = payload
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = new
    return payload


def hostile_value(rng: random.Random, key: Any, old: Any) -> Any:
    """A value for a leaf: same JSON type but hostile (often schema-valid), or a wrong type."""
    if rng.random() < 0.2:
        return rng.choice([None, [], {}, True, "text", 1, 1.5])  # a wrong type
    if isinstance(old, bool):
        return not old
    if isinstance(old, int):
        return rng.choice(HUGE_INTS)
    if isinstance(old, float):
        return rng.choice((1e308, -1e308, 5e-324, -0.0, 1e15))
    if isinstance(key, str) and "imestamp" in key:
        return rng.choice(ODD_DATES)
    if key == "multiplier":
        return rng.choice((400, -400, 2**31 - 1))
    return rng.choice(ODD_TEXT) if rng.random() < 0.8 else f"{old}{rng.choice(ODD_TEXT)}"


def hostile_frame(rng: random.Random, version: str, serial: int) -> str | bytes:
    """One hostile frame; a CALL's id is ``h<serial>``, a SEND's ``n<serial>``."""
    message_id = f"h{serial}"
    roll = rng.random()
    if roll < 0.15:
        return rng.choice(MALFORMED)
    if roll < 0.2:
        return rng.choice(
            [
                f'[3, "{message_id}", {{}}]',
                f'[4, "{message_id}", "GenericError", "", {{}}]',
                f'[3, "{message_id}"]',
                b"\x00\x01binary",
            ]
        )
    if roll < 0.25:
        action = rng.choice(["Foo", "A" * 1000, "Boot\u0000", "heartbeat", "GetVariables", ""])
        return ocppj.Call(message_id, action or "X", {}).encode()
    if version == "2.1" and roll < 0.4:
        return hostile_21_frame(rng, serial)
    builders = {"2.1": requests_21, "2.0.1": requests_201, "1.6": requests_16}[version]
    action, payload = rng.choice(builders(rng, f"{serial}"))
    candidates = leaves(payload)
    for _ in range(rng.choice((1, 1, 2, 3)) if candidates else 0):
        path, old = rng.choice(candidates)
        if path:
            payload = replaced(payload, path, hostile_value(rng, path[-1], old))
    # The standard library's json: orjson refuses integers beyond 64 bits.
    return json.dumps([2, message_id, action, payload])


def hostile_21_frame(rng: random.Random, serial: int) -> str:
    """OCPP-J 2.1's own frames, hostile: SENDs (never to be answered) with hostile payloads
    or of actions that are no SEND, CALLRESULTERRORs about nothing, broken ones of both."""
    send_id = f"n{serial}"
    roll = rng.random()
    if roll < 0.5:
        if rng.random() < 0.7:
            action, payload = "NotifyPeriodicEventStream", stream_sample(rng)
        else:
            action, payload = rng.choice(requests_21(rng, f"{serial}"))
        for path, old in rng.sample(leaves(payload), k=min(2, len(leaves(payload))) * (roll < 0.3)):
            if path:
                payload = replaced(payload, path, hostile_value(rng, path[-1], old))
        return json.dumps([6, send_id, action, payload])
    if roll < 0.8:
        return json.dumps(
            [
                5,
                rng.choice((send_id, f"{send_id}-unknown", "n")),
                rng.choice(("FormatViolation", "Odd")),
                rng.choice(ODD_TEXT),
                {},
            ]
        )
    return rng.choice(
        [
            f'[6, "{send_id}"]',
            f'[6, "{send_id}", "NotifyPeriodicEventStream"]',
            f'[6, "{send_id}", "NotifyPeriodicEventStream", []]',
            '[6, 6, "NotifyPeriodicEventStream", {}]',
            f'[5, "{send_id}"]',
            f'[5, "{send_id}", 5, "", {{}}]',
            f'[5, "{send_id}", "GenericError", "", []]',
        ]
    )


@dataclass
class Tally:
    frames: int = 0
    oversized: int = 0
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    handshakes: collections.Counter[str] = field(default_factory=collections.Counter)
    reconnects: int = 0
    #: well-formed TransactionEvents acknowledged: (charger id, transaction id, seqNo)
    acknowledged: set[tuple[str, str, int]] = field(default_factory=set)
    internal_errors: list[str] = field(default_factory=list)
    #: answers to a SEND or a CALLRESULTERROR (ids n..., or to nothing): OCPP-J 2.1 forbids
    answered_sends: list[str] = field(default_factory=list)


class Fuzzer:
    def __init__(self, url: str, args: argparse.Namespace, tally: Tally) -> None:
        self.url = url
        self.args = args
        self.tally = tally

    async def charger(self, index: int, frames: int) -> None:
        rng = random.Random(f"{self.args.seed}-{index}")
        version = ("2.1", "2.0.1", "1.6")[index % 3]
        charger_id = f"fuzz-{self.args.seed}-{index}"
        well_formed = self.transactions(charger_id, version)
        serial = 0
        while frames > 0:
            try:
                async with connect(
                    f"{self.url}/{charger_id}",
                    subprotocols=[f"ocpp{version}"],  # type: ignore[list-item]
                    max_size=None,
                    compression=None,
                    open_timeout=10,
                ) as ws:
                    while frames > 0:
                        sent = await self.window(ws, rng, version, serial, well_formed)
                        serial += sent
                        frames -= sent
            except (ConnectionClosed, OSError, TimeoutError):
                self.tally.reconnects += 1
                frames -= 1  # always progress, even against a stub that keeps closing

    def transactions(self, charger_id: str, version: str) -> Any:
        """Endless well-formed transaction CALLs: (action, payload, key or None)."""
        number = 0
        while True:
            number += 1
            if version in ("2.0.1", "2.1"):
                transaction_id = f"ok-{charger_id}-{number}"
                builder = v21 if version == "2.1" else v201
                for seq_no, event in enumerate(("Started", "Updated", "Updated", "Ended")):
                    action, payload = builder.transaction_event(
                        event,
                        transaction_id,
                        seq_no,
                        T0 + number * 100 + seq_no,
                        "Authorized" if seq_no == 0 else "MeterValuePeriodic",
                        evse_id=1,
                        connector_id=1,
                        meter_values=[
                            v201.meter_value(
                                T0 + number * 100 + seq_no, v201.sampled_values(seq_no * 1000.0)
                            )
                        ],
                    )
                    yield action, payload, (charger_id, transaction_id, seq_no)
            else:
                yield (*v16.start_transaction(1, "token", 0, T0 + number * 100), None)
                yield (*v16.heartbeat(), None)

    async def window(
        self, ws: ClientConnection, rng: random.Random, version: str, serial: int, well_formed: Any
    ) -> int:
        """Send up to WINDOW hostile frames and one well-formed one, then a Heartbeat; read
        every answer up to the Heartbeat's (OCPP-J answers in order)."""
        expected: dict[str, tuple[str, str, int] | None] = {}
        count = 0
        for count in range(1, WINDOW + 1):
            frame = hostile_frame(rng, version, serial + count)
            if rng.random() < 1 / 5000:
                frame = '[2, "big", "DataTransfer", {"vendorId": "' + "x" * 300_000 + '"}]'
                self.tally.oversized += 1
            await ws.send(frame)
            self.tally.frames += 1
        action, payload, key = next(well_formed)
        message_id = f"w{serial}"
        expected[message_id] = key
        await ws.send(ocppj.Call(message_id, action, payload).encode())
        sync = f"s{serial}"
        await ws.send(ocppj.Call(sync, "Heartbeat", {}).encode())
        self.tally.frames += 2
        while True:
            raw = await asyncio.wait_for(ws.recv(), 30)
            try:
                message = ocppj.parse(raw, extended=version == "2.1")
            except ocppj.FrameError:
                self.tally.answers["unparseable"] += 1
                continue
            if message.message_id.startswith("n") and len(self.tally.answered_sends) < 20:
                self.tally.answered_sends.append(str(raw)[:300])  # a SEND was answered
            if isinstance(message, ocppj.CallError):
                self.tally.answers[f"CALLERROR {message.error_code}"] += 1
                if message.error_code == ocppj.ErrorCode.INTERNAL_ERROR:
                    self.tally.internal_errors.append(str(raw)[:300])
            elif isinstance(message, ocppj.CallResult):
                self.tally.answers["CALLRESULT"] += 1
                key = expected.get(message.message_id)
                if key is not None:
                    self.tally.acknowledged.add(key)
            elif isinstance(message, ocppj.Call):
                self.tally.answers[f"CALL {message.action}"] += 1  # none expected
            else:  # a SEND or CALLRESULTERROR from the stub: none expected either
                self.tally.answers[type(message).__name__] += 1
            if message.message_id == sync:
                return count + 2

    async def odd_handshakes(self) -> None:
        for charger_id in ODD_CHARGER_IDS * 3:
            try:
                async with connect(
                    f"{self.url}/{charger_id}",
                    subprotocols=["ocpp2.0.1"],
                    open_timeout=10,  # type: ignore[list-item]
                ) as ws:
                    await ws.send(ocppj.Call("odd", "Heartbeat", {}).encode())
                    await asyncio.wait_for(ws.recv(), 10)
                    self.tally.handshakes["accepted"] += 1
            except InvalidStatus as exc:
                self.tally.handshakes[f"HTTP {exc.response.status_code}"] += 1
            except (InvalidHandshake, InvalidURI, ConnectionClosed, OSError, TimeoutError) as exc:
                # e.g. a space in the path: not HTTP, so the server drops it without a status
                self.tally.handshakes[type(exc).__name__] += 1


async def fuzz(url: str, args: argparse.Namespace, tally: Tally) -> None:
    fuzzer = Fuzzer(url, args, tally)
    shares = split(args.frames, args.connections)
    await asyncio.gather(
        fuzzer.odd_handshakes(), *(fuzzer.charger(i, n) for i, n in enumerate(shares))
    )


def stored_keys(database: Database) -> set[tuple[str, str, int]]:
    rows = database.rows(
        f"SELECT charger_id, transaction_id, seq_no FROM {database.qualified('transaction_event')} "
        "WHERE transaction_id LIKE 'ok-%'"
    )
    return {(row[0], row[1], row[2]) for row in rows}


def metric_sum(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def messages_of_version(text: str, version: str) -> float:
    """csms_stub_messages_total of one OCPP version, summed over actions and outcomes."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "csms_stub_messages_total" and sample.labels.get("version") == version
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after (s)")
    parser.add_argument(
        "--shared",
        action="store_true",
        help="do not wait for other benchmarks to finish (when run by one, e.g. faults tooling)",
    )
    args = parser.parse_args()
    check_local_url(args.postgres_url)
    install_exit_handlers(args.timeout + 120, exclusive=not args.shared)
    tally = Tally()
    checks: dict[str, bool] = {}
    started = time.monotonic()
    with Database(args.database, args.postgres_url) as database:
        stub = stub_process(args.server_core, database.url, database.schema)
        with stub:
            assert stub.ps is not None
            rss_before = stub.ps.memory_info().rss
            asyncio.run(asyncio.wait_for(fuzz(stub.url, args, tally), args.timeout))
            wall = time.monotonic() - started
            checks["stub alive"] = stub.process is not None and stub.process.poll() is None
            rss_after = stub.ps.memory_info().rss if checks["stub alive"] else 0
            deadline = time.monotonic() + 30
            while (depth := stub.get_json("/stats")["db_queue_depth"]) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.1)
            checks["db_queue_depth back to 0"] = depth == 0
            with urllib.request.urlopen(f"{stub.api_url}/metrics", timeout=10) as response:
                metrics = response.read().decode()
            returncode = stub.stop()
            log_tail = stub.log_tail(10)
        checks["graceful stop, exit 0"] = returncode == 0
        stored = stored_keys(database)
    write_failures = metric_sum(metrics, "csms_stub_db_write_failures_total")
    missing = tally.acknowledged - stored
    checks["every acknowledged well-formed TE stored"] = not missing
    checks["no InternalError"] = not tally.internal_errors
    checks["no SEND or CALLRESULTERROR answered"] = not tally.answered_sends
    checks["well-formed TEs acknowledged"] = len(tally.acknowledged) > 0

    rows = [[kind, count] for kind, count in sorted(tally.answers.items())]
    rows += [[f"handshake {kind}", count] for kind, count in sorted(tally.handshakes.items())]
    print_table(
        ["answer", "count"],
        rows,
        title=(
            f"fuzz_stub: {tally.frames:,} frames (seed {args.seed}, {args.connections} "
            f"connections, {tally.oversized} oversized, {tally.reconnects} reconnects) at "
            f"csms_stub on {args.database} in {wall:.1f} s"
        ),
    )
    print_table(
        ["figure", "value"],
        [
            ["well-formed TEs acknowledged", len(tally.acknowledged)],
            ["of them stored", len(tally.acknowledged & stored)],
            ["csms_stub_db_write_failures_total", write_failures],
            *(
                [f"csms_stub_messages_total, OCPP {v}", messages_of_version(metrics, v)]
                for v in ("2.1", "2.0.1", "1.6")
            ),
            ["RSS before (MB)", rss_before / 2**20],
            ["RSS after (MB)", rss_after / 2**20],
            ["wall time (s)", wall],
            ["frames/s", tally.frames / wall],
        ],
    )
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    for sample in tally.internal_errors[:5]:
        print(f"   InternalError: {sample}")
    for sample in tally.answered_sends[:5]:
        print(f"   answered a SEND / CALLRESULTERROR: {sample}")
    for key in sorted(missing)[:5]:
        print(f"   acknowledged but not stored: {key}")
    if not all(checks.values()):
        print(f"   stub log tail:\n{log_tail}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
