"""csms_stub answers every action a charging station sends, in each version, over real
sockets: a CSMS may lack a service (a certificate authority, ISO 15118 schedules) and say
so in its answer, but an action that is a CSMS's to answer never gets NotSupported."""

from __future__ import annotations

import time
from typing import Any

import pytest

from csms_stub.app import Stub
from csms_stub.handlers import HANDLERS
from loadgen.protocols import STATION_ACTIONS, VERSIONS, Version, iso_timestamp, schemas
from tests.conftest import ClientFactory
from tests.test_commands import sample

#: sent without a reply (2.1's SEND frame; tests/test_stub_v21.py has it)
NO_REPLY = {"NotifyPeriodicEventStream"}
#: answered the same whatever their payload (noted or declined): exercised here only, the
#: other handlers also with realistic payloads (test_stub_protocol.py, test_stub_v21.py)
SAMPLED_ONLY = {
    "ClearedChargingLimit", "Get15118EVCertificate", "GetCertificateChainStatus",
    "GetCertificateStatus", "NotifyChargingLimit", "NotifyEVChargingNeeds",
    "NotifyEVChargingSchedule", "PublishFirmwareStatusNotification", "SignCertificate",
}  # fmt: skip


@pytest.mark.parametrize("version", list(VERSIONS.values()), ids=list(VERSIONS))
async def test_every_station_action_gets_a_schema_valid_answer(
    stub: Stub, connect: ClientFactory, version: Version
) -> None:
    assert STATION_ACTIONS[version.name] <= set(HANDLERS[version.name]), version.name
    client = await connect("emart_jeju_01", version.subprotocol)
    boot = sample(version, "BootNotification", False, iso_timestamp(time.time()))
    assert (await client.call("BootNotification", boot))["status"] == "Accepted"
    answered: dict[str, dict[str, Any]] = {}
    for action in sorted(STATION_ACTIONS[version.name] - NO_REPLY):
        # the required fields of the schema, every enum at its first value
        payload = sample(version, action, False, iso_timestamp(time.time()))
        reply = await client.call(action, payload)  # a CALLERROR raises
        schemas.validate(version, action, reply, response=True)
        answered[action] = reply
    if version.name == "1.6":
        assert answered["SignCertificate"] == {"status": "Rejected"}  # no CA
    else:
        # what the stub has no service behind is declined with its reason
        assert answered["SignCertificate"]["statusInfo"]["reasonCode"] == "NoCA"
        assert answered["GetCertificateStatus"]["status"] == "Failed"
        assert answered["Get15118EVCertificate"]["status"] == "Failed"
        assert answered["NotifyEVChargingNeeds"]["status"] == "Rejected"
        assert answered["NotifyEVChargingSchedule"] == {"status": "Accepted"}
    if version.name == "2.1":
        (status,) = answered["GetCertificateChainStatus"]["certificateStatus"]
        assert status["status"] == "Unknown"  # no revocation is checked
