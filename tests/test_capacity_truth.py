"""Capacity truth end to end, cheaply: the real ``locust`` command against a real csms_stub
whose behaviour the test controls, for what the longer searches of
test_capacity_search*.py do not show.

Bounded: ten chargers on 127.0.0.1, a hold of 3 s; each run stops by itself.
"""

from __future__ import annotations

import re
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from websockets.sync.client import connect

from tests.conftest import StubProcess, start_stub_process
from tests.test_locust import Background, wait_for

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
