"""The report of a real plain run: the ``locust`` command against a csms_stub that refuses
connections past 10 and blocks half the idTokens; the JSON and HTML report explain it (the
run over time, the first problems, problems by kind), and the page renders in Chromium."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadgen import idtokens
from tests.browser import CHROMIUM, Browser
from tests.conftest import start_stub_process
from tests.test_locust import FAST, run_locust
from tests.test_report_browser import check_page

pytestmark = pytest.mark.seconds(30)  # conftest.py: the start order

USERS, CEILING, FLEET = 14, 10, 16


def test_a_plain_runs_report_has_the_run_over_time_and_its_first_problems(
    tmp_path: Path,
) -> None:
    blocked = [token.value for token in idtokens.generate(FLEET)][::2]
    stub = start_stub_process(
        tmp_path,
        *("--max-connections", str(CEILING)),
        *(arg for token in blocked for arg in ("--blocked-token", token)),
    )
    try:
        code, output = run_locust(
            tmp_path / "locust.log",
            *("--host", stub.ws_url, "--users", str(USERS), "--spawn-rate", str(USERS)),
            # 20 s: on a busy machine a single process's --run-time ended early (5-7 s of 12)
            *("--run-time", "20s", "--fleet-size", str(FLEET), "--only-summary", *FAST),
            *("--ocpp-validate", "--report-dir", str(tmp_path / "reports")),
            *("--retry-backoff-wait-minimum", "0.5", "--retry-backoff-random-range", "1"),
            timeout=90,
        )
    finally:
        stub.stop()
    assert "Traceback" not in output, output[-3000:]
    assert code == 1, output[-3000:]  # Locust's: requests failed (refused connects, Blocked)
    (json_path,) = (tmp_path / "reports").glob("*.json")
    report = json.loads(json_path.read_text())
    assert report["capacity"] is None
    # every connection the stub let in spoke the one version offered (connections_total)
    spoken = report["run"]["versions_spoken"]
    assert list(spoken) == ["2.0.1"] and spoken["2.0.1"] >= CEILING, spoken

    # the run over time: windows of about 5 s with chargers, booted and latency per action
    timeline = report["timeline"]
    assert len(timeline) >= 2, timeline
    assert max(w["connected"] for w in timeline) == CEILING
    assert max(w["booted"] for w in timeline) == CEILING
    assert {w["chargers"] for w in timeline} == {USERS}
    boots = [w["actions"].get("BootNotification") for w in timeline]
    boots = [b for b in boots if b is not None]
    assert boots and all(b["p95_ms"] is not None for b in boots)
    assert sum(w["connect_failures"] for w in timeline) > 0
    assert sum(w["rejections"] for w in timeline) > 0

    # what went wrong first, and every problem by kind
    first = report["problems"]["first"]
    kinds = [(p["category"], p["label"]) for p in first]
    assert kinds[0] == ("connect_failures", "http_503"), first
    assert ("rejections", "Authorize Blocked") in kinds, first
    assert first[0]["t_s"] <= timeline[0]["t_s"] + 0.01  # refused from the first window on
    counts = report["problems"]["counts"]
    assert counts["connect_failures"]["http_503"] == sum(w["connect_failures"] for w in timeline)
    assert counts["rejections"]["Authorize Blocked"] > 0
    assert counts["schema_violations"] == {}  # --ocpp-validate: the stub's replies are valid
    assert report["settings"]["ocpp_validate"] is True
    assert "capacity_step" in report["settings_not_applied"]
    assert "fleet_size" not in report["settings_not_applied"]

    html_path = json_path.with_suffix(".html")
    html = html_path.read_text()
    for shown in ('id="first-problems"', "connect failed: http_503", 'id="over-time"'):
        assert shown in html
    if CHROMIUM is not None:
        with Browser(tmp_path) as browser:
            _, charts = check_page(browser, html_path)
            assert len(charts) >= 4  # chargers, failures, and one per action
            assert all(chart["lines"] > 0 for chart in charts), charts
