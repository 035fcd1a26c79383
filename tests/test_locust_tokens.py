"""The user's identities end to end: the ``locust`` command's idTokens (a token file, the
fleet's per site and per charger table, generated ones) against a csms_stub process that is
as strict as a real CSMS (a list of known tokens with types, format checks). What the stub
answered is read from its own counter of verdicts and its stored transactions."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import pytest

from loadgen import idtokens
from tests.conftest import sample, start_stub_process
from tests.test_locust import FAST, run_locust, transactions
from tests.test_locust import (
    test_a_bad_option_stops_locust_at_start_with_one_line as _stops_with_one_line,
)

pytestmark = pytest.mark.seconds(36)  # conftest.py: the start order

FLEET = """\
[[sites]]
id = "north"
lat = 33.5
lon = 126.5
id_tokens = ["04A2B3C4D5E6F7", "04A2B3C4D5E6F8"]

[[sites]]
id = "south"
lat = 33.25
lon = 126.56

[[chargers]]
site = "north"
ids = ["north-1", "north-2"]
rated_power_kw = 50

[[chargers]]
site = "south"
ids = ["vip"]
rated_power_kw = 150
id_tokens = [{value = "KRLGNC00000001", type = "eMAID"}]

[[chargers]]
site = "south"
pattern = "south-{n}"
count = 3
rated_power_kw = 50
"""

TOKEN_FILE = """\
# the run's pool: the chargers whose table and site have no tokens
DEADBEEF
E004015012345678,ISO15693
12345678,KeyCode
04C1C2C3C4C5C6
"""


#: every charger's first EV within a second or so (mean 0.25 s): each one presents a token
SOON = ["--session-interarrival", "15"]


def verdicts(api_url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{api_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    statuses = ("Accepted", "Blocked", "Invalid", "Malformed")
    return {s: sample(text, "csms_stub_authorizations_total", status=s) for s in statuses}


def strict_run(
    tmp_path: Path, users: int, stub_args: list[str], *args: str, succeed: bool = True
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """A ``--run-time 6s`` run of ``users`` against a stub with ``--strict-id-tokens`` and
    ``stub_args``; the stub's authorization verdicts and its transactions."""
    stub = start_stub_process(tmp_path, *stub_args, "--strict-id-tokens")
    try:
        code, output = run_locust(
            tmp_path / "locust.log",
            *("--host", stub.ws_url, "--users", str(users), "--spawn-rate", str(users)),
            *("--run-time", "6s", "--only-summary", *FAST, *SOON, *args),
        )
        if succeed:
            assert code == 0, output[-3000:]
        assert "Traceback" not in output
        return verdicts(stub.api_url), transactions(stub)
    finally:
        stub.stop()


def test_the_users_tokens_reach_a_strict_csms_that_accepts_them_all(tmp_path: Path) -> None:
    """Tokens of every origin and several types, validated both ways: the strict stub that
    knows them (the same file and fleet) accepts every one, and each charger presented its
    own table's tokens, else its site's, else the run's."""
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET, encoding="utf-8")
    token_file = tmp_path / "tokens.txt"
    token_file.write_text(TOKEN_FILE, encoding="utf-8")
    files = ["--fleet", str(fleet), "--id-token-file", str(token_file)]
    counted, rows = strict_run(tmp_path, 6, files, *files, "--ocpp-validate")
    assert counted["Accepted"] > 0, counted
    assert counted["Invalid"] == counted["Malformed"] == counted["Blocked"] == 0, counted
    pool = {line.split(",")[0] for line in TOKEN_FILE.splitlines()[1:]}
    own = {
        "north-1": {"04A2B3C4D5E6F7", "04A2B3C4D5E6F8"},
        "north-2": {"04A2B3C4D5E6F7", "04A2B3C4D5E6F8"},
        "vip": {"KRLGNC00000001"},
    }
    assert {row["charger_id"] for row in rows} >= set(own), rows
    for row in rows:
        assert row["id_token"] in own.get(row["charger_id"], pool), row


def test_generated_tokens_pass_a_strict_csms_that_knows_only_some(tmp_path: Path) -> None:
    """Generated tokens are well formed (no CALLERROR from a strict CSMS); a CSMS that knows
    only half of them answers Invalid for the rest."""
    generated = idtokens.generate(8)
    known = tmp_path / "known.txt"
    known.write_text("".join(f"{t.value},{t.type}\n" for t in generated[:4]), encoding="utf-8")
    # How the station reacts to Invalid is not the point here: only what the CSMS said.
    counted, rows = strict_run(
        tmp_path,
        8,
        ["--id-token-file", str(known)],
        *("--fleet-size", "8", "--charger-id-pattern", "CS-{:03d}"),
        succeed=False,
    )
    assert counted["Malformed"] == 0, counted
    assert counted["Accepted"] > 0 and counted["Invalid"] > 0, counted
    assert rows and {row["id_token"] for row in rows} <= {t.value for t in generated}
    assert {row["charger_id"] for row in rows} <= {f"CS-{n:03d}" for n in range(1, 9)}


def test_a_custom_21_token_type_reaches_the_csms(tmp_path: Path) -> None:
    """``--id-token-type VIN`` on a 2.1 run: the generated tokens are valid 2.1 idTokens of
    that type (``--ocpp-validate``), and a strict CSMS that knows them as VIN stores the
    transactions with them."""
    generated = idtokens.generate(4, "VIN")
    known = tmp_path / "known.txt"
    known.write_text("".join(f"{t.value},{t.type}\n" for t in generated), encoding="utf-8")
    counted, rows = strict_run(
        tmp_path,
        4,
        ["--id-token-file", str(known)],
        *("--fleet-size", "4", "--ocpp-version", "2.1", "--id-token-type", "VIN"),
        "--ocpp-validate",
    )
    assert counted["Accepted"] > 0, counted
    assert counted["Invalid"] == counted["Malformed"] == counted["Blocked"] == 0, counted
    assert rows and {row["id_token"] for row in rows} <= {t.value for t in generated}, rows
    assert {row["ocpp_version"] for row in rows} == {"2.1"}, rows


BAD_TOKENS = {
    "unknown token type": (
        ["--id-token-type", "RFID CARD"],
        "--id-token-type: unknown idToken type 'RFID CARD'",
    ),
    "custom token type on 2.0.1": (
        ["--id-token-type", "VIN"],
        "--id-token-type: unknown idToken type 'VIN' for OCPP 2.0.1",
    ),
    "custom token type offered with 2.0.1 too": (
        ["--id-token-type", "VIN", "--ocpp-version", "2.1,2.0.1"],
        "--id-token-type: unknown idToken type 'VIN' for OCPP 2.0.1 (one of",
    ),
    "custom token type in a file for 2.0.1": (
        ["--id-token-file", "{vin}", "--ocpp-version", "2.0.1"],
        "vin.txt:2: unknown idToken type 'VIN' for OCPP 2.0.1",
    ),
    "malformed token in the file": (["--id-token-file", "{bad}"], "bad.txt:2: idToken 'tok01'"),
    "token too long for 1.6": (
        ["--id-token-file", "{long}", "--ocpp-version", "1.6"],
        "long.txt:1: idToken 'CENTRAL-0000000000000001': OCPP 1.6 allows 1 to 20",
    ),
    "charger id pattern with a slash": (["--charger-id-pattern", "cp/{}"], "--charger-id-pattern"),
}


@pytest.mark.parametrize("args,named", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_bad_tokens_stop_locust_at_start_with_one_line(
    tmp_path: Path, args: list[str], named: str
) -> None:
    (tmp_path / "bad.txt").write_text("DEADBEEF\ntok01,ISO14443\n", encoding="utf-8")
    (tmp_path / "long.txt").write_text("CENTRAL-0000000000000001,Central\n", encoding="utf-8")
    (tmp_path / "vin.txt").write_text("DEADBEEF\nWVWZZZ1JZXW000001,VIN\n", encoding="utf-8")
    files = {name: str(tmp_path / f"{name[1:-1]}.txt") for name in ("{bad}", "{long}", "{vin}")}
    args = [files.get(arg, arg) for arg in args]
    _stops_with_one_line(tmp_path, args, named)
