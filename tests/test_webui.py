"""Our tabs in Locust's web UI: the rows they show (pure), and the real thing: a Locust with
its web UI on 127.0.0.1 running a small capacity search against a real csms_stub process,
its tabs opened in headless Chromium (tests/browser.py) while the search goes on."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadgen import live
from tests.browser import CHROMIUM, Browser, Tab
from tests.conftest import StubProcess, free_port, start_stub_process
from tests.test_locust import LOCUST, ROOT

SITES = {"north": 3, "south": 2}


def site_chargers(**states: dict[str, int]) -> dict[str, Any]:
    return {
        "ocpp_loadgen_site_chargers": {
            (site, "0", "0", state): float(n)
            for site, counts in states.items()
            for state, n in counts.items()
        }
    }


def test_the_fleet_tab_counts_connected_booted_and_charging_per_site() -> None:
    merged = site_chargers(
        north={"offline": 1, "booting": 1, "available": 0, "charging": 1},
        south={"unavailable": 1, "failed": 1},
        west={"charging": 1},  # a site the fleet file does not name still shows
    )
    rows = live.fleet_rows(live.fleet_by_site(merged, SITES))
    assert rows == [
        {"site": "north", "chargers": 3, "stations": 3, "connected": 2, "booted": 1, "charging": 1},
        {"site": "south", "chargers": 2, "stations": 2, "connected": 1, "booted": 1, "charging": 0},
        {"site": "west", "chargers": 0, "stations": 1, "connected": 1, "booted": 1, "charging": 1},
        {
            "site": "all sites",
            "chargers": 5,
            "stations": 6,
            "connected": 4,
            "booted": 3,
            "charging": 2,
        },
    ]
    # before any station runs: every site of the fleet, all zero
    assert [row["stations"] for row in live.fleet_rows(live.fleet_by_site({}, SITES))] == [
        0,
        0,
        0,
    ]


def capacity(**overrides: Any) -> dict[str, Any]:
    status = {
        "phase": "hold",
        "target": 150,
        "done": False,
        "searches_chargers": True,
        "searches_connect_rate": True,
        "max_chargers": 100,
        "stopped_because": "unfinished (next target 150)",
        "max_connect_rate": 40.0,
        "connect_rate_stopped_because": "refined by bisection: 40/s kept pace, 80/s did not",
        "rate_steps": [
            {"phase": "rate-ramp", "rate": 40.0, "chargers": 400, "booted": 400, "ok": True,
             "reasons": []},
            {"phase": "rate-ramp", "rate": 80.0, "chargers": 800, "booted": 700, "ok": False,
             "reasons": ["did not keep pace"]},
        ],
        "steps": [
            {"phase": "ramp", "chargers": 100, "connected": 100, "booted": 100, "ok": True,
             "reasons": [], "admission": None},
        ],
    }  # fmt: skip
    return {**status, **overrides}


def test_the_capacity_tab_shows_both_answers_so_far_every_step_and_what_it_does_now() -> None:
    rows = live.capacity_rows(capacity())
    assert [(row["item"], row["offered"], row["verdict"]) for row in rows] == [
        ("answer: max connect rate", "40/s", "so far"),
        ("answer: max chargers", "100 chargers", "so far"),
        ("rate step 1 (rate-ramp)", "40/s, 400 chargers", "kept pace"),
        ("rate step 2 (rate-ramp)", "80/s, 800 chargers", "FAILED"),
        ("step 1 (ramp)", "100 chargers", "held"),
        ("now", "holding 150 chargers", "in progress"),
    ]
    assert rows[3]["why"] == "did not keep pace"
    over = live.capacity_rows(capacity(done=True, phase="linger", max_chargers=None))
    assert over[1]["offered"] == "-" and over[1]["verdict"] == "final"
    assert over[-1]["item"] == "step 1 (ramp)"  # nothing in progress once it is over
    only_chargers = live.capacity_rows(capacity(searches_connect_rate=False, rate_steps=[]))
    assert only_chargers[0]["item"] == "answer: max chargers"
    (plain,) = live.capacity_rows(None)
    assert plain["item"] == "no capacity search in this run"


# -- Locust's web UI in a real browser ------------------------------------------------------


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubProcess]:
    process = start_stub_process(tmp_path)
    yield process
    process.stop()


def text_when(tab: Tab, ready: Any, timeout: float = 30.0) -> str:
    """The page's visible text once ``ready(text)`` (it polls Locust every few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        text = tab.evaluate("document.body.innerText") or ""
        if ready(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.5)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")
def test_the_tabs_show_the_search_and_the_fleet_live_in_a_headless_browser(
    tmp_path: Path, stub: StubProcess
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/load"  # behind a proxy's prefix, as our pages must work
    log_path = tmp_path / "locust.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                *(LOCUST, "-f", "locustfile.py", "--autostart"),  # the UI stays after the run
                *("--web-host", "127.0.0.1", "--web-port", str(port), "--web-base-path", "/load"),
                *("--host", stub.ws_url),
                *("--time-scale", "60", "--prometheus-port", "0", "--run-time", "90s"),
                *("--capacity-search", "chargers", "--capacity-start", "4"),
                *("--capacity-step", "+4", "--capacity-max", "12", "--capacity-hold", "2"),
                *("--capacity-linger", "0", "--spawn-rate", "20", "--fleet-size", "20"),
                # a busy test machine is no finding: the generator guards off (0)
                *("--capacity-max-lag-ms", "0", "--capacity-max-cpu", "0"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            try:
                status = get_json(base + live.STATUS_PATH)
            except OSError:
                status = None
            if status and status["capacity"]["steps"]:
                break
            assert process.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.5)
        assert status and status["capacity"]["steps"], log_path.read_text()[-3000:]
        assert status["capacity"]["steps"][0] | {"reasons": []} == {
            "phase": "ramp",
            "chargers": 4,
            "connected": 4,
            "booted": 4,
            "ok": True,
            "reasons": [],
            "admission": None,
        }
        assert sum(site["booted"] for site in status["fleet"]) >= 4

        with Browser(tmp_path) as chromium:
            tab = chromium.open(f"{base}/?tab={live.CAPACITY_TAB}")
            text = text_when(tab, lambda text: "step 1 (ramp)" in text)
            assert tab.errors() == []
            for label in ("OCPP CAPACITY", "OCPP FLEET"):  # the tabs (labels in capitals)
                assert label in text.upper(), text
            for row in ("Step / answer", "answer: max chargers", "step 1 (ramp)\t4 chargers\t4\t4"):
                assert row in text, text
            assert "held" in text

            tab = chromium.open(f"{base}/?tab={live.FLEET_TAB}")
            text = text_when(tab, lambda text: "all sites" in text)
            assert tab.errors() == []
            sites = [site["site"] for site in status["fleet"]]
            assert len(sites) == 5  # a generated fleet's five sites
            for word in ("Connected", "Booted", "Charging", "all sites", *sites):
                assert word in text, text
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    assert "Traceback" not in log_path.read_text()
