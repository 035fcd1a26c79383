"""Both capacities end to end: the real ``locust`` command with ``--capacity-search both``
against a csms_stub that takes 30 connections and boots 10 chargers a second. The connect
rate must be within 5 % of the stub's, the concurrency answer exact, and both must reach
the console, ``/metrics`` and the reports. Its own file so that the suite's two workers
share the capacity searches (the helpers: test_capacity_search.py).

Bounded: 40 chargers at most on 127.0.0.1, short holds; the run stops by itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import StubProcess
from tests.test_capacity_search import QUICK, answer_of, gauge, reports_in, run_search

pytestmark = pytest.mark.seconds(60)  # conftest.py: the start order


def test_both_capacities_against_a_connection_and_a_boot_rate_ceiling(
    tmp_path: Path, capped_stub: StubProcess
) -> None:
    # no --spawn-rate: the connect rate is searched first (fresh chargers, 25 a step, under
    # the 30 connections), then the concurrency steps ramp at half of it. The rates double
    # from 6/s (6, 12) and bisect (9, 10.5, 9.75, 10.125): no step is offered exactly the
    # stub's 10/s, whose verdict a loaded machine could tip either way
    unpinned = [arg for arg in QUICK if arg not in ("--spawn-rate", "50")]
    code, output, scraped = run_search(
        tmp_path,
        capped_stub,
        *("--capacity-start", "20", "--capacity-step", "+10", "--capacity-max", "60"),
        *("--capacity-resolution", "10"),
        *("--connect-rate-start", "6", "--connect-rate-step-chargers", "25"),
        mode="both",
        quick=unpinned,
        timeout=170,
    )
    assert code == 0, output[-4000:]
    assert answer_of(output) == 30, output[-4000:]
    match = re.search(r"^capacity: connect rate ([0-9.]+) chargers/s \(refined", output, re.M)
    assert match, output[-4000:]
    rate = float(match.group(1))
    assert 9.5 <= rate <= 10.5, output[-4000:]  # the stub's 10 boots/s, within 5 %
    exact = gauge(scraped, "ocpp_loadgen_capacity_max_connect_rate")
    assert exact == pytest.approx(rate, 0.01)
    # from the exact rate (the console's 10.3 may be 10.3125, whose half reads 5.16)
    assert f"concurrency steps ramp at {exact / 2:.3g}/s" in output
    report, html = reports_in(tmp_path / "reports")
    assert f"{rate:.3g}" in html
    capacity = report["capacity"]
    assert capacity["max_chargers"] == 30
    assert capacity["max_connect_rate"] == pytest.approx(rate, 0.01)
    assert capacity["connect_rate_stopped_because"].startswith("refined by bisection")
    rates = [s["rate"] for s in capacity["connect_rate_steps"]]
    assert rates[:3] == [6.0, 12.0, 9.0]  # doubled while it kept pace, then bisected
    steps = capacity["connect_rate_steps"]
    assert all(s["ok"] == (r <= exact) for r, s in zip(rates, steps, strict=True)), steps
    assert "Traceback" not in output
