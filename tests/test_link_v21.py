"""loadgen.link in OCPP 2.1 on real sockets: SEND and CALLRESULTERROR both ways, and choosing
among several offered subprotocols (against a scripted CSMS and the real csms_stub)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection

from loadgen.link import ConnectFailed, Disconnected, InvalidResponse, Link
from loadgen.protocols import OCPP16, OCPP21, OCPP201, Version, schemas, v201
from tests.conftest import StubProcess
from tests.fake_csms import FakeCsms, csms_call, wait_for
from tests.test_link import Recorder, Station, links  # noqa: F401 (a fixture)

SUBPROTOCOLS = ("ocpp2.1", "ocpp2.0.1", "ocpp1.6")
STREAM = {
    "id": 1,
    "pending": 0,
    "basetime": "2026-12-03T12:00:00.000Z",
    "data": [{"t": 0.5, "v": "230.1"}],
}


@pytest.fixture
def links21(links: Callable[..., Link]) -> Callable[..., Link]:  # noqa: F811
    """test_link's ``links``, in 2.1 unless told otherwise."""

    def make(url: str, version: Version = OCPP21, **kwargs: Any) -> Link:
        return links(url, version, **kwargs)

    return make


def _raw(*frame: Any) -> str:
    return orjson.dumps(list(frame)).decode()


def test_a_csms_send_reaches_the_handler_and_is_never_answered(links21, caplog) -> None:
    caplog.set_level(logging.WARNING, "loadgen.link")
    observer = Recorder()
    station = Station({"NotifyWebPaymentStarted": {}, "Reset": {"status": "Accepted"}})
    with FakeCsms(subprotocols=SUBPROTOCOLS) as csms:
        link = links21(csms.url, handler=station, observer=observer)
        link.connect()
        csms.push(_raw(6, "s1", "NotifyWebPaymentStarted", {"evseId": 1, "timeout": 60}))
        csms.push(_raw(6, "s2", "NotifyWebPaymentStarted", {"evseId": "one"}))  # invalid
        csms.push(_raw(6, "s3", "GetTariffs", {"evseId": 1}))  # the handler refuses it
        csms.push(_raw(6, "s4", "Reset"))  # broken SEND: no CALLERROR either
        csms.push(csms_call("c1", "Reset", {"type": "Immediate"}))
        # CALLs and SENDs are handled in order: once c1 is answered, the SENDs are done.
        wait_for(lambda: any(f[1] == "c1" for f in csms.frames()))
    assert [f[1] for f in csms.frames()] == ["c1"]  # no SEND got anything back
    assert [a for a, _ in station.calls] == ["NotifyWebPaymentStarted", "GetTariffs", "Reset"]
    assert observer.messages["received", "send"] == 3
    assert observer.protocol_errors == {
        "invalid_send": 1,
        "send_failed": 1,
        "malformed_frame": 1,
    }
    assert "GetTariffs" in caplog.text


def test_a_csms_callresulterror_is_counted_and_logged_with_its_action(links21, caplog) -> None:
    caplog.set_level(logging.WARNING, "loadgen.link")
    observer = Recorder()
    station = Station({"Reset": {"status": "Accepted"}})
    with FakeCsms(subprotocols=SUBPROTOCOLS) as csms:
        link = links21(csms.url, handler=station, observer=observer)
        link.connect()
        csms.push(csms_call("c1", "Reset", {"type": "Immediate"}))
        wait_for(lambda: any(f[1] == "c1" for f in csms.frames()))
        csms.push(_raw(5, "c1", "FormatViolation", "status is not what we expect", {}))
        csms.push(_raw(5, "c2", "GenericError"))  # broken: counted, never answered
        wait_for(lambda: observer.protocol_errors["malformed_frame"])
        assert link.call("Heartbeat", {}) == {"echo": {}}  # the link carries on
    assert observer.messages["received", "callresulterror"] == 1
    assert observer.protocol_errors == {"callresulterror": 1, "malformed_frame": 1}
    assert "FormatViolation" in caplog.text and "Reset" in caplog.text
    assert [f[0] for f in csms.frames()] == [3, 2]  # our answer and our Heartbeat only


def test_a_csms_callresult_we_cannot_accept_gets_a_callresulterror(links21) -> None:
    replies = iter([{"currentTime": 12}, "not an object"])

    async def bad(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        await csms.answer(ws, call, next(replies))

    observer = Recorder()
    with FakeCsms(bad, subprotocols=SUBPROTOCOLS) as csms:
        link = links21(csms.url, observer=observer, validate=True)
        link.connect()
        with pytest.raises(InvalidResponse):
            link.call(*v201.heartbeat())
        with pytest.raises(InvalidResponse):
            link.call(*v201.heartbeat())
        wait_for(lambda: len(csms.frames()) == 4)
    first, rejected, second, rejected_too = csms.frames()
    assert rejected[:3] == [5, first[1], "TypeConstraintViolation"]
    assert rejected_too[:3] == [5, second[1], "FormatViolation"]
    assert observer.messages["sent", "callresulterror"] == 2


def test_no_callresulterror_in_2_0_1_and_5_6_are_unknown_types(links21) -> None:
    async def bad(csms: FakeCsms, ws: ServerConnection, call: list[Any]) -> None:
        await csms.answer(ws, call, {"currentTime": 12})

    observer = Recorder()
    with FakeCsms(bad) as csms:
        link = links21(csms.url, OCPP201, observer=observer, validate=True)
        link.connect()
        with pytest.raises(InvalidResponse):
            link.call(*v201.heartbeat())
        csms.push(_raw(6, "s1", "NotifyWebPaymentStarted", {"evseId": 1, "timeout": 60}))
        wait_for(lambda: len(csms.frames()) == 2)
        with pytest.raises(ValueError, match="no SEND"):
            link.send("NotifyPeriodicEventStream", STREAM)
    assert [f[0] for f in csms.frames()] == [2, 4]
    assert csms.frames()[1][:3] == [4, "s1", "MessageTypeNotSupported"]


def test_the_station_sends_a_send_and_the_stub_takes_it_without_reply(
    stub_process: StubProcess, links21
) -> None:
    observer = Recorder()
    link = links21(
        f"{stub_process.ws_url}/link_v21_send", observer=observer, validate=True, offer=()
    )
    with pytest.raises(Disconnected):
        link.send("NotifyPeriodicEventStream", STREAM)
    link.connect()
    assert link.version is OCPP21
    link.call(*v201.boot_notification("Loadgen", "Link21"))
    link.send("NotifyPeriodicEventStream", STREAM)
    with pytest.raises(schemas.PayloadError):
        link.send("NotifyPeriodicEventStream", {"id": 1})  # validated before it goes out
    reply = link.call(*v201.heartbeat())  # the SEND got nothing: this is the next reply
    schemas.validate(OCPP21, "Heartbeat", reply, response=True)
    assert observer.messages["sent", "send"] == 1
    assert observer.protocol_errors == {}


@pytest.mark.parametrize(
    ("offer", "server", "spoken"),
    [
        ((OCPP21, OCPP201), ("ocpp2.1", "ocpp2.0.1"), OCPP21),
        ((OCPP21, OCPP201), ("ocpp2.0.1", "ocpp1.6"), OCPP201),
        # websockets' default: a server that picks by its own preference, not the offer's
        ((OCPP201, OCPP21), ("ocpp2.1", "ocpp2.0.1"), OCPP21),
        ((OCPP21, OCPP16), ("ocpp1.6",), OCPP16),
    ],
)
def test_the_link_offers_several_subprotocols_and_speaks_the_chosen_one(
    links21, offer: tuple[Version, ...], server: tuple[str, ...], spoken: Version
) -> None:
    with FakeCsms(subprotocols=server) as csms:
        link = links21(csms.url, offer[0], offer=offer)
        link.connect()
        assert link.version is spoken
        assert csms.request_headers[0]["Sec-WebSocket-Protocol"] == ", ".join(
            v.subprotocol for v in offer
        )


def test_a_csms_that_speaks_none_of_the_offer_fails_the_connect(links21) -> None:
    # the handshake ends without a subprotocol, as csms_stub's does before it closes
    with FakeCsms(select_subprotocol=lambda connection, offered: None) as csms:
        link = links21(csms.url, OCPP21, offer=(OCPP21, OCPP201))
        with pytest.raises(ConnectFailed) as caught:
            link.connect()
    assert caught.value.kind == "subprotocol"
    assert "ocpp2.1, ocpp2.0.1" in str(caught.value)


@pytest.mark.parametrize(
    ("offer", "spoken"),
    [((OCPP201, OCPP21), OCPP201), ((OCPP21, OCPP201), OCPP21), ((OCPP16, OCPP21), OCPP16)],
)
def test_the_stub_takes_the_chargers_first_choice(
    stub_process: StubProcess, links21, offer: tuple[Version, ...], spoken: Version
) -> None:
    link = links21(f"{stub_process.ws_url}/link_v21_offer", offer[0], offer=offer)
    link.connect()
    assert link.version is spoken
    reply = link.call("Heartbeat", {})
    schemas.validate(spoken, "Heartbeat", reply, response=True)
