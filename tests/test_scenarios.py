"""The seed's five scenarios, end to end: ``python -m loadgen.scenarios`` against a real
csms_stub process, then the stub's database checked directly."""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import StubProcess, start_stub_process

ROOT = Path(__file__).resolve().parent.parent
SEED = str(ROOT / "loadgen" / "fleets" / "seed.toml")

pytestmark = pytest.mark.seconds(100)  # conftest.py: the start order


def scenarios(stub: StubProcess, which: str, *extra: str) -> subprocess.Popen[str]:
    # Scenario 2 counts its periodic Updated events (every 5 s): at 20 times real speed a
    # 250 ms pause of a busy machine skips one (the station keeps its sampling grid, as a
    # charger does), so it runs at 10 times (half a second a period).
    time_scale = "10" if which == "2" else "20"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "loadgen.scenarios",
            which,
            "--csms",
            stub.ws_url,
            "--api",
            stub.api_url,
            "--time-scale",
            time_scale,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )


def run_scenarios(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m loadgen.scenarios ARGS`` to completion, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "loadgen.scenarios", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def finish(process: subprocess.Popen[str], timeout: float = 120) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output
    return output


def rows(directory: Path, query: str) -> list[sqlite3.Row]:
    with sqlite3.connect(directory / "x.db") as connection:
        connection.row_factory = sqlite3.Row
        return connection.execute(query).fetchall()


@pytest.fixture
def stub(tmp_path: Path):
    # as strict about token formats as a real CSMS: the seed's tokens are sent as app tokens
    process = start_stub_process(tmp_path, "--fleet", SEED, "--strict-id-tokens")
    yield process
    process.stop()


@pytest.mark.parametrize("version", ["2.1", "2.0.1", "1.6"])
def test_scenarios_1_to_4(stub: StubProcess, tmp_path: Path, version: str) -> None:
    output = ""
    for which in "1234":
        output += finish(scenarios(stub, which, "--ocpp-version", version, "--ocpp-validate"))
    for which in "1234":
        assert re.search(rf"== scenario {which} passed: (\d+)/\1 checks", output), output
        # the stub validates what it receives; the stations checked every reply and CALL
    assert output.count(f"ok   every frame valid OCPP {version} (both ways)") == 4
    sent = "MeterValues sent: " if version == "1.6" else "TransactionEvent sent (Updated): "
    assert "charging started: " in output and sent in output
    assert re.search(r"charging stopped: \S+ \(total: \d+\.\d\d kWh\)", output)
    stub.stop()  # graceful: everything acknowledged is now in the database

    sessions = rows(tmp_path, "SELECT * FROM charger_usage_log")
    assert len(sessions) == 1 + 1 + 5  # scenario 2, scenario 3, scenario 4
    for session in sessions:
        assert session["end_time"] is not None
        events = rows(
            tmp_path,
            "SELECT COUNT(*) AS n FROM transaction_event WHERE "
            f"transaction_id = '{session['transaction_id']}'",
        )
        assert events[0]["n"] == session["event_count"]
        registers = rows(
            tmp_path,
            "SELECT MIN(energy_register_wh) AS low, MAX(energy_register_wh) AS high FROM "
            f"power_consumption WHERE transaction_id = '{session['transaction_id']}'",
        )[0]
        delta_kwh = (registers["high"] - registers["low"]) / 1000
        assert session["energy_consumed"] == pytest.approx(delta_kwh, abs=1e-6)
        assert session["cost"] == pytest.approx(session["energy_consumed"] * 150, abs=0.01)
    reasons = sorted(session["stop_reason"] for session in sessions)
    assert reasons == ["Local"] * 6 + ["Remote"]
    peak = rows(
        tmp_path,
        "SELECT timestamp, SUM(power_reading) AS total FROM "
        "power_consumption GROUP BY timestamp ORDER BY total DESC LIMIT 1",
    )
    # Scenario 4's stations sample in step, so one timestamp holds all five readings.
    assert peak[0]["total"] <= 350_000 + 1
    per_charger = rows(
        tmp_path,
        "SELECT charger_id, MAX(power_reading) AS p FROM "
        "power_consumption GROUP BY charger_id ORDER BY charger_id",
    )
    assert sum(row["p"] for row in per_charger) == pytest.approx(350_000, abs=1)
    boots = rows(tmp_path, "SELECT COUNT(*) AS n FROM event_log WHERE kind = 'boot'")
    heartbeats = rows(tmp_path, "SELECT COUNT(*) AS n FROM event_log WHERE kind = 'heartbeat'")
    assert boots[0]["n"] >= 4 + 4 and heartbeats[0]["n"] >= 1


@pytest.mark.parametrize("version", ["2.0.1", "2.1"])
def test_scenario_5_survives_a_killed_csms(stub: StubProcess, tmp_path: Path, version: str) -> None:
    run = scenarios(stub, "5", "--ocpp-version", version, "--ocpp-validate")
    assert run.stdout is not None
    lines = []
    for line in run.stdout:
        lines.append(line)
        if "STOP THE CSMS NOW" in line:
            break
    port = stub.ws_url.rsplit(":", 1)[1]
    api_port = stub.api_url.rsplit(":", 1)[1]
    stub.process.send_signal(signal.SIGTERM)  # the CSMS goes away mid-transaction
    stub.process.wait(30)
    for line in run.stdout:
        lines.append(line)
        if "START THE CSMS AGAIN" in line:
            break
    time.sleep(2)  # down long enough for the station to retry with back-off
    restarted = start_stub_process(
        tmp_path, "--fleet", SEED, "--port", port, "--api-port", api_port
    )
    try:
        output = "".join(lines) + finish(run)
    finally:
        restarted.stop()
    assert "== scenario 5 passed" in output, output
    assert "reconnect attempt 2" in output  # backed off at least twice while it was down
    assert "reconnected" in output
    (session,) = rows(tmp_path, "SELECT * FROM charger_usage_log")
    assert session["end_time"] is not None and session["offline_event_count"] > 0
    seq_nos = [
        row["seq_no"]
        for row in rows(tmp_path, "SELECT seq_no FROM transaction_event ORDER BY seq_no")
    ]
    assert seq_nos == list(range(len(seq_nos)))  # nothing lost, nothing twice
    assert session["event_count"] == len(seq_nos)
    boots = rows(tmp_path, "SELECT COUNT(*) AS n FROM event_log WHERE kind = 'boot'")
    assert boots[0]["n"] == 2


def test_scenario_3_without_api_fails_clearly(stub: StubProcess) -> None:
    process = run_scenarios("3", "--csms", stub.ws_url)
    assert process.returncode == 1
    assert "scenario 3 needs the CSMS's HTTP API: pass --api" in process.stdout


def test_unreachable_csms_fails_with_a_reason(tmp_path: Path) -> None:
    process = run_scenarios(
        "1",
        "--csms",
        "ws://127.0.0.1:9",
        "--time-scale",
        "20",
    )
    assert process.returncode == 1
    assert "connection refused" in process.stdout
    assert "scenario 1 FAILED" in process.stdout


def test_security_profile_1_with_fleet_passwords(tmp_path: Path) -> None:
    secret = "s3cret-Pa55"
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        Path(SEED)
        .read_text()
        .replace(
            'serial_pattern = "SN-{id}-001"',
            f'serial_pattern = "SN-{{id}}-001"\npassword = "{secret}"',
        )
    )
    stub = start_stub_process(tmp_path, "--fleet", str(fleet), "--require-auth")
    try:
        good = run_scenarios(
            "1",
            "--csms",
            stub.ws_url,
            "--time-scale",
            "20",
            "--fleet",
            str(fleet),
        )
        assert good.returncode == 0, good.stdout + good.stderr
        wrong = fleet.read_text().replace(secret, "guessed")
        (tmp_path / "wrong.toml").write_text(wrong)
        bad = run_scenarios(
            "1",
            "--csms",
            stub.ws_url,
            "--time-scale",
            "20",
            "--fleet",
            str(tmp_path / "wrong.toml"),
        )
    finally:
        stub.stop()
    assert bad.returncode == 1
    assert "401" in bad.stdout
    for output in (good.stdout, good.stderr, bad.stdout, bad.stderr, stub.log()):
        assert secret not in output and "guessed" not in output
