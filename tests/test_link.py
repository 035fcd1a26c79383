"""loadgen.link on real sockets: against the real csms_stub process, a hostile CSMS, and TLS.

The link runs on gevent without monkey patching, so these tests are plain functions driving
greenlets. The hostile CSMS is a ``websockets`` asyncio server in a background thread: it can
send what no sane CSMS would (garbage, wrong ids, binary frames, bad close codes) and it
watches the wire, e.g. how many of our CALLs are outstanding at once.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import gc
import json
import logging
import os
import resource
import signal
import socket
import ssl
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import greenlet
import orjson
import pytest
import trustme
from geventhttpclient import HTTPClient
from websockets.asyncio.server import ServerConnection

from loadgen.link import (
    AddressCache,
    CallErrorReply,
    CallErrorResponse,
    CallTimeout,
    ConnectFailed,
    Disconnected,
    InvalidResponse,
    Link,
)
from loadgen.protocols import OCPP16, OCPP201, Version, schemas, v16, v201
from tests.conftest import StubProcess, start_stub_process
from tests.fake_csms import FakeCsms, csms_call, silent, wait_for

# -- helpers ------------------------------------------------------------------------------


class Recorder:
    """A CallObserver that remembers everything."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float, str | None]] = []
        self.messages: collections.Counter[tuple[str, str]] = collections.Counter()
        self.connects: list[tuple[str, float]] = []
        self.disconnects: list[str] = []
        self.protocol_errors: collections.Counter[str] = collections.Counter()

    def call_done(self, action: str, outcome: str, seconds: float, error_code: str | None) -> None:
        self.calls.append((action, outcome, seconds, error_code))

    def message(self, direction: str, kind: str) -> None:
        self.messages[direction, kind] += 1

    def connect_done(self, outcome: str, seconds: float) -> None:
        self.connects.append((outcome, seconds))

    def disconnected(self, reason: str) -> None:
        self.disconnects.append(reason)

    def protocol_error(self, kind: str) -> None:
        self.protocol_errors[kind] += 1

    def outcomes(self) -> list[tuple[str, str, str | None]]:
        return [(action, outcome, code) for action, outcome, _, code in self.calls]


class Station:
    """A CallHandler: answers from ``replies`` (a dict or a callable), records everything."""

    def __init__(self, replies: dict[str, Any] | None = None) -> None:
        self.replies = replies or {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.disconnects: list[tuple[int | None, str]] = []

    def on_call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((action, payload))
        reply = self.replies.get(action)
        if reply is None:
            raise CallErrorReply("NotImplemented", f"{action} is not scripted")
        return reply(payload) if callable(reply) else reply

    def on_disconnect(self, code: int | None, reason: str) -> None:
        self.disconnects.append((code, reason))


def attempt(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The result, or the exception raised: for greenlets expected to fail (no stderr noise)."""
    try:
        return function(*args, **kwargs)
    except Exception as exc:
        return exc


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def links() -> Iterator[Callable[..., Link]]:
    """Make links; every one is closed at the end of the test."""
    made: list[Link] = []

    def make(url: str, version: Version = OCPP201, handler: Any = None, **kwargs: Any) -> Link:
        link = Link(url, version, handler if handler is not None else Station(), **kwargs)
        made.append(link)
        return link

    yield make
    for link in made:
        link.close()


# -- against the real csms_stub ----------------------------------------------------------


def test_201_boot_heartbeat_and_transaction_round_trips(stub_process: StubProcess, links) -> None:
    observer, station = Recorder(), Station()
    link = links(
        f"{stub_process.ws_url}/link_201_a", OCPP201, station, observer=observer, validate=True
    )
    link.connect()
    assert link.connected and observer.connects[0][0] == "ok"

    boot = link.call(*v201.boot_notification("Loadgen", "Link", serial_number="L-1"))
    assert boot["status"] == "Accepted" and boot["interval"] == 30
    assert "currentTime" in link.call(*v201.heartbeat())
    now = time.time()
    token = v201.id_token("LINK-TOKEN")
    link.call(
        *v201.transaction_event(
            "Started",
            "link-tx-1",
            0,
            now,
            "Authorized",
            evse_id=1,
            connector_id=1,
            token=token,
            charging_state="Charging",
            meter_values=[v201.meter_value(now, v201.sampled_values(0))],
        )
    )
    ended = link.call(
        *v201.transaction_event(
            "Ended",
            "link-tx-1",
            1,
            now + 60,
            "StopAuthorized",
            stopped_reason="Local",
            meter_values=[v201.meter_value(now + 60, v201.sampled_values(2000))],
        )
    )
    assert ended["totalCost"] == pytest.approx(300.0)  # 2 kWh at 150 KRW/kWh

    assert [(a, o) for a, o, _ in observer.outcomes()] == [
        ("BootNotification", "result"),
        ("Heartbeat", "result"),
        ("TransactionEvent", "result"),
        ("TransactionEvent", "result"),
    ]
    assert all(0 < seconds < 5 for _, _, seconds, _ in observer.calls)
    assert observer.messages["sent", "call"] == 4 and observer.messages["received", "result"] == 4
    link.close()
    assert station.disconnects == [(1000, "closed by the station: 1000")]
    assert observer.disconnects == ["closed"]


def test_16_boot_heartbeat_and_transaction_round_trips(stub_process: StubProcess, links) -> None:
    observer = Recorder()
    link = links(f"{stub_process.ws_url}/link_16_a", OCPP16, observer=observer, validate=True)
    link.connect()
    assert link.call(*v16.boot_notification("Loadgen", "Link"))["status"] == "Accepted"
    assert "currentTime" in link.call(*v16.heartbeat())
    now = time.time()
    started = link.call(*v16.start_transaction(1, "LINK16", 1000, now))
    transaction_id = started["transactionId"]
    assert isinstance(transaction_id, int) and started["idTagInfo"]["status"] == "Accepted"
    link.call(
        *v16.meter_values(1, [v16.meter_value(now + 30, v16.sampled_values(1500))], transaction_id)
    )
    stopped = link.call(*v16.stop_transaction(transaction_id, 3000, now + 60))
    assert stopped.get("idTagInfo", {"status": "Accepted"})["status"] == "Accepted"
    assert [o for _, o, _ in observer.outcomes()] == ["result"] * 5


@pytest.mark.parametrize("version", [OCPP201, OCPP16], ids=lambda v: v.name)
def test_csms_remote_start_reaches_the_station_and_its_reply_gets_back(
    stub_process: StubProcess, links, version: Version
) -> None:
    charger_id = f"link_remote_{version.name}"
    transactions: list[Any] = []

    def remote_start(payload: dict[str, Any]) -> dict[str, Any]:
        if version is OCPP201:  # 2.0.1 may name the transaction in the reply
            return {"status": "Accepted", "transactionId": "remote-tx-1"}
        # 1.6: the CSMS learns the transaction from StartTransaction; send it from a greenlet
        # of our own, as on_call must not call the link it runs in.
        gevent.spawn(
            lambda: transactions.append(
                link.call(*v16.start_transaction(1, payload["idTag"], 0, time.time()))
            )
        )
        return {"status": "Accepted"}

    action = "RequestStartTransaction" if version is OCPP201 else "RemoteStartTransaction"
    station = Station({action: remote_start})
    observer = Recorder()
    link = links(
        f"{stub_process.ws_url}/{charger_id}", version, station, observer=observer, validate=True
    )
    link.connect()
    if version is OCPP201:
        link.call(*v201.boot_notification("Loadgen", "Link"))
    else:
        link.call(*v16.boot_notification("Loadgen", "Link"))

    http = HTTPClient.from_url(stub_process.api_url, network_timeout=15)
    try:
        response = http.post(
            f"/chargers/{charger_id}/start",
            body=json.dumps({"evse_id": 1, "connector_id": 1}),
            headers={"Content-Type": "application/json"},
        )
        body = json.loads(response.read())
    finally:
        http.close()
    assert response.status_code == 200, body
    assert body["status"] == "success"
    assert [a for a, _ in station.calls] == [action]
    schemas.validate(version, action, station.calls[0][1])  # what the stub sent is valid
    assert observer.messages["received", "call"] == 1
    assert observer.messages["sent", "result"] == 1
    if version is OCPP201:
        assert body["transaction_id"] == "remote-tx-1"
    else:  # the CSMS may answer HTTP before our greenlet has read its StartTransaction reply
        wait_for(lambda: transactions)
        assert str(transactions[0]["transactionId"]) == str(body["transaction_id"])


def test_stub_callerror_raises_call_error_response(stub_process: StubProcess, links) -> None:
    observer = Recorder()
    link = links(f"{stub_process.ws_url}/link_callerror", observer=observer)
    link.connect()
    with pytest.raises(CallErrorResponse) as caught:
        link.call("NoSuchAction", {})
    assert caught.value.error_code == "NotImplemented"
    assert "NoSuchAction" in caught.value.description
    assert observer.outcomes() == [("NoSuchAction", "error", "NotImplemented")]
    assert "currentTime" in link.call(*v201.heartbeat())  # the link carries on


def test_subprotocol_the_stub_does_not_speak_fails_the_connect(stub_process: StubProcess) -> None:
    observer = Recorder()
    unknown = Version("9.9", "ocpp9.9", "v201", "Request")
    link = Link(f"{stub_process.ws_url}/link_subprotocol", unknown, Station(), observer=observer)
    with pytest.raises(ConnectFailed) as caught:
        link.connect()
    assert caught.value.kind == "subprotocol" and "ocpp9.9" in str(caught.value)
    assert not link.connected and observer.connects[0][0] == "subprotocol"


PASSWORD = "s3cret-Pa55word-for-tests"


@pytest.fixture(scope="module")
def auth_stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubProcess]:
    stub = start_stub_process(
        tmp_path_factory.mktemp("auth_stub"), "--require-auth", env={"CSMS_AUTH_PASSWORD": PASSWORD}
    )
    yield stub
    stub.stop()


def test_basic_auth_right_password_connects_wrong_one_gets_401_and_never_leaks(
    auth_stub: StubProcess, links, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # websockets logs handshake headers at DEBUG
    good = links(f"{auth_stub.ws_url}/link_auth", basic_auth=("link_auth", PASSWORD))
    good.connect()
    assert "currentTime" in good.call(*v201.heartbeat())

    wrong = "not-" + PASSWORD
    observer = Recorder()
    for bad in (
        Link(
            f"{auth_stub.ws_url}/link_auth2",
            OCPP201,
            Station(),
            observer=observer,
            basic_auth=("link_auth2", wrong),
        ),
        Link(
            f"{auth_stub.ws_url.replace('ws://', f'ws://link_auth2:{wrong}@')}/link_auth2",
            OCPP201,
            Station(),
            observer=observer,
        ),
        Link(f"{auth_stub.ws_url}/link_auth2", OCPP201, Station(), observer=observer),
    ):
        with pytest.raises(ConnectFailed) as caught:
            bad.connect()
        assert "401" in str(caught.value) and caught.value.kind == "http_401"
        texts = [
            str(caught.value),
            repr(caught.value),
            repr(bad),
            bad.url,
            "".join(traceback.format_exception(caught.value)),
        ]
        assert not any(wrong in text or PASSWORD in text for text in texts)
    assert [outcome for outcome, _ in observer.connects] == ["http_401"] * 3

    tokens = [
        base64.b64encode(f"{user}:{pw}".encode()).decode()
        for user in ("link_auth", "link_auth2")
        for pw in (PASSWORD, wrong)
    ]
    assert "< HTTP/1.1 401" in caplog.text  # the handshake was logged, the secrets were not
    assert PASSWORD not in caplog.text
    assert not any(token in caplog.text for token in tokens)
    assert PASSWORD not in repr(good) and PASSWORD not in repr(vars(good))


def test_killing_the_stub_mid_call_disconnects(tmp_path: Path, links) -> None:
    stub = start_stub_process(tmp_path)
    try:
        observer, station = Recorder(), Station()
        link = links(
            f"{stub.ws_url}/link_kill", observer=observer, handler=station, call_timeout=20
        )
        link.connect()
        link.call(*v201.heartbeat())
        os.kill(stub.process.pid, signal.SIGSTOP)  # frozen: it cannot answer the next CALL
        outcome: list[Any] = []

        def heartbeat() -> None:
            try:
                outcome.append(link.call(*v201.heartbeat()))
            except Exception as exc:
                outcome.append(exc)

        caller = gevent.spawn(heartbeat)
        wait_for(lambda: observer.messages["sent", "call"] == 2)
        stub.process.kill()
        stub.process.wait(10)
        caller.join(10)
    finally:
        stub.stop()
    assert len(outcome) == 1 and isinstance(outcome[0], Disconnected)
    assert observer.calls[-1][:2] == ("Heartbeat", "disconnected")
    assert observer.calls[-1][2] < 10
    assert len(station.disconnects) == 1 and station.disconnects[0][0] is None
    assert observer.disconnects == ["connection_lost"]
    assert not link.connected
    with pytest.raises(Disconnected):
        link.call(*v201.heartbeat())
    with pytest.raises(ConnectFailed) as caught:  # nobody listens any more
        link.connect()
    assert caught.value.kind == "refused"


# -- a hostile CSMS ----------------------------------------------------------------------


def test_garbage_frames_are_counted_and_only_possible_calls_answered(links) -> None:
    observer, station = Recorder(), Station({"Reset": {"status": "Accepted"}})
    with FakeCsms() as csms:
        link = links(csms.url, handler=station, observer=observer)
        link.connect()
        for frame in (
            "this is not JSON",  # could have been a CALL: answered with id "-1"
            '{"not": "an array"}',
            "[2, 17, 42]",  # id not a string
            '[2, "c-short", "Reset"]',  # a CALL without payload: answer it
            '[5, "c-type", {}]',  # unknown message type
            '[3, "r-broken"]',  # a broken CALLRESULT: never answered
            '[4, "e-broken", "GenericError"]',  # a broken CALLERROR: never answered
            b"\x00\x01binary",  # not OCPP-J at all
            csms_call("c-good", "Reset", {"type": "Immediate"}),
        ):
            csms.push(frame)
        wait_for(lambda: any(f[1] == "c-good" for f in csms.frames()))
        assert link.call("Heartbeat", {}) == {"echo": {}}

    answers = [f for f in csms.frames() if f[0] != 2]
    assert [(f[0], f[1], f[2]) for f in answers[:5]] == [
        (4, "-1", "RpcFrameworkError"),
        (4, "-1", "RpcFrameworkError"),
        (4, "-1", "RpcFrameworkError"),
        (4, "c-short", "RpcFrameworkError"),
        (4, "c-type", "MessageTypeNotSupported"),
    ]
    assert answers[5] == [3, "c-good", {"status": "Accepted"}]
    assert len(answers) == 6  # nothing for the broken replies or the binary frame
    assert observer.protocol_errors == {"malformed_frame": 7, "binary_frame": 1}
    assert station.calls == [("Reset", {"type": "Immediate"})]


def test_replies_with_unknown_ids_and_binary_frames_are_dropped(links) -> None:
    async def confused(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        await ws.send(orjson.dumps([3, "not-" + call[1], {"wrong": True}]).decode())
        await ws.send(b"binary reply")
        await ws.send(orjson.dumps([4, "nobody", "GenericError", "", {}]).decode())
        await csms.answer(ws, call, {"right": True})

    observer = Recorder()
    with FakeCsms(confused) as csms:
        link = links(csms.url, observer=observer)
        link.connect()
        assert link.call("Heartbeat", {}) == {"right": True}
        assert link.call("Heartbeat", {}) == {"right": True}
        link.close()
    assert observer.protocol_errors == {"unknown_reply_id": 4, "binary_frame": 2}
    assert observer.outcomes() == [("Heartbeat", "result", None)] * 2
    assert observer.messages["received", "result"] == 4
    assert observer.messages["received", "error"] == 2


def test_callerror_raises_with_code_description_and_details(links) -> None:
    async def refuse(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        code = "SecurityError" if call[2] == "Authorize" else "MadeUpByTheCsms"
        await csms.error(ws, call, code, "go away")

    observer = Recorder()
    with FakeCsms(refuse) as csms:
        link = links(csms.url, observer=observer)
        link.connect()
        with pytest.raises(CallErrorResponse) as caught:
            link.call("Authorize", {"idToken": {"idToken": "x", "type": "Central"}})
        assert (caught.value.error_code, caught.value.description) == ("SecurityError", "go away")
        assert caught.value.details == {"hint": "x"} and caught.value.action == "Authorize"
        with pytest.raises(CallErrorResponse) as caught:
            link.call("Heartbeat", {})
        assert caught.value.error_code == "MadeUpByTheCsms"
    # an invented code must not become a new metric label
    assert observer.outcomes() == [
        ("Authorize", "error", "SecurityError"),
        ("Heartbeat", "error", "Other"),
    ]


def test_timeout_frees_the_link_and_a_late_reply_is_dropped(links) -> None:
    seen: list[str] = []

    async def slow_first(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        seen.append(call[1])
        if len(seen) == 1:
            await asyncio.sleep(0.8)  # answers after the link gave up
        await csms.answer(ws, call, {"n": len(seen)})

    observer = Recorder()
    with FakeCsms(slow_first) as csms:
        link = links(csms.url, observer=observer)
        link.connect()
        started = time.perf_counter()
        with pytest.raises(CallTimeout):
            link.call("Heartbeat", {}, timeout=0.15)
        assert 0.15 <= time.perf_counter() - started < 0.7
        assert link.call("Heartbeat", {}) == {"n": 2}  # its own reply, not the late one
        wait_for(lambda: observer.protocol_errors["late_reply"] == 1)
        assert link.call("Heartbeat", {}) == {"n": 3}
    assert [o for _, o, _ in observer.outcomes()] == ["timeout", "result", "result"]
    assert 0.15 <= observer.calls[0][2] < 0.7
    assert observer.protocol_errors == {"late_reply": 1}


def test_csms_that_never_answers_times_out_every_call_and_the_link_stays_up(links) -> None:
    observer, station = Recorder(), Station()
    with FakeCsms(silent) as csms:
        link = links(csms.url, observer=observer, handler=station, call_timeout=0.1)
        link.connect()
        for _ in range(3):
            with pytest.raises(CallTimeout):
                link.call("Heartbeat", {})
        assert link.connected and station.disconnects == []
        assert len([f for f in csms.frames() if f[0] == 2]) == 3
    assert [o for _, o, _ in observer.outcomes()] == ["timeout"] * 3
    assert all(0.1 <= seconds < 1 for _, _, seconds, _ in observer.calls)


def test_closing_while_a_call_waits_fails_it_and_notifies_once(links) -> None:
    observer, station = Recorder(), Station()
    with FakeCsms(silent) as csms:
        link = links(csms.url, observer=observer, handler=station, call_timeout=5)
        link.connect()
        caller = gevent.spawn(attempt, link.call, "Heartbeat", {})
        wait_for(lambda: csms.open_calls)
        started = time.perf_counter()
        link.close(1001, "shutting down")
        assert time.perf_counter() - started < 1  # the CSMS answered the closing handshake
        caller.join(1)
        link.close()  # closing twice changes nothing
    assert isinstance(caller.value, Disconnected)
    assert station.disconnects == [(1001, "closed by the station: 1001 shutting down")]
    assert observer.outcomes() == [("Heartbeat", "disconnected", None)]
    assert observer.disconnects == ["closed"]
    assert csms.connections[0].close_code == 1001


def test_abrupt_tcp_close_fails_the_caller_and_the_queue(links) -> None:
    async def vanish(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        await asyncio.sleep(0.05)  # let the other callers queue up
        ws.transport.abort()

    observer, station = Recorder(), Station()
    with FakeCsms(vanish) as csms:
        link = links(csms.url, observer=observer, handler=station)
        link.connect()
        callers = [gevent.spawn(attempt, link.call, "Heartbeat", {}) for _ in range(4)]
        gevent.joinall(callers, timeout=5)
        assert all(isinstance(c.value, Disconnected) for c in callers)
        assert len([f for f in csms.frames() if f[0] == 2]) == 1  # the queue never sent
    assert observer.outcomes() == [("Heartbeat", "disconnected", None)]
    assert len(station.disconnects) == 1 and station.disconnects[0][0] is None
    assert observer.disconnects == ["connection_lost"]


@pytest.mark.parametrize("code", [1000, 1001, 1011, 3000, 4000, 4999])
def test_close_frame_with_any_code_then_reconnect(links, code: int) -> None:
    observer, station = Recorder(), Station()
    with FakeCsms() as csms:
        link = links(csms.url, observer=observer, handler=station)
        link.connect()
        assert link.call("Heartbeat", {}) == {"echo": {}}
        csms.close_with(code, "bye")
        wait_for(lambda: station.disconnects)
        assert not link.connected
        with pytest.raises(Disconnected):
            link.call("Heartbeat", {})
        link.connect()  # the same link connects again
        assert link.call("Heartbeat", {"again": 1}) == {"echo": {"again": 1}}
        link.close()
        assert len(csms.connections) == 2
    assert station.disconnects == [
        (code, f"closed by the CSMS: {code} bye"),
        (1000, "closed by the station: 1000"),
    ]
    assert observer.disconnects == ["closed_by_server", "closed"]
    assert [outcome for outcome, _ in observer.connects] == ["ok", "ok"]


def test_close_frame_with_an_invalid_code_is_a_protocol_error(links) -> None:
    observer, station = Recorder(), Station()
    with FakeCsms(silent) as csms:
        link = links(csms.url, observer=observer, handler=station)
        link.connect()
        outcome = gevent.spawn(attempt, link.call, "Heartbeat", {}, timeout=5)
        wait_for(lambda: csms.open_calls)
        # an unmasked close frame carrying code 1005, which must never be on the wire
        csms.write_raw(b"\x88\x02\x03\xed")
        outcome.join(5)
    assert isinstance(outcome.value, Disconnected)
    assert station.disconnects[0][0] == 1002  # websockets failed it: protocol error
    assert len(station.disconnects) == 1
    assert observer.disconnects == ["websocket_protocol_error"]
    assert observer.protocol_errors == {"websocket_protocol_error": 1}


def test_frames_over_max_size_close_the_connection(links) -> None:
    observer, station = Recorder(), Station()
    with FakeCsms() as csms:
        link = links(csms.url, observer=observer, handler=station, max_size=1000)
        link.connect()
        csms.push(csms_call("big", "DataTransfer", {"vendorId": "x", "data": "y" * 2000}))
        wait_for(lambda: station.disconnects)
    assert station.disconnects[0][0] == 1009
    assert observer.disconnects == ["message_too_big"]
    assert station.calls == []


def test_fragmented_messages_and_pings_are_handled(links) -> None:
    station = Station({"Reset": {"status": "Accepted"}})
    with FakeCsms() as csms:
        link = links(csms.url, handler=station)
        link.connect()
        text = csms_call("frag", "Reset", {"type": "OnIdle"})
        csms.push([text[:5], text[5:20], text[20:]])
        wait_for(lambda: any(f[1] == "frag" for f in csms.frames()))
        assert station.calls == [("Reset", {"type": "OnIdle"})]
        assert csms._loop is not None
        pong = asyncio.run_coroutine_threadsafe(csms._latest().ping(b"p"), csms._loop)
        wait_for(pong.done)
        wait_for(lambda: pong.result().done())  # the pong came back
        assert link.connected


COMPONENT, X = {"name": "OCPPCommCtrlr"}, {"name": "HeartbeatInterval"}
SET = {"component": COMPONENT, "variable": X}


def test_csms_calls_are_answered_in_order_whatever_the_handler_does(links) -> None:
    def fail(payload: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("station bug")

    def reenter(payload: dict[str, Any]) -> dict[str, Any]:
        return link.call("Heartbeat", {})  # would deadlock: must be refused

    station = Station(
        {
            "Reset": {"status": "Accepted"},
            "ClearCache": lambda payload: {"status": "Rejected"},
            "GetVariables": fail,
            "SetVariables": lambda payload: ["not", "a", "dict"],
            "UnlockConnector": reenter,
        }
    )
    with FakeCsms() as csms:
        link = links(csms.url, handler=station)
        link.connect()
        script = [
            ("1", "Reset", {"type": "Immediate"}),
            ("2", "ClearCache", {}),
            # schema-valid payloads: invalid ones never reach the handler
            ("3", "GetVariables", {"getVariableData": [{"component": COMPONENT, "variable": X}]}),
            ("4", "SetVariables", {"setVariableData": [{**SET, "attributeValue": "1"}]}),
            ("5", "UnlockConnector", {"evseId": 1, "connectorId": 1}),
            ("6", "CancelReservation", {"reservationId": 1}),
        ]
        for message_id, action, payload in script:
            csms.push(csms_call(message_id, action, payload))
        wait_for(lambda: len(csms.frames()) == len(script))
    replies = csms.frames()
    assert [r[1] for r in replies] == ["1", "2", "3", "4", "5", "6"]
    assert replies[0] == [3, "1", {"status": "Accepted"}]
    assert replies[1] == [3, "2", {"status": "Rejected"}]
    assert [r[2] for r in replies[2:5]] == ["InternalError"] * 3
    assert replies[5][:3] == [4, "6", "NotImplemented"]
    assert [a for a, _ in station.calls] == [a for _, a, _ in script]


def test_an_idle_link_holds_no_greenlet_and_a_slow_handler_does_not_hold_up_replies(
    links,
) -> None:
    """The link is fed by an I/O watcher (docs/design.md: a parked greenlet costs ~8.5 KB); the
    greenlet that runs the handler exists only while the CSMS's CALLs are being answered."""

    def greenlets() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, greenlet.greenlet) and o)

    def slow(payload: dict[str, Any]) -> dict[str, Any]:
        gevent.sleep(0.5)
        return {"status": "Accepted"}

    station = Station({"Reset": slow})
    with FakeCsms() as csms:
        first = links(csms.url)
        first.connect()  # the hub and the resolver's greenlets start on the first connect
        first.call("Heartbeat", {})
        before = greenlets()
        link = links(csms.url, handler=station)
        link.connect()
        assert link.call("Heartbeat", {}) == {"echo": {}}
        assert greenlets() == before
        csms.push(csms_call("slow", "Reset", {"type": "OnIdle"}))
        wait_for(lambda: station.calls)
        started = time.perf_counter()
        assert link.call("Heartbeat", {"n": 1}) == {"echo": {"n": 1}}  # read meanwhile
        assert time.perf_counter() - started < 0.4
        wait_for(lambda: any(f[1] == "slow" for f in csms.frames()))
        wait_for(lambda: greenlets() == before)
        assert link.connected


def test_validation_of_both_directions(links) -> None:
    async def bad_result(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        await csms.answer(ws, call, {"currentTime": 12})  # must be a string

    observer, station = Recorder(), Station({"RequestStartTransaction": {"status": "Accepted"}})
    with FakeCsms(bad_result) as csms:
        link = links(csms.url, observer=observer, handler=station, validate=True)
        link.connect()
        with pytest.raises(schemas.PayloadError):
            link.call("BootNotification", {"reason": "PowerUp"})  # no chargingStation
        assert csms.received == []  # nothing invalid went out
        with pytest.raises(InvalidResponse) as caught:
            link.call(*v201.heartbeat())
        assert caught.value.error_code == "TypeConstraintViolation"
        csms.push(csms_call("v1", "RequestStartTransaction", {"remoteStartId": 1}))  # no idToken
        wait_for(lambda: any(f[1] == "v1" for f in csms.frames()))
    reply = next(f for f in csms.frames() if f[1] == "v1")
    assert reply[:3] == [4, "v1", "OccurrenceConstraintViolation"]
    assert station.calls == []  # the handler never saw the invalid CALL
    assert observer.protocol_errors == {"invalid_result": 1, "invalid_call": 1}
    assert observer.outcomes() == [("Heartbeat", "error", "TypeConstraintViolation")]


def test_a_broken_reply_to_our_call_fails_it_at_once(links) -> None:
    async def broken(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        await ws.send(orjson.dumps([3, call[1], "not an object"]).decode())

    observer = Recorder()
    with FakeCsms(broken) as csms:
        link = links(csms.url, observer=observer, call_timeout=5)
        link.connect()
        started = time.perf_counter()
        with pytest.raises(InvalidResponse) as caught:
            link.call("Heartbeat", {})
        assert time.perf_counter() - started < 2
        assert caught.value.error_code == "FormatViolation"
        assert [f[0] for f in csms.frames()] == [2]  # never answered
    assert observer.protocol_errors == {"malformed_frame": 1}


def test_connect_failures_are_one_line_reasons(links) -> None:
    observer = Recorder()
    with pytest.raises(ConnectFailed) as caught:
        links(f"ws://127.0.0.1:{free_port()}/cp", observer=observer).connect()
    assert caught.value.kind == "refused" and "refused" in str(caught.value)

    with socket.socket() as mute:  # accepts TCP, never answers the HTTP upgrade
        mute.bind(("127.0.0.1", 0))
        mute.listen()
        port = mute.getsockname()[1]
        link = links(f"ws://127.0.0.1:{port}/cp", observer=observer, connect_timeout=0.2)
        started = time.perf_counter()
        with pytest.raises(ConnectFailed) as caught:
            link.connect()
        assert 0.2 <= time.perf_counter() - started < 1
    assert caught.value.kind == "timeout" and "\n" not in str(caught.value)

    with FakeCsms(select_subprotocol=lambda ws, offered: None) as csms:
        with pytest.raises(ConnectFailed) as caught:
            links(csms.url, observer=observer).connect()
        assert caught.value.kind == "subprotocol"
    assert [outcome for outcome, _ in observer.connects] == ["refused", "timeout", "subprotocol"]
    with pytest.raises(ValueError, match="not a WebSocket URL"):
        Link("http://127.0.0.1/cp", OCPP201, Station())


def test_address_cache_resolves_once_per_ttl_and_never_remembers_a_failure() -> None:
    """Each connect used to ask gevent's thread-pool resolver (a thread hand-off, ~10 % of
    a connect's CPU): a burst of chargers to one CSMS now costs one lookup."""
    now = [0.0]
    asked: list[tuple[str, int]] = []
    tcp = (socket.AF_INET, socket.SOCK_STREAM, 6, "")
    answers: dict[str, Any] = {"csms": [(*tcp, ("10.0.0.7", 9000))]}

    def resolve(host: str, port: int, family: int, kind: int) -> Any:
        asked.append((host, port))
        assert kind == socket.SOCK_STREAM
        gevent.sleep(0.01)  # a lookup takes a while: others must wait for it, not ask again
        answer = answers.get(host)
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answer

    cache = AddressCache(30.0, clock=lambda: now[0], resolve=resolve)
    burst = [gevent.spawn(cache.lookup, "csms", 9000) for _ in range(50)]
    gevent.joinall(burst, raise_error=True)
    assert {tuple(g.value) for g in burst} == {tuple(answers["csms"])}
    assert asked == [("csms", 9000)]
    now[0] = 29.9
    cache.lookup("csms", 9000)
    assert len(asked) == 1
    now[0] = 30.1  # expired: asked again, and a changed answer is taken
    answers["csms"] = [(*tcp, ("10.0.0.8", 9000))]
    assert cache.lookup("csms", 9000)[0][4] == ("10.0.0.8", 9000)
    assert len(asked) == 2
    assert cache.lookup("csms", 9001) is not None and len(asked) == 3  # per port
    # failures: every waiter gets its own try (and error), nothing is cached
    burst = [gevent.spawn(cache.lookup, "nowhere", 9000) for _ in range(3)]
    gevent.joinall(burst)
    assert all(isinstance(g.exception, socket.gaierror) for g in burst)
    assert asked.count(("nowhere", 9000)) == 3
    answers["nowhere"] = []  # an empty answer is a failure too
    with pytest.raises(socket.gaierror):
        cache.lookup("nowhere", 9000)


def test_a_name_that_does_not_resolve_is_a_dns_connect_failure(links, monkeypatch) -> None:
    import loadgen.link

    def resolve(*args: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(loadgen.link, "ADDRESSES", AddressCache(resolve=resolve))
    observer = Recorder()
    with pytest.raises(ConnectFailed) as caught:
        links("ws://csms.invalid:9000/cp", observer=observer).connect()
    assert caught.value.kind == "dns" and "csms.invalid" in str(caught.value)
    assert [outcome for outcome, _ in observer.connects] == ["dns"]


def test_out_of_open_files_is_a_counted_connect_failure_said_once(
    links, caplog: pytest.LogCaptureFixture
) -> None:
    """EMFILE (a limit lowered after the start-up check) is this process's fault, not the
    CSMS's: a connect failure of its own kind, one log line for a burst of them."""
    observer = Recorder()
    caplog.set_level(logging.WARNING, logger="loadgen.link")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    made = [links(f"ws://127.0.0.1:{free_port()}/cp", observer=observer) for _ in range(3)]
    with socket.socket() as probe:
        lowest_free = probe.fileno()  # the next socket's number, were it allowed
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no room for a socket
    try:
        failures = [attempt(link.connect) for link in made]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert [type(f) for f in failures] == [ConnectFailed] * 3, failures
    assert {f.kind for f in failures} == {"too_many_open_files"}
    assert "ulimit -n" in str(failures[0]) and "\n" not in str(failures[0])
    assert [outcome for outcome, _ in observer.connects] == ["too_many_open_files"] * 3
    said = [r.getMessage() for r in caplog.records if r.name == "loadgen.link"]
    assert len(said) == 1 and "too many open files" in said[0], said


def test_twenty_greenlets_share_one_link_one_call_at_a_time(links) -> None:
    async def jittery(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        await asyncio.sleep(0.001 * (call[3]["n"] % 4))
        await csms.answer(ws, call, {"n": call[3]["n"]})

    observer = Recorder()
    with FakeCsms(jittery) as csms:
        link = links(csms.url, observer=observer)
        link.connect()
        callers = [gevent.spawn(link.call, "DataTransfer", {"n": n}) for n in range(20)]
        gevent.joinall(callers, timeout=10, raise_error=True)
        assert [c.value for c in callers] == [{"n": n} for n in range(20)]
        assert csms.max_outstanding == 1
        # FIFO: the CALLs went out in the order the callers queued
        assert [f[3]["n"] for f in csms.frames()] == list(range(20))
    assert len(observer.calls) == 20


# -- wss: security profiles 2 and 3 --------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _server_context(ca: trustme.CA, require_client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return context


def _client_context(ca: trustme.CA, client_cert: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    if client_cert:
        ca.issue_cert(client_cert).configure_cert(context)
    return context


def test_profile_2_tls_with_basic_auth(ca: trustme.CA, links) -> None:
    with FakeCsms(ssl_context=_server_context(ca, require_client_cert=False)) as csms:
        link = links(csms.url, ssl_context=_client_context(ca), basic_auth=("cp-1", "pw:1"))
        link.connect()
        assert link.call("Heartbeat", {"tls": True}) == {"echo": {"tls": True}}
        expected = "Basic " + base64.b64encode(b"cp-1:pw:1").decode()
        assert csms.request_headers[0]["Authorization"] == expected

        observer = Recorder()
        untrusted = links(csms.url, observer=observer, ssl_context=_client_context(trustme.CA()))
        with pytest.raises(ConnectFailed) as caught:
            untrusted.connect()
        assert caught.value.kind == "tls" and "certificate" in str(caught.value)
        assert observer.connects[0][0] == "tls"


def test_profile_3_client_certificate(ca: trustme.CA, links) -> None:
    with FakeCsms(ssl_context=_server_context(ca, require_client_cert=True)) as csms:
        link = links(csms.url, ssl_context=_client_context(ca, client_cert="cp-1.example"))
        link.connect()
        assert link.call("Heartbeat", {}) == {"echo": {}}
        names = dict(csms.peer_certs[0]["subjectAltName"])
        assert names["DNS"] == "cp-1.example"

        anonymous = links(csms.url, ssl_context=_client_context(ca))
        with pytest.raises(ConnectFailed) as caught:
            anonymous.connect()
        assert caught.value.kind == "tls", caught.value
        assert len(csms.connections) == 1


def test_nothing_here_monkey_patched() -> None:
    """The link must work on gevent without monkey patching: these tests prove it only if
    nothing patched the standard library behind their back."""
    import gevent.monkey

    assert not gevent.monkey.is_module_patched("socket")
    assert not gevent.monkey.is_module_patched("ssl")


# -- bug classes benchmarks/fuzz_csms.py found (one hostile message each) -----------------


def test_an_invalid_csms_call_gets_the_schema_error_even_without_validate(links, caplog) -> None:
    """The station's handlers index payloads as the schema promises: a broken CALL used to
    reach them and come back as InternalError with a traceback in the log."""
    observer, station = Recorder(), Station({"RequestStartTransaction": {"status": "Accepted"}})
    with FakeCsms() as csms:
        link = links(csms.url, observer=observer, handler=station)  # validate=False
        link.connect()
        payload = {"idToken": "not an object", "remoteStartId": 1}
        csms.push(csms_call("f1", "RequestStartTransaction", payload))
        wait_for(lambda: any(f[1] == "f1" for f in csms.frames()))
    reply = next(f for f in csms.frames() if f[1] == "f1")
    assert reply[:3] == [4, "f1", "TypeConstraintViolation"]
    assert station.calls == [] and observer.protocol_errors == {"invalid_call": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("action", ["x" * 1000, "Reset\u0000", "../v16/schemas/Reset"])
def test_an_action_name_that_is_no_file_name_is_not_implemented(links, caplog, action) -> None:
    """The action names a schema file: one too long for a file name raised OSError in the
    answering greenlet, which died and left the CSMS's later CALLs unanswered."""
    station = Station({"Reset": {"status": "Accepted"}})
    with FakeCsms() as csms:
        link = links(csms.url, handler=station)
        link.connect()
        csms.push(csms_call("f1", action, {"type": "Immediate"}))
        csms.push(csms_call("f2", "Reset", {"type": "Immediate"}))
        wait_for(lambda: any(f[1] == "f2" for f in csms.frames()))
    replies = {f[1]: f for f in csms.frames()}
    assert replies["f1"][:3] == [4, "f1", "NotImplemented"]
    assert replies["f2"] == [3, "f2", {"status": "Accepted"}]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
