"""The capacity search end to end against a CSMS whose replies slow down as chargers are
added: the bisection ends at the last step within the p95 SLO. Its own file so that the
suite's two workers share the capacity searches (the helpers: test_capacity_search.py).

Bounded: 28 chargers at most on 127.0.0.1, short holds; the run stops by itself.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import start_stub_process
from tests.test_capacity_search import answer_of, run_search

pytestmark = pytest.mark.seconds(37)  # conftest.py: the start order


def test_the_search_finds_a_latency_ceiling_within_one_step(tmp_path: Path) -> None:
    # replies slow down by 20 ms per charger above 20: with a p95 SLO of 150 ms the CSMS
    # holds 27 chargers (140 ms), not 28 (160 ms); steps of 4 from 24 meet it at 28, then
    # bisect to 1 (26, 27)
    stub = start_stub_process(tmp_path, "--slow-above", "20", "--slow-ms-per-charger", "20")
    try:
        code, output, _ = run_search(
            tmp_path,
            stub,
            *("--capacity-start", "24", "--capacity-step", "+4", "--capacity-max", "60"),
            *("--slo-p95-ms", "150", "--capacity-resolution", "1"),
        )
    finally:
        stub.stop()
    assert code == 0, output[-4000:]
    answer = answer_of(output)
    assert 24 < answer <= 27, output[-4000:]  # within one step
    assert answer >= 26, f"bisection to 1 should end at the ceiling, 27: {answer}"
    assert "p95 Heartbeat" in output  # the failing steps say which SLO broke
