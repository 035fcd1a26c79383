"""The capacity search as a Locust master with a worker: the master judges the worker's
chargers from the merged reports, for both capacities. Its own file (it takes ~2.5 min) so
that the suite's two workers share the capacity searches.

Bounded: 60 chargers at most on 127.0.0.1; the run stops by itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import REDIS_URL, free_port, start_stub_process
from tests.test_capacity_search import QUICK, answer_of, gauge, run_search
from tests.test_locust import Background


@pytest.mark.timeout(300)
def test_a_master_and_a_worker_find_both_capacities(tmp_path: Path) -> None:
    # 40 connections and 20 BootNotifications a second: a higher boot ceiling than the
    # capped stub's, judged from the merged reports of a worker (every 3 s)
    stub = start_stub_process(tmp_path, "--max-connections", "40", "--max-boot-rate", "20")
    master_port = free_port()
    # concurrency: 40 held, 50 failed, and that is one step apart (the bisection has its
    # own tests); the rate bisects to 5 %
    search = ["--capacity-start", "40", "--capacity-step", "+10", "--capacity-max", "60"]
    search += ["--capacity-resolution", "10", "--spawn-rate", "20"]
    # rate steps of 35 fresh chargers (under the ceiling) from 5/s: 5, 10, 20 ...
    search += ["--connect-rate-start", "5", "--connect-rate-step-chargers", "35"]
    worker = Background(
        tmp_path / "worker.log",
        *("--worker", "--master-port", str(master_port), "--redis-url", REDIS_URL),
        *("--host", stub.ws_url, *QUICK),
    )
    try:
        code, output, scraped = run_search(
            tmp_path,
            stub,
            *("--master", "--expect-workers", "1", "--master-bind-port", str(master_port)),
            *("--redis-url", REDIS_URL, *search),
            mode="both",
            timeout=270,
        )
        assert worker.wait(30) == 0, worker.output()[-3000:]
    finally:
        worker.stop()
        stub.stop()
    assert code == 0, output[-4000:]
    assert answer_of(output) == 40, output[-4000:]
    assert gauge(scraped, "ocpp_loadgen_capacity_max_chargers") == 40
    # the master judged the worker's chargers: 50 asked for, the CSMS took 40
    assert re.search(r"capacity step 50 chargers: FAILED: .*only 40 of 50 chargers booted", output)
    rate = gauge(scraped, "ocpp_loadgen_capacity_max_connect_rate")
    # the stub's 20 boots/s within 5 %: the worker starts each rate step's users 0.15-0.5 s
    # after the master began the step, and the pace is judged from when they started
    assert rate is not None and 19 <= rate <= 21, output[-4000:]
    assert "concurrency steps ramp" not in output  # --spawn-rate 20 was pinned
