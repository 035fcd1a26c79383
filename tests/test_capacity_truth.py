"""Capacity truth end to end, cheaply: the real ``locust`` command against a real csms_stub
whose behaviour the test controls, for what the longer searches of
test_capacity_search*.py do not show.

Bounded: at most 40 chargers on 127.0.0.1, holds of 3 s; each run stops by itself.
"""

from __future__ import annotations

import json
import re
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from websockets.sync.client import connect

from loadgen import coordination
from tests.conftest import REDIS_URL, StubProcess, free_port, start_stub_process
from tests.test_locust import Background, raw_redis, run_id_of, wait_for

__all__ = ["raw_redis"]  # a fixture of test_locust's, used here
pytestmark = pytest.mark.seconds(62)  # conftest.py: the start order

#: idle chargers heartbeating every 2 s, holds of 3 s, the OCPP back-off's defaults (5 s plus
#: up to 30 s, doubling): a charger refused once stays away longer than a step's stall
ONE_STEP = ["--ocpp-profile", "idle", "--heartbeat-interval", "2", "--fleet-size", "20"]
ONE_STEP += ["--capacity-search", "chargers", "--capacity-hold", "3", "--capacity-linger", "0"]
ONE_STEP += ["--capacity-start", "10", "--capacity-max", "10", "--spawn-rate", "50"]
ONE_STEP += ["--capacity-max-lag-ms", "1000", "--prometheus-port", "0"]


def refused_at_ceiling(stub: StubProcess) -> int:
    """Connections csms_stub refused at its --max-connections so far."""
    with urllib.request.urlopen(f"{stub.api_url}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(
        r'^csms_stub_connections_total\{outcome="max_connections"\} (\S+)$', text, re.M
    )
    return int(float(match.group(1))) if match else 0


def test_a_csms_that_refuses_for_a_moment_within_a_step_is_no_ceiling(tmp_path: Path) -> None:
    """Every slot of the stub is taken when the step starts: its 10 chargers are refused,
    and again when the search tells them to retry once they are all started. The slots come
    free a moment later; the chargers' own back-off would bring them back only after 10 s
    or more, past the 5 s after which a settle calls admission stalled. The search keeps
    telling the missing ones to retry while none get in, so the step holds: 10 chargers,
    not "even the start failed"."""
    stub = start_stub_process(tmp_path, "--max-connections", "10")
    holders = ExitStack()
    run = None
    try:
        for n in range(10):
            url = f"{stub.ws_url}/HOLDER{n:02d}"
            holders.enter_context(connect(url, subprotocols=["ocpp2.0.1"], open_timeout=5))
        run = Background(tmp_path / "locust.log", "--host", stub.ws_url, *ONE_STEP)
        # refused when they started, and again at the search's first retry
        wait_for(lambda: refused_at_ceiling(stub) >= 20, 60, "20 refused connects")
        holders.close()
        code = run.wait(60)
        output = run.output()
    finally:
        holders.close()
        if run is not None:
            run.stop()
        stub.stop()
    assert code == 0, output[-4000:]
    answer = re.search(r"^capacity: 10 chargers \(reached --capacity-max", output, re.M)
    assert answer is not None, output[-4000:]
    assert "Traceback" not in output


@pytest.mark.timeout(150)
def test_a_master_ramping_ten_times_faster_than_the_csms_boots_finds_its_ceiling(
    tmp_path: Path, raw_redis: redis.Redis
) -> None:
    """A master and its worker, --spawn-rate 100 pinned, against a CSMS that holds 30
    chargers and boots 10 a second. The 30 arrive at once and wait up to 3 s for their
    boot: the ramp breaks the boot SLO (1 s), which the step says in words with the rate
    the CSMS admitted, and the step still holds, judged once all are booted. 40 fail on
    the ceiling: the answer is 30, as at a ramp below the boot rate."""
    stub = start_stub_process(tmp_path, "--max-connections", "30", "--max-boot-rate", "10")
    port = str(free_port())
    args = ["--processes", "1", "--master-bind-host", "127.0.0.1", "--redis-url", REDIS_URL]
    args += ["--master-bind-port", port, "--master-port", port, "--host", stub.ws_url]
    args += [*ONE_STEP, "--capacity-max", "40", "--capacity-start", "30", "--spawn-rate", "100"]
    args += ["--capacity-step", "+10", "--capacity-resolution", "10", "--fleet-size", "40"]
    args += ["--slo-boot-p95-ms", "1000", "--report-dir", str(tmp_path / "reports")]
    run = Background(tmp_path / "locust.log", *args)
    try:
        code = run.wait(140)
        output = run.output()
    finally:
        run.stop()
        stub.stop()
    try:
        assert code == 0, output[-4000:]
        assert re.search(
            r"^capacity: 30 chargers \(refined by bisection: 30 held, 40 failed \(.*only 30 of 40 "
            r"chargers booted",
            output,
            re.M,
        ), output[-4000:]
        (report_path,) = (tmp_path / "reports").glob("*.json")
        first, second = json.loads(report_path.read_text())["steps"]
        assert (first["chargers"], first["ok"], first["booted"]) == (30, True, 30), first
        note = first["admission"]
        assert note is not None and "p95 BootNotification" in note, first
        admitted = float(re.match(r"admission limited: about ([0-9.]+) chargers/s", note)[1])
        assert 8 <= admitted <= 11, note  # the CSMS's 10 a second
        assert "BootNotification" not in " ".join(first["reasons"])  # not the hold's business
        assert (second["chargers"], second["ok"], second["booted"]) == (40, False, 30), second
        assert "Traceback" not in output
    finally:
        coordination.delete_run(raw_redis, run_id_of(output))
