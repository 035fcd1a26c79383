"""The ``locust`` command in OCPP 2.1 against csms_stub, every frame validated both ways."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import StubProcess
from tests.test_locust import FAST, get, run_locust, stub, transactions

__all__ = ["stub"]  # the fixture


def test_a_2_1_run_validates_every_frame_and_the_csms_picks_from_the_offer(
    tmp_path: Path, stub: StubProcess
) -> None:
    reports = tmp_path / "reports"
    code, output = run_locust(
        tmp_path / "locust.log",
        *("--host", stub.ws_url, *FAST, "--fleet-size", "4", "-u", "4", "-r", "4"),
        *("--ocpp-version", "2.1,2.0.1", "--ocpp-validate", "--run-time", "8s"),
        *("--report-dir", str(reports)),
        timeout=60,
    )
    assert code == 0, output[-4000:]  # any failed request (an invalid frame too) fails it
    chargers = get(stub.api_url, "/chargers")
    assert len(chargers) == 4
    assert {charger["ocpp_version"] for charger in chargers} == {"2.1"}  # the first offered
    assert [t for t in transactions(stub) if t["ocpp_version"] != "2.1"] == []
    assert transactions(stub)
    # 2.1 stations report connector status as NotifyEvent (AvailabilityState), which the
    # stub reads as each connector's status
    for charger in chargers:
        statuses = {
            c["status"]
            for c in get(stub.api_url, f"/chargers/{charger['charger_id']}")["connectors"]
        }
        assert statuses and statuses <= {"Available", "Occupied"}, charger
    (report,) = reports.glob("*.json")
    run = json.loads(report.read_text())["run"]
    assert run["ocpp_version"] == "2.1,2.0.1"
    assert list(run["versions_spoken"]) == ["2.1"] and run["versions_spoken"]["2.1"] >= 4, run
