"""idTokens: token files, the format rules per type, generated tokens (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen import idtokens
from loadgen.idtokens import IdToken, IdTokenError
from loadgen.protocols import OCPP16, OCPP21, OCPP201, schemas, v16, v201

GOOD = {
    "ISO14443": ["04A2B3C4D5E6F7", "DEADBEEF", "04a2b3c4d5e6f7"],
    "ISO15693": ["E004015012345678"],
    "MacAddress": ["0242AC110002", "02:42:ac:11:00:02", "02-42-AC-11-00-02"],
    "eMAID": ["KRLGNC00000001", "DE-8AA-C12345678-X", "NL-TNM-012345678"],
    "KeyCode": ["1234", "pin*42"],
    "Local": ["local_user.7"],
    "Central": ["3fa85f64-5717-4562-b3fc-2c963f66afa6"],
    "NoAuthorization": [""],
}
BAD = {
    "ISO14443": ["tok0000001", "04A2B3C4D5E6", "04A2B3C4D5E6FG", "DEADBEE"],
    "ISO15693": ["04A2B3C4D5E6F7", "E004015012345678AA"],
    "MacAddress": ["0242AC11000", "02:42-AC:11:00:02", "02:42:ac:11:00:0g"],
    "eMAID": ["KRLGN", "12LGNC00000001", "KR LGN C00000001"],
    "KeyCode": ["12 34", "pin#"],
    "Local": ["a/b"],
    "Central": ["über"],
    "NoAuthorization": ["x"],
}


@pytest.mark.parametrize("token_type", idtokens.TYPES)
def test_format_rules_per_type(token_type: str) -> None:
    for value in GOOD[token_type]:
        assert idtokens.format_problem(value, token_type) is None, value
    for value in BAD[token_type]:
        problem = idtokens.format_problem(value, token_type)
        assert problem is not None and token_type in problem, value


def test_the_types_are_the_schemas() -> None:
    assert set(idtokens.TYPES) == set(GOOD) and len(idtokens.TYPES) == 8
    assert idtokens.normalise_type("iso14443") == "ISO14443"
    assert idtokens.normalise_type(" EMAID ") == "eMAID"
    assert idtokens.normalise_type(" VIN ") == "VIN"  # a custom 2.1 type, as given
    for bad in ("RFID CARD", "R" * 21, "über", ""):
        with pytest.raises(IdTokenError, match=r"unknown idToken type .*for OCPP 2\.1 1 to 20"):
            idtokens.normalise_type(bad)


def test_a_custom_type_needs_every_offered_version_to_be_21() -> None:
    """2.1's type is a free string; 2.0.1's an enum; 1.6 sends none but the rule is the
    run's: a run offering 2.1,2.0.1 may end up speaking 2.0.1."""
    assert idtokens.CUSTOM_TYPE_MAX_LENGTH == 20
    assert idtokens.type_problem("VIN", "2.1") is None
    assert idtokens.type_problem("eMAID", "2.0.1") is None
    for version in ("2.0.1", "1.6"):
        problem = idtokens.type_problem("VIN", version)
        assert problem is not None and f"OCPP {version}" in problem and "2.1 only" in problem
    vin = [IdToken("WVWZZZ1JZXW000001", "VIN", where="t:4")]
    assert idtokens.check(vin, "2.1", None) == vin
    with pytest.raises(IdTokenError, match=r"^t:4: unknown idToken type 'VIN' for OCPP 2\.0\.1"):
        idtokens.check(vin, "2.0.1", None)
    with pytest.raises(IdTokenError, match=r"^unknown idToken type 'VIN' for OCPP 2\.0\.1"):
        idtokens.check([IdToken("WVWZZZ1JZXW000001")], "2.0.1", "VIN")  # the default type
    # 2.1's values: up to 255 characters, of a custom type or not
    longest = IdToken("A" * 255, "VIN")
    assert idtokens.check([longest], "2.1", None) == [longest]
    with pytest.raises(IdTokenError, match=r"OCPP 2\.1 allows 1 to 255"):
        idtokens.check([IdToken("A" * 256, "VIN")], "2.1", None)
    schemas.validate(OCPP21, "Authorize", v201.authorize(longest.value, longest.type)[1])


def test_token_file_and_custom_types(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text("WVWZZZ1JZXW000001,VIN\n04A2B3C4D5E6F7,iso14443\n", encoding="utf-8")
    tokens = idtokens.load_file(path)  # the version is not known yet: checked by check()
    assert [t.type for t in tokens] == ["VIN", "ISO14443"]
    with pytest.raises(IdTokenError, match=rf"^{path}:1: unknown idToken type 'VIN'"):
        idtokens.check(tokens, "2.0.1", None)
    path.write_text("WVWZZZ1JZXW0 0001,VIN\n", encoding="utf-8")
    with pytest.raises(IdTokenError, match=":1: idToken 'WVWZZZ1JZXW0 0001': a VIN idToken is"):
        idtokens.load_file(path)


def test_a_16_idtag_is_printable_ascii() -> None:
    assert idtokens.format_problem("any idTag-1", None) is None
    assert idtokens.format_problem("tab\there", None) is not None
    assert idtokens.format_problem("", None) is not None


def test_token_file_lines_comments_types_and_items(tmp_path: Path) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(
        "# the CSMS's cards\n\n04A2B3C4D5E6F7\n E004015012345678 , iso15693\n"
        "KRLGNC00000001,eMAID\n  # indented comment\n1234,KeyCode\n",
        encoding="utf-8",
    )
    tokens = idtokens.load_file(path)
    assert tokens == [
        IdToken("04A2B3C4D5E6F7"),
        IdToken("E004015012345678", "ISO15693"),
        IdToken("KRLGNC00000001", "eMAID"),
        IdToken("1234", "KeyCode"),
    ]
    assert tokens[1].where == f"{path}:4"
    assert [IdToken.from_item(t.item()) for t in tokens] == tokens
    assert tokens[1].item() == "E004015012345678\tISO15693" and tokens[0].item() == "04A2B3C4D5E6F7"


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "holds no tokens"),
        ("# only a comment\n\n", "holds no tokens"),
        ("04A2B3C4D5E6F7\nABC,RFID CARD\n", ":2: unknown idToken type 'RFID CARD'"),
        ("04A2B3C4D5E6F7,\n", ":1: '04A2B3C4D5E6F7,': a type is missing"),
        ("tok0000001,ISO14443\n", ":1: idToken 'tok0000001': an ISO14443 idToken is"),
        ("DEADBEEF\n# x\ndeadbeef,ISO14443\n", ":3: idToken 'deadbeef' appears twice (also at"),
    ],
)
def test_bad_token_files_say_where_and_why(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "tokens.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(IdTokenError) as caught:
        idtokens.load_file(path)
    assert str(caught.value).startswith(str(path)) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_unreadable_token_file(tmp_path: Path) -> None:
    with pytest.raises(IdTokenError, match="cannot read idToken file"):
        idtokens.load_file(tmp_path / "missing.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(IdTokenError, match="cannot read idToken file"):
        idtokens.load_file(tmp_path / "binary.txt")


def test_check_applies_the_default_type_and_the_versions_limits() -> None:
    plain = [IdToken("DEADBEEF", where="t:1"), IdToken("1234", "KeyCode", where="t:2")]
    assert idtokens.check(plain, "2.0.1", None) == [
        IdToken("DEADBEEF", "ISO14443"),
        IdToken("1234", "KeyCode"),
    ]
    # 1.6 sends no type; a declared type is still checked
    assert idtokens.check(plain, "1.6", None) == [IdToken("DEADBEEF"), IdToken("1234")]
    with pytest.raises(IdTokenError, match="t:1: idToken 'DEAD BEEF': a KeyCode"):
        idtokens.check([IdToken("DEAD BEEF", where="t:1")], "2.0.1", "KeyCode")
    long = IdToken("KRLGNC00000001" + "0" * 10, "Central", where="t:9")
    assert idtokens.check([long], "2.0.1", None)
    with pytest.raises(IdTokenError, match=r"t:9: idToken .*OCPP 1\.6 allows 1 to 20 characters"):
        idtokens.check([long], "1.6", None)
    with pytest.raises(IdTokenError, match=r"OCPP 2\.0\.1 allows 1 to 36"):
        idtokens.check([IdToken("x" * 37, "Central")], "2.0.1", None)
    with pytest.raises(IdTokenError, match="NoAuthorization carries no identity"):
        idtokens.check([IdToken("", "NoAuthorization")], "2.0.1", None)
    with pytest.raises(IdTokenError, match="appears twice"):
        idtokens.check([IdToken("DEADBEEF"), IdToken("deadbeef", "ISO14443")], "1.6", None)


@pytest.mark.parametrize("token_type", [t for t in idtokens.TYPES if t != "NoAuthorization"])
def test_generated_tokens_are_valid_unique_and_the_same_in_every_worker(token_type: str) -> None:
    tokens = idtokens.generate(5000, token_type)
    assert tokens == idtokens.generate(5000, token_type)  # deterministic from the index
    assert len({t.value.upper() for t in tokens}) == 5000
    for version in ("2.0.1", "1.6"):  # valid for its type and both versions' limits
        idtokens.check(tokens, version, None)
    token = tokens[0]
    schemas.validate(OCPP201, "Authorize", v201.authorize(token.value, token.type)[1])
    schemas.validate(OCPP16, "Authorize", v16.authorize(token.value)[1])


def test_generated_tokens_of_a_custom_type_are_20_hex_digits() -> None:
    tokens = idtokens.generate(5000, "VIN")
    assert tokens == idtokens.generate(5000, "VIN")
    assert len({t.value for t in tokens}) == 5000 and {t.type for t in tokens} == {"VIN"}
    assert all(len(t.value) == 20 and t.value == t.value.upper() for t in tokens)
    assert all(int(t.value, 16) for t in tokens)
    idtokens.check(tokens, "2.1", None)
    schemas.validate(OCPP21, "Authorize", v201.authorize(tokens[0].value, "VIN")[1])


def test_generated_iso14443_tokens_are_7_byte_uids() -> None:
    values = [t.value for t in idtokens.generate(3)]
    assert all(len(v) == 14 and v.startswith("04") and v == v.upper() for v in values)
    assert values[0] != "04000000000001"  # spread like real UIDs, not counting up
    with pytest.raises(IdTokenError):
        idtokens.generate(1, "NoAuthorization")
