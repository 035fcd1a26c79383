"""The final summary counts what the stations did until they stopped: Locust's table, the
JSON report and the ledger agree with what the CSMS (a real csms_stub process) answered.

The stub counts every CALL it answered (``csms_stub_messages_total``, outcome ``result``).
Before the wind-down (loadgen/locust/stopping.py) a run's table missed the heartbeats its
stations sent while they stopped, and the CALLs Locust's kill cut short; a master's missed
whatever its workers did after their last report. Now they must be equal; the only slack
allowed is the CALLs the log says were still on the wire when the wind-down's wait ran out.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from loadgen import coordination
from tests.conftest import REDIS_URL, StubProcess, free_port, start_stub_process
from tests.test_locust import FAST, Background, reconciliation, run_id_of, run_locust, wait_for

pytestmark = pytest.mark.seconds(45)  # conftest.py: the start order

ACTIONS = ("BootNotification", "StatusNotification", "Heartbeat", "Authorize", "TransactionEvent")
_ROW = re.compile(r"^OCPP\s+(\w+)\s+(\d+)\s+\d+\(", re.MULTILINE)
_ON_THE_WIRE = re.compile(r"(\d+) still had a CALL on the wire")


@pytest.fixture
def stub(tmp_path: Path):
    process = start_stub_process(tmp_path)
    yield process
    process.stop()


def answered_by_the_stub(stub: StubProcess) -> Counter[str]:
    with urllib.request.urlopen(f"{stub.api_url}/metrics", timeout=10) as response:
        text = response.read().decode()
    answered: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "csms_stub_messages_total" and sample.labels["outcome"] == "result":
                answered[sample.labels["action"]] += int(sample.value)
    return answered


def final_table(output: str) -> Counter[str]:
    """The OCPP rows of the table Locust prints as it shuts down (the last one)."""
    final = output[output.rindex("Shutting down (exit code") :]
    return Counter({name: int(count) for name, count in _ROW.findall(final)})


def report_counts(report_dir: Path) -> Counter[str]:
    (path,) = report_dir.glob("ocpp-report-*.json")
    totals = json.loads(path.read_text())["totals"]["actions"]
    return Counter({name: int(stats["count"]) for name, stats in totals.items()})


@pytest.mark.parametrize(
    ("processes", "sigterm"),
    [(0, False), (2, False), (0, True)],
    ids=["one process", "--processes 2", "stopped by SIGTERM"],
)
def test_the_table_and_the_report_count_every_call_the_csms_answered(
    tmp_path: Path, stub: StubProcess, processes: int, sigterm: bool
) -> None:
    distributed: list[str] = []
    if processes:
        port = str(free_port())
        distributed = [
            *("--processes", str(processes), "--master-bind-host", "127.0.0.1"),
            *("--master-bind-port", port, "--master-port", port, "--redis-url", REDIS_URL),
        ]
    users = 30  # light: a worker busy for 3 s goes "missing" at Locust's master
    args = [
        *("--host", stub.ws_url, "--users", str(users), "--spawn-rate", "30"),
        *("--fleet-size", "100", "--ocpp-profile", "mixed", *FAST),
        *("--csms-api", stub.api_url, "--report-dir", str(tmp_path / "reports")),
        *distributed,
    ]
    if sigterm:  # Locust fires quitting (reconciliation) before it would stop the users
        run = Background(tmp_path / "locust.log", *args)
        try:
            wait_for(lambda: "All users spawned" in run.output(), 60, "the users spawned")
            wait_for(
                lambda: (
                    answered_by_the_stub(stub)["Heartbeat"] > users
                    and answered_by_the_stub(stub)["TransactionEvent"] > 0
                ),
                30,
                "heartbeats and sessions",
            )
            run.process.terminate()
            code, output = run.wait(120), run.output()
        finally:
            run.stop()
    else:
        code, output = run_locust(tmp_path / "locust.log", *args, "--run-time", "12s", timeout=120)
    try:
        assert code == 0, output[-3000:]
        answered = answered_by_the_stub(stub)
        table, report = final_table(output), report_counts(tmp_path / "reports")
        slack = sum(int(n) for n in _ON_THE_WIRE.findall(output))
        assert answered["Heartbeat"] > users, output[-3000:]  # they heartbeated while they ran
        assert answered["TransactionEvent"] > 0
        for action in ACTIONS:
            assert table[action] <= answered[action] <= table[action] + slack, (
                action,
                table,
                answered,
            )
            assert report[action] == table[action], (action, report, table)
        assert reconciliation(output) > 0  # the ledger agrees with the CSMS's transactions
        if sigterm:
            assert "Locust is quitting while the run goes on: stopping it first" in output
        if processes:
            assert f"{processes} workers stopped their stations and sent their final" in output
    finally:
        if processes:
            coordination.delete_run(redis.Redis.from_url(REDIS_URL), run_id_of(output))
