"""csms_stub's idToken strictness over real sockets: a list of known tokens with types
(Invalid for others), format checks (CALLERROR PropertyConstraintViolation, as CitrineOS
answers), and the counter of its verdicts. Runs against SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from csms_stub.__main__ import build_parser, config_from_args
from csms_stub.app import Stub
from loadgen import fleet as fleets
from loadgen.idtokens import IdToken, IdTokenError
from loadgen.ocppj import ErrorCode
from loadgen.protocols import v16, v201
from tests.aio_client import CallErrorReply, OcppClient
from tests.conftest import Dial, StubFactory, heartbeat_ok, metrics_text, sample

KNOWN = (IdToken("04A2B3C4D5E6F7", "ISO14443"), IdToken("KRLGNC00000001", "eMAID"))


async def verdicts(stub: Stub) -> dict[str, float]:
    text = await metrics_text(stub)
    statuses = ("Accepted", "Blocked", "Invalid", "Malformed")
    return {s: sample(text, "csms_stub_authorizations_total", status=s) for s in statuses}


async def authorize_201(client: OcppClient, value: str, token_type: str) -> str:
    reply = await client.call(*v201.authorize(value, token_type))
    return reply["idTokenInfo"]["status"]


async def test_a_stub_with_a_token_list_knows_only_those_tokens(
    make_stub: StubFactory, dial: Dial
) -> None:
    stub = await make_stub(id_tokens=KNOWN, blocked_tokens=("KRLGNC00000001",))
    client = await dial(stub, "emart_jeju_01")
    assert await authorize_201(client, "04A2B3C4D5E6F7", "ISO14443") == "Accepted"
    assert await authorize_201(client, "04a2b3c4d5e6f7", "ISO14443") == "Accepted"  # case
    # known, but presented as another type; unknown; blocked
    assert await authorize_201(client, "04A2B3C4D5E6F7", "Local") == "Invalid"
    assert await authorize_201(client, "04FFFFFFFFFFFF", "ISO14443") == "Invalid"
    assert await authorize_201(client, "KRLGNC00000001", "eMAID") == "Blocked"
    now = time.time()
    started = await client.call(
        *v201.transaction_event(
            "Started", "tx-unknown", 0, now, "Authorized", evse_id=1, connector_id=1,
            token=v201.id_token("04FFFFFFFFFFFF"), charging_state="Charging",
        )
    )  # fmt: skip
    assert started["idTokenInfo"] == {"status": "Invalid"}

    c16 = await dial(stub, "emart_jeju_02", "ocpp1.6")
    # a 1.6 idTag has no type: the value alone identifies it
    assert (await c16.call(*v16.authorize("04a2b3c4d5e6f7")))["idTagInfo"]["status"] == "Accepted"
    start = await c16.call(*v16.start_transaction(1, "UNKNOWN-TAG", 0, now))
    assert start["idTagInfo"] == {"status": "Invalid"}
    assert await verdicts(stub) == {"Accepted": 3, "Blocked": 1, "Invalid": 4, "Malformed": 0}


async def test_strict_id_tokens_refuse_malformed_tokens_and_store_nothing(
    make_stub: StubFactory, dial: Dial
) -> None:
    stub = await make_stub(strict_id_tokens=True)
    client = await dial(stub, "emart_jeju_01")
    # the load generator's old tokens: what CitrineOS refused
    with pytest.raises(CallErrorReply) as caught:
        await client.call(*v201.authorize("tok0000001", "ISO14443"))
    assert caught.value.error_code == ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
    assert "8 or 14 hex digits" in caught.value.description
    now = time.time()
    with pytest.raises(CallErrorReply) as caught:
        await client.call(
            *v201.transaction_event(
                "Started", "tx-bad", 0, now, "Authorized", evse_id=1, connector_id=1,
                token=v201.id_token("E0040150", "ISO15693"), charging_state="Charging",
            )
        )  # fmt: skip
    assert caught.value.error_code == ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
    assert stub.service.find_transaction("emart_jeju_01", "tx-bad") is None
    for value, token_type in (("04A2B3C4D5E6F7", "ISO14443"), ("KRLGNC00000001", "eMAID")):
        assert await authorize_201(client, value, token_type) == "Accepted"
    await heartbeat_ok(client)  # the connection survived

    c16 = await dial(stub, "emart_jeju_02", "ocpp1.6")
    with pytest.raises(CallErrorReply) as caught:
        await c16.call(*v16.start_transaction(1, "tab\there", 0, now))
    assert caught.value.error_code == ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
    assert not stub.service.transactions
    assert (await c16.call(*v16.authorize("any idTag")))["idTagInfo"]["status"] == "Accepted"
    counted = await verdicts(stub)
    assert counted == {"Accepted": 3, "Blocked": 0, "Invalid": 0, "Malformed": 3}
    text = await metrics_text(stub)
    assert (
        sample(text, "csms_stub_call_errors_total", error_code="PropertyConstraintViolation") == 3
    )


def test_the_stub_learns_its_tokens_from_a_file_and_the_fleet(tmp_path: Path) -> None:
    parse = build_parser().parse_args
    assert config_from_args(parse([])).id_tokens is None  # today's: every token Accepted
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("# cards\nDEADBEEF\nKRLGNC00000001,eMAID\n", encoding="utf-8")
    config = config_from_args(parse(["--id-token-file", str(tokens), "--strict-id-tokens"]))
    assert config.id_tokens == (IdToken("DEADBEEF", "ISO14443"), IdToken("KRLGNC00000001", "eMAID"))
    assert config.strict_id_tokens
    config = config_from_args(parse(["--id-token-file", str(tokens), "--id-token-type", "Local"]))
    assert config.id_tokens is not None and config.id_tokens[0].type == "Local"

    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        fleets.SEED_FLEET.read_text(encoding="utf-8").replace(
            "rated_power_kw = 50", 'rated_power_kw = 50\nid_tokens = ["04A2B3C4D5E6F7"]'
        ),
        encoding="utf-8",
    )
    # a fleet with tokens is a list of its own, with or without a file
    config = config_from_args(parse(["--fleet", str(fleet)]))
    assert config.id_tokens == (IdToken("04A2B3C4D5E6F7", "ISO14443"),)
    config = config_from_args(parse(["--fleet", str(fleet), "--id-token-file", str(tokens)]))
    assert config.id_tokens is not None and len(config.id_tokens) == 3

    tokens.write_text("DEADBEEF\ndeadbeef\n", encoding="utf-8")
    with pytest.raises(IdTokenError, match=r"tokens\.txt:2: idToken 'deadbeef' appears twice"):
        config_from_args(parse(["--id-token-file", str(tokens)]))
