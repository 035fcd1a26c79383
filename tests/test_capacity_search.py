"""The capacity search end to end: the real ``locust`` command with ``--capacity-search``
against a real csms_stub given a known ceiling (``--max-connections``, or replies that slow
down as chargers are added), in one process. The answer must be within one step of the
ceiling, and it must reach the console, ``/metrics`` and the reports.

This file has the connection ceiling, the runs that end without an answer, the options, and
the helpers of its siblings (each a file of its own, so that the suite's two workers share
the long searches): both capacities (test_capacity_search_rates.py), the latency ceiling
(test_capacity_search_latency.py), a master with a worker (test_capacity_search_master.py).

Bounded: a few dozen chargers on 127.0.0.1, short holds; each run stops by itself.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from loadgen.metrics.labels import known_actions
from tests.conftest import StubProcess, free_port
from tests.test_locust import ROOT, Background, locust, wait_for

pytestmark = pytest.mark.seconds(105)  # conftest.py: the start order

#: chargers heartbeat every 2 s (a hold of 3 s sees every one of them)
QUICK = ["--ocpp-profile", "idle", "--heartbeat-interval", "2", "--fleet-size", "80"]
QUICK += ["--spawn-rate", "50", "--capacity-hold", "3", "--reconnect-cap", "2"]
# The lag guard has a test of its own; on a shared CI machine a pause of the whole process
# (another job, a collection) must not end these searches as "limited by the load generator".
QUICK += ["--capacity-max-lag-ms", "1000"]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def gauge(text: str, name: str) -> float | None:
    match = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def answer_of(output: str) -> int:
    match = re.search(r"^capacity: (\d+) chargers \(", output, re.MULTILINE)
    assert match, f"no capacity line:\n{output[-4000:]}"
    return int(match.group(1))


def reports_in(directory: Path) -> tuple[dict, str]:
    json_files = sorted(directory.glob("ocpp-report-*.json"))
    html_files = sorted(directory.glob("ocpp-report-*.html"))
    assert len(json_files) == 1 and len(html_files) == 1, list(directory.iterdir())
    return json.loads(json_files[0].read_text()), html_files[0].read_text()


def run_search(
    tmp_path: Path,
    stub: StubProcess,
    *args: str,
    timeout: float = 150,
    mode: str = "chargers",
    quick: list[str] = QUICK,
) -> tuple:
    """Run a search; while it lingers, scrape its answer from /metrics."""
    port = free_port()
    process = Background(
        tmp_path / "locust.log",
        *("--host", stub.ws_url, "--capacity-search", mode, "--capacity-linger", "4"),
        *("--prometheus-port", str(port), "--report-dir", str(tmp_path / "reports")),
        *quick,
        *args,
    )
    try:
        scraped = wait_for(
            lambda: (
                (text := _try_scrape(port))
                and gauge(text, "ocpp_loadgen_capacity_max_chargers")
                and text
            ),
            timeout,
            "the capacity answer on /metrics",
            interval=0.5,
        )
        code = process.wait(30)
        return code, process.output(), scraped
    finally:
        process.stop()


def _try_scrape(port: int) -> str | None:
    try:
        return scrape(port)
    except OSError:
        return None


# --spawn-rate pins the ramp of the concurrency steps: half and ten times the stub's boot
# rate must give the same answer (20/s lies between; the benchmark capacity_truth.py runs
# all three, alone and as master + worker)
@pytest.mark.parametrize("spawn_rate", ["5", "100"])
def test_the_search_finds_a_connection_ceiling_within_one_step(
    tmp_path: Path, capped_stub: StubProcess, spawn_rate: str
) -> None:
    step = 10
    code, output, scraped = run_search(
        tmp_path,
        capped_stub,
        # two steps held below the ceiling, one above
        *("--capacity-start", "20", "--capacity-step", f"+{step}", "--capacity-max", "60"),
        *("--capacity-resolution", str(step)),  # bisection: test_capacity_search_latency.py
        *("--spawn-rate", spawn_rate),
    )
    assert code == 0, output[-4000:]
    answer = answer_of(output)
    assert answer == 30, output[-4000:]  # within one step, and here exactly
    assert gauge(scraped, "ocpp_loadgen_capacity_max_chargers") == answer
    assert gauge(scraped, "ocpp_loadgen_capacity_limited_by_generator") == 0
    rate = gauge(scraped, "ocpp_loadgen_capacity_max_connect_rate")
    assert rate is not None and math.isnan(rate)  # not searched: no answer
    assert "capacity: connect rate: no answer: not searched" in output
    run = re.search(r'run="([0-9a-f]{16})"', scraped)
    assert run, "the series carry no run label"
    # the step above the ceiling failed for the right reason
    assert re.search(r"capacity step 40 chargers: FAILED: .*only 30 of 40 chargers booted", output)

    report, html = reports_in(tmp_path / "reports")
    assert report["run"]["run_id"] == run.group(1)
    assert report["capacity"]["max_chargers"] == answer
    assert report["capacity"]["config"]["step"] == f"+{step}"
    assert report["capacity"]["max_connect_rate"] is None
    assert report["capacity"]["connect_rate_stopped_because"] == "not searched"
    assert all(s["booted"] == min(s["chargers"], 30) for s in report["steps"]), report["steps"]
    assert "Connect rate: no answer (not searched)" in html
    targets = [s["chargers"] for s in report["steps"]]
    assert targets == [20, 30, 40]
    assert all(s["ok"] == (s["chargers"] <= 30) for s in report["steps"]), report["steps"]
    held = [s for s in report["steps"] if s["ok"]]
    assert all(s["actions"]["Heartbeat"]["count"] >= s["chargers"] for s in held)
    assert report["timeline"], "no timeline windows"
    assert all(w["connected"] <= 30 for w in report["timeline"])
    totals = report["totals"]["actions"]["Heartbeat"]
    assert totals["count"] >= sum(s["actions"]["Heartbeat"]["count"] for s in held)
    assert totals["p95_ms"] < 100  # Locust's exact figures: a loopback heartbeat is quick
    assert str(answer) in html and "Heartbeat" in html and "<svg" in html
    assert "Traceback" not in output


def test_a_saturated_load_generator_gives_no_csms_figure(
    tmp_path: Path, capped_stub: StubProcess
) -> None:
    # a lag guard no process can meet: the first hold trips it
    port = free_port()
    process = Background(
        tmp_path / "locust.log",
        *QUICK,  # first: its lag guard is replaced by this test's (the last one wins)
        *("--host", capped_stub.ws_url, "--capacity-search", "chargers", "--capacity-linger", "0"),
        *("--capacity-start", "10", "--capacity-max-lag-ms", "0.000001"),
        *("--prometheus-port", str(port), "--report-dir", str(tmp_path / "reports")),
    )
    try:
        code = process.wait(60)
    finally:
        process.stop()
    output = process.output()
    assert code == 1, output[-4000:]
    line = re.search(r"^capacity: no answer: (.*)$", output, re.MULTILINE)
    assert line, output[-4000:]
    assert line.group(1).startswith("limited by the load generator (add workers) at 10 chargers")
    assert "schedule lag p99" in line.group(1)
    report, html = reports_in(tmp_path / "reports")
    assert report["capacity"]["max_chargers"] is None
    assert report["capacity"]["limited_by_generator"] is True
    assert report["steps"][0]["generator_saturated"] is True
    assert "add workers" in html


def test_a_run_time_shorter_than_the_search_says_so(
    tmp_path: Path, capped_stub: StubProcess
) -> None:
    process = Background(
        tmp_path / "locust.log",
        *("--host", capped_stub.ws_url, "--capacity-search", "chargers", "--capacity-start", "10"),
        *("--run-time", "8s", "--prometheus-port", "0", *QUICK),
    )
    try:
        code = process.wait(60)
    finally:
        process.stop()
    output = process.output()
    assert code == 1, output[-4000:]
    assert re.search(
        r"^capacity: no answer: the run ended before the search did \(10 chargers held so far\)$",
        output,
        re.MULTILINE,
    ), output[-4000:]


def test_bad_capacity_options_stop_locust_with_one_line(tmp_path: Path) -> None:
    cases = {
        ("--capacity-step", "x0.5"): "step factor must be more than 1",
        ("--capacity-step", "ten"): "write a factor like 'x1.5'",
        ("--slo-p95-ms", "1000,Heartbeet=500"): "did you mean Heartbeat?",
        ("--capacity-max", "500"): "more than the fleet's 80 chargers",
        ("--capacity-resolution", "lots"): "--capacity-resolution 'lots'",
        ("--capacity-start", "10", "--capacity-search", "rates"): "write both, chargers or",
        ("--capacity-start", "10", "--connect-rate-start", "0"): "--connect-rate-start must be",
    }
    assert "Heartbeat" in known_actions()
    for args, message in cases.items():
        process = Background(
            tmp_path / "bad.log", "--host", "ws://127.0.0.1:9", "--capacity-search", *QUICK, *args
        )
        try:
            code = process.wait(30)
        finally:
            process.stop()
        output = process.output()
        lines = [line for line in output.splitlines() if line.startswith("loadgen: ")]
        assert code == 2, output[-2000:]
        assert len(lines) == 1 and message in lines[0], (args, output[-2000:])


def test_options_also_come_from_locust_environment_variables() -> None:
    env = {**os.environ, "LOCUST_CAPACITY_SEARCH": "true", "LOCUST_CAPACITY_STEP": "ten"}
    done = subprocess.run(
        locust("--host", "ws://127.0.0.1:9", *QUICK),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "loadgen: capacity step 'ten': write a factor like 'x1.5'" in done.stderr
