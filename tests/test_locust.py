"""The Locust layer end to end: the real ``locust`` command (alone, as master and workers,
with ``--processes``) and Locust's Environment API, against a real csms_stub process, the
machine's Redis and test-owned Redis servers that a test stops and restarts.

Locust monkey-patches the standard library when it is imported, so nothing here imports it:
the Environment API runs in tests/locust_driver.py, a process of its own that this file
drives one command at a time. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from loadgen import coordination, idtokens
from loadgen.coordination import LedgerEntry
from loadgen.reconcile import StubApiRecords, compare
from tests.conftest import (
    REDIS_URL,
    RedisServer,
    StubProcess,
    free_port,
    start_stub_process,
)
from tests.conftest import sample as metric_sample

ROOT = Path(__file__).resolve().parent.parent
LOCUST = str(Path(sys.executable).with_name("locust"))
#: one simulated minute per second: sessions every ~1 s, lasting ~5 s; heartbeats every 0.5 s
FAST = ["--time-scale", "60", "--session-interarrival", "60", "--session-stay", "300"]
FAST += ["--prometheus-port", "0"]  # the metrics test below picks its own port

pytestmark = pytest.mark.seconds(190)  # conftest.py: the start order


# -- helpers ---------------------------------------------------------------------------------


def locust(*args: str) -> list[str]:
    return [LOCUST, "-f", "locustfile.py", "--headless", *args]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class Background:
    """A ``locust`` command in the background, in a process group of its own (``--processes``
    forks workers); stdout and stderr go to a file."""

    def __init__(self, log_path: Path, *args: str) -> None:
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                locust(*args),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        self.pid = self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"locust still running after {timeout} s:\n{self.tail()}"
            ) from None

    def tail(self, chars: int = 4000) -> str:
        return self.output()[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if group_alive(self.pid):  # workers it forked and left behind
            os.killpg(self.pid, signal.SIGKILL)


def run_locust(log_path: Path, *args: str, timeout: float = 60) -> tuple[int, str]:
    process = Background(log_path, *args)
    try:
        return process.wait(timeout), process.output()
    finally:
        process.stop()


def get(base_url: str, path: str) -> Any:
    with urllib.request.urlopen(base_url + path, timeout=10) as response:
        return json.load(response)


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(interval)


def connected(stub: StubProcess) -> int:
    return int(get(stub.api_url, "/stats")["chargers_connected"])


def transactions(stub: StubProcess, state: str | None = None) -> list[dict[str, Any]]:
    query = f"&state={state}" if state else ""
    return get(stub.api_url, f"/transactions?limit=100000{query}")


def run_id_of(output: str) -> str:
    match = re.search(r"OCPP run ([0-9a-f]{16}) ", output)
    assert match, f"no 'OCPP run <id>' line:\n{output[-3000:]}"
    return match.group(1)


def reconciliation(output: str) -> int:
    """The number of matched transactions of the "== reconciliation" block; asserts OK."""
    assert "== reconciliation: the run's ledger against the CSMS ==" in output, output[-3000:]
    assert "result: OK" in output, output[-3000:]
    assert "result: LOSS" not in output
    match = re.search(r"^matched: (\d+)$", output, re.MULTILINE)
    assert match, output[-3000:]
    return int(match.group(1))


def assert_one_boot_per_user(stub: StubProcess, users: int) -> list[str]:
    """The stub saw exactly ``users`` charger ids, each booted once: no id was shared or
    handed from one user to another."""
    chargers = get(stub.api_url, "/chargers")
    ids = [charger["charger_id"] for charger in chargers]
    assert len(ids) == users, f"{len(ids)} charger ids at the stub for {users} users"
    assert len(set(ids)) == users
    assert [c["charger_id"] for c in chargers if c["boot_count"] != 1] == []
    return ids


@pytest.fixture
def stub(tmp_path: Path) -> Iterator[StubProcess]:
    process = start_stub_process(tmp_path)
    yield process
    process.stop()


@pytest.fixture
def raw_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


class Driver:
    """tests/locust_driver.py in its own process: Locust's Environment API, one command at
    a time over stdin; its log (Locust's and ours) goes to a file."""

    def __init__(self, directory: Path, *args: str) -> None:
        self.log_path = directory / "driver.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.locust_driver", *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
                text=True,
            )
        self._replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.run_id: str = self._reply(30)["run_id"]

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith("@@ "):
                self._replies.put(line[3:])
        self._replies.put(None)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def _reply(self, timeout: float) -> dict[str, Any]:
        try:
            line = self._replies.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no answer from the driver in {timeout} s:\n{self.log()}"
            ) from None
        if line is None:
            raise AssertionError(f"the driver ended:\n{self.log()}")
        return json.loads(line)

    def ask(self, cmd: str, timeout: float = 30, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.process.stdin.flush()
        return self._reply(timeout)

    def quit(self) -> dict[str, Any]:
        result = self.ask("quit", timeout=60)
        assert self.process.wait(15) == 0, self.log()
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def requests(stats: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in stats["requests"] if row["type"] == kind}


def errors(stats: dict[str, Any], kind: str, name: str) -> int:
    return sum(e["count"] for e in stats["errors"] if e["type"] == kind and e["name"] == name)


# -- 1. options are checked before anything runs ---------------------------------------------


BAD_OPTIONS = {
    "http host": (["--host", "http://x"], "--host"),
    "time scale 0": (["--time-scale", "0"], "--time-scale"),
    "unknown profile": (["--ocpp-profile", "nope"], "'nope'"),
    "missing fleet": (["--fleet", "no-such-fleet.toml"], "no-such-fleet.toml"),
    "negative reconnect tries": (["--reconnect-tries", "-1"], "--reconnect-tries"),
    "nan back-off": (["--retry-backoff-random-range", "nan"], "--retry-backoff-random-range"),
    "blackout without length": (["--blackout-at", "5"], "--blackout-for"),
    "lease ttl 0": (["--lease-ttl", "0"], "--lease-ttl"),
    "negative reboot delay": (["--reboot-delay", "-1"], "--reboot-delay"),
    "unknown connector status message": (
        ["--connector-status", "StatusEvent"],
        "--connector-status must be StatusNotification or NotifyEvent, not 'StatusEvent'",
    ),
    "processes without redis": (["--processes", "2"], "--redis-url"),
    "master without redis": (["--master"], "--redis-url"),
}


@pytest.mark.parametrize("args,named", BAD_OPTIONS.values(), ids=BAD_OPTIONS.keys())
def test_a_bad_option_stops_locust_at_start_with_one_line(
    tmp_path: Path, args: list[str], named: str
) -> None:
    host = [] if "--host" in args else ["--host", "ws://127.0.0.1:9"]
    port = str(free_port())
    # Were the options accepted, this would run for a minute: the timeout would fail it.
    command = [*host, *args, "--users", "1", "--run-time", "60s", "--fleet-size", "10"]
    if "--master" in args or "--processes" in args:
        command += ["--master-bind-host", "127.0.0.1", "--master-bind-port", port]
        command += ["--master-port", port]  # --processes: where its workers connect
    process = Background(tmp_path / "locust.log", *command)
    try:
        code = process.wait(30)
        output = process.output()
        assert code != 0, output
        # Nothing left behind: --processes workers stop too, they do not wait for a master.
        wait_for(lambda: not group_alive(process.pid), 10, "every locust process ended")
    finally:
        process.stop()
    ours = [line for line in output.splitlines() if line.startswith("loadgen:")]
    assert ours, output
    # One line (with --processes each process says it, the same line).
    assert len(set(ours)) == 1, ours
    assert named in ours[0], ours
    assert "Traceback" not in output


def _open_files(soft: int, hard: int) -> Callable[[], None]:
    """A preexec_fn: the child's open-file limit (the machine's hard limit is 20,000)."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("processes", [0, 2], ids=["one process", "--processes 2"])
def test_more_users_than_open_files_is_refused_at_start_with_one_line(
    tmp_path: Path, processes: int
) -> None:
    port = str(free_port())
    command = ["--host", "ws://127.0.0.1:9", "--users", "400", "--run-time", "60s"]
    command += ["--fleet-size", "400", "--prometheus-port", "0"]
    if processes:
        command += ["--processes", str(processes), "--redis-url", REDIS_URL]
        command += ["--master-bind-host", "127.0.0.1", "--master-bind-port", port]
        command += ["--master-port", port]
    log_path = tmp_path / "locust.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            locust(*command),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
            preexec_fn=_open_files(300, 300),
        )
    try:
        code = process.wait(30)
        wait_for(lambda: not group_alive(process.pid), 10, "every locust process ended")
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
    output = log_path.read_text()
    assert code == 2, output[-3000:]
    ours = {line for line in output.splitlines() if line.startswith("loadgen:")}
    share = "400 chargers" if not processes else "400 chargers over 2 processes (200 each)"
    assert ours == {
        f"loadgen: {share} need about {520 if not processes else 310} open files per process "
        "but " + ("this process" if not processes else "each") + " may open 300 (ulimit -n): "
        "190 fit in one; spread them over 3 or more processes (--processes, --worker), or "
        "raise the hard limit (ulimit -Hn, LimitNOFILE=, nofile in limits.conf)"
    }, output[-3000:]
    assert "Traceback" not in output and "EMFILE" not in output


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(
    tmp_path: Path, stub: StubProcess
) -> None:
    """400 chargers need 520 files: more than a soft limit of 256, within a hard one of
    1,024. The run starts (its first users connect) instead of being refused."""
    log_path = tmp_path / "locust.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            locust(
                *("--host", stub.ws_url, "--users", "400", "--spawn-rate", "5"),
                *("--run-time", "5s", "--fleet-size", "400", "--ocpp-profile", "idle", *FAST),
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            preexec_fn=_open_files(256, 1024),
        )
    try:
        code = process.wait(40)
    finally:
        if process.poll() is None:
            process.kill()
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert "open files" not in output
    assert get(stub.api_url, "/chargers"), "the users that spawned connected and booted"


# -- 2. Locust as a library: Environment API, in-process coordination ------------------------


def test_an_environment_api_run_connects_runs_sessions_and_quits_clean(
    tmp_path: Path, stub: StubProcess
) -> None:
    users = 20
    driver = Driver(tmp_path, "--host", stub.ws_url, *FAST, "--fleet-size", "50")
    try:
        assert driver.ask("start", users=users, rate=50) == {"ok": True}
        wait_for(lambda: connected(stub) == users, 20, f"{users} chargers connected")
        # Quit while some sessions are over and others still charging.
        wait_for(
            lambda: len(transactions(stub, "closed")) >= 5 and transactions(stub, "open"),
            30,
            "closed and open transactions at the stub",
        )
        result = driver.quit()
    finally:
        driver.stop()

    assert result["users"] == 0
    assert result["held_after_quit"] == 0  # every user released its charger id
    # Every station ended its transaction on stop: nothing half-open at the CSMS.
    assert transactions(stub, "open") == []
    wait_for(lambda: connected(stub) == 0, 10, "every WebSocket closed")
    assert_one_boot_per_user(stub, users)

    ledger = [LedgerEntry.from_dict(data) for data in result["ledger"]]
    report = compare(driver.run_id, ledger, StubApiRecords(stub.api_url))
    assert report.missing == []
    assert report.duplicated == []
    assert report.energy_mismatches == []
    assert report.seq_gaps == [] and report.never_ended == []
    assert report.checked_seq_nos == len(report.matched) and not report.lost
    starts = {(e.charger_id, e.transaction_id) for e in ledger if e.kind == "start"}
    ledger = [e for e in ledger if e.kind == "end"]
    assert starts == {(e.charger_id, e.transaction_id) for e in ledger}
    closed = {(row["charger_id"], row["transaction_id"]) for row in transactions(stub)}
    assert len(report.matched) == len(ledger) == len(closed) >= 5
    assert {(e.charger_id, e.transaction_id) for e in ledger} == closed
    assert all(e.transaction_id.startswith(driver.run_id[:8] + "-") for e in ledger)

    ocpp = requests(result, "OCPP")
    assert {"BootNotification", "StatusNotification", "Heartbeat", "TransactionEvent"} <= set(ocpp)
    assert ocpp["BootNotification"]["count"] == users
    assert requests(result, "WebSocket")["connect"]["count"] == users
    assert [row for row in result["requests"] if row["failures"]] == []
    assert result["errors"] == []
    assert result["exceptions"] == []


def test_users_without_a_charger_id_retry_in_back_off_and_stop_at_once(
    tmp_path: Path, stub: StubProcess
) -> None:
    """Five users, three charger ids: two find the fleet exhausted and retry (counted each
    time) instead of dying; quitting does not wait for their back-off."""
    driver = Driver(
        tmp_path, "--host", stub.ws_url, *FAST, "--ocpp-profile", "idle", "--fleet-size", "3"
    )
    try:
        driver.ask("start", users=5, rate=50)
        wait_for(lambda: connected(stub) == 3, 15, "3 chargers connected")
        wait_for(
            lambda: errors(driver.ask("stats"), "Coordination", "lease") >= 4,
            15,
            "two users retried their lease twice",
        )
        stats = driver.ask("stats")
        assert stats["users"] == 5
        [row] = [e for e in stats["errors"] if e["type"] == "Coordination"]
        assert row["error"] == "fleet exhausted: every charger id is leased", row
        started = time.monotonic()
        result = driver.quit()
        assert time.monotonic() - started < 5  # the waiting users did not hold up the stop
    finally:
        driver.stop()
    assert result["held_after_quit"] == 0
    assert result["exceptions"] == []
    wait_for(lambda: connected(stub) == 0, 10, "every WebSocket closed")


# -- 3. the locust command, reconciled with the CSMS at the end -------------------------------


def test_the_locust_command_reconciles_the_run_with_the_csms(
    tmp_path: Path, stub: StubProcess
) -> None:
    users = 30
    code, output = run_locust(
        tmp_path / "locust.log",
        *("--host", stub.ws_url, "--users", str(users), "--spawn-rate", "30"),
        *("--run-time", "6s", "--fleet-size", "60", "--only-summary", *FAST),
        *("--csms-api", stub.api_url),
    )
    assert code == 0, output[-3000:]
    matched = reconciliation(output)
    assert matched > 0
    assert transactions(stub, "open") == []
    assert len(transactions(stub, "closed")) == matched
    assert_one_boot_per_user(stub, users)
    assert "Traceback" not in output


# -- 4. distributed on this machine through the real Redis -----------------------------------


def scrape_until(url: str, chargers: int, timeout: float) -> dict[str, Any]:
    """Scrape ``url`` until ``chargers`` are connected and have booted (a charger counts as
    connected before its BootNotification's answer: one scrape can catch it between);
    returns a few figures: gauges by name, BootNotification results, lag counts by worker."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + timeout
    figures: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError:
            time.sleep(0.2)
            continue
        figures = {"ocpp_loadgen_schedule_lag_seconds_count": {}, "run": set()}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                figures["run"].add(sample.labels.get("run"))
                if sample.name == "ocpp_loadgen_chargers_connected":
                    figures[sample.name] = sample.value
                elif sample.name == "ocpp_loadgen_call_duration_seconds_count" and (
                    sample.labels.get("action") == "BootNotification"
                    and sample.labels.get("outcome") == "result"
                ):
                    figures["ocpp_loadgen_boots"] = sample.value
                elif sample.name == "ocpp_loadgen_schedule_lag_seconds_count":
                    figures[sample.name][sample.labels["worker"]] = sample.value
        if (
            figures.get("ocpp_loadgen_chargers_connected")
            == chargers
            == figures.get("ocpp_loadgen_boots")
        ):
            return figures
        time.sleep(0.2)
    raise AssertionError(f"{url} never showed {chargers} chargers connected and booted: {figures}")


def test_a_master_and_two_workers_share_ids_through_redis(
    tmp_path: Path, stub: StubProcess, raw_redis: redis.Redis
) -> None:
    users, port, metrics_port = 200, str(free_port()), free_port()
    common = ["--host", stub.ws_url, *FAST, "--fleet-size", "300", "--redis-url", REDIS_URL]
    common += ["--csms-api", stub.api_url]
    workers = [
        Background(
            tmp_path / f"worker{n}.log",
            *("--worker", "--master-host", "127.0.0.1", "--master-port", port, *common),
        )
        for n in (1, 2)
    ]
    master = Background(
        tmp_path / "master.log",
        *("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port),
        *("--expect-workers", "2", "--users", str(users), "--spawn-rate", "100"),
        # Long enough for the scrape below on a loaded machine: the run time counts from
        # when both workers say ready (before their plugin is set up), then 200 chargers
        # connect and boot, and the master's view follows each worker's report (every 3 s).
        # 8 s was not: it saw 194 of 200 connected before the run ended.
        *("--run-time", "20s", "--only-summary", *common),
        *("--prometheus-port", str(metrics_port)),  # after FAST's 0: the last one wins
    )
    run_id = None
    try:
        # One scrape of the master covers both workers: their snapshots merged.
        families = scrape_until(f"http://127.0.0.1:{metrics_port}/metrics", users, timeout=60)
        assert families["ocpp_loadgen_chargers_connected"] == users
        assert families["ocpp_loadgen_boots"] == users
        lags = families["ocpp_loadgen_schedule_lag_seconds_count"]
        assert {"master"} < set(lags), "every worker's lag probe reaches the master"
        code = master.wait(90)
        output = master.output()
        run_id = run_id_of(output)
        assert code == 0, master.tail()
        assert families["run"] == {run_id}, "every series carries the run's label"
        for worker in workers:
            assert worker.wait(30) == 0, worker.tail()
            assert f"OCPP run {run_id} " in worker.output()
            assert "Traceback" not in worker.output()
        matched = reconciliation(output)
        assert matched > 0
        assert transactions(stub, "open") == []
        assert_one_boot_per_user(stub, users)

        at_stub = [row["transaction_id"] for row in transactions(stub)]
        assert len(at_stub) == matched
        assert [tid for tid, n in Counter(at_stub).items() if n > 1] == []
        # Who made which id: a ledger entry's entry_id starts with its coordinator's holder,
        # "<host>:<pid>:<random>".
        by_pid: dict[int, list[str]] = {}
        for data in coordination.read_ledger(raw_redis, run_id):
            if data["kind"] == "start":
                continue
            pid = int(data["entry_id"].split(":")[1])
            by_pid.setdefault(pid, []).append(data["transaction_id"])
        assert set(by_pid) == {worker.pid for worker in workers}, "ids from both workers"
        ledger_ids = [tid for ids in by_pid.values() for tid in ids]
        assert sorted(ledger_ids) == sorted(at_stub)
        assert all(tid.startswith(run_id[:8] + "-") for tid in ledger_ids)
    finally:
        for process in (master, *workers):
            process.stop()
        if run_id:
            coordination.delete_run(raw_redis, run_id)


def run_id_driver(tmp_path: Path, case: str) -> dict[str, Any]:
    """tests/locust_run_id_driver.py's answer for ``case`` (a master and a worker runner)."""
    log_path = tmp_path / f"run_id_driver_{case}.log"
    command = [sys.executable, "-m", "tests.locust_run_id_driver", case, str(free_port())]
    command += ["--host", "ws://127.0.0.1:9/"]  # no user starts: nothing connects
    command += ["--fleet-size", "10", "--redis-url", REDIS_URL, "--prometheus-port", "0"]
    with log_path.open("wb") as log:
        done = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=ROOT,
            text=True,
            timeout=60,
        )
    lines = [line[3:] for line in done.stdout.splitlines() if line.startswith("@@ ")]
    assert done.returncode == 0 and lines, log_path.read_text(errors="replace")[-4000:]
    return json.loads(lines[0])


def test_a_worker_keeps_the_masters_messages_that_come_before_it_can_handle_them(
    tmp_path: Path,
) -> None:
    got = run_id_driver(tmp_path, "early")
    assert got["kept"] == [["run", "run-1"], ["retry", 3]]
    assert got["later"] == [["run", "run-2"]]


def test_a_worker_that_missed_the_run_id_before_its_setup_asks_the_master_for_it(
    tmp_path: Path, raw_redis: redis.Redis
) -> None:
    """Locust handles the master's messages from the moment a worker is acknowledged, before
    it fires ``init``: on a loaded machine the run id (sent when the last worker is ready)
    can come then, and Locust drops a message nobody listens to. That worker's users would
    wait for it in vain; once set up, it asks the master instead."""
    got = run_id_driver(tmp_path, "before-init")
    try:
        assert got["worker_run"] == got["master_run"]
    finally:
        coordination.delete_run(raw_redis, got["master_run"])
    log = (tmp_path / "run_id_driver_before-init.log").read_text()
    assert "Unknown message type received: ocpp_run_id" in log, "the race was replayed"


def test_processes_with_a_redis_url_run_clean(
    tmp_path: Path, stub: StubProcess, raw_redis: redis.Redis
) -> None:
    users, port = 60, str(free_port())
    code, output = run_locust(
        tmp_path / "locust.log",
        *("--processes", "2", "--master-bind-host", "127.0.0.1"),
        *("--master-bind-port", port, "--master-port", port),
        *("--host", stub.ws_url, "--users", str(users), "--spawn-rate", "60"),
        *("--run-time", "5s", "--fleet-size", "100", "--only-summary", *FAST),
        *("--redis-url", REDIS_URL, "--csms-api", stub.api_url),
    )
    run_id = run_id_of(output)
    try:
        assert code == 0, output[-3000:]
        assert output.count(f"OCPP run {run_id} ") == 3  # the master and both workers
        assert reconciliation(output) > 0
        assert "Traceback" not in output
        assert "ERROR" not in output
        assert transactions(stub, "open") == []
        assert_one_boot_per_user(stub, users)
    finally:
        coordination.delete_run(raw_redis, run_id)


# -- 5. a worker killed mid-run: its users go to the survivor, its ids after the TTL --------


def test_a_killed_workers_users_get_its_charger_ids_after_the_lease_ttl(
    tmp_path: Path, stub: StubProcess, raw_redis: redis.Redis
) -> None:
    """Locust's real master and two workers; one is SIGKILLed. The master re-sends its users
    to the survivor (``--enable-rebalancing``: in seconds; without it Locust waits 60 s)
    while the dead worker's ids are still leased: those users find the fleet exhausted,
    retry with back-off, and get exactly the dead worker's ids once the TTL is over."""
    users, ttl, port = 40, 6.0, str(free_port())
    common = ["--host", stub.ws_url, *FAST, "--ocpp-profile", "idle"]
    common += ["--fleet-size", str(users), "--redis-url", REDIS_URL, "--lease-ttl", str(ttl)]
    workers = [
        Background(
            tmp_path / f"worker{n}.log",
            *("--worker", "--master-host", "127.0.0.1", "--master-port", port, *common),
        )
        for n in (1, 2)
    ]
    master = Background(
        tmp_path / "master.log",
        *("--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", port),
        *("--expect-workers", "2", "--users", str(users), "--spawn-rate", "40"),
        *("--run-time", "90s", "--enable-rebalancing", *common),
    )
    run_id = None
    try:
        wait_for(lambda: connected(stub) == users, 30, f"{users} chargers connected")
        run_id = run_id_of(master.output())
        owner_key = f"{coordination.run_prefix(run_id)}:pool:chargers:owner"

        def owners() -> dict[str, int]:  # charger id -> pid of the holding worker
            return {
                charger.decode(): int(owner.decode().split(":")[1])
                for charger, owner in raw_redis.hgetall(owner_key).items()
            }

        held = owners()
        assert len(held) == users
        victim, survivor = workers
        doomed = {charger for charger, pid in held.items() if pid == victim.pid}
        kept = {charger for charger, pid in held.items() if pid == survivor.pid}
        assert doomed and kept and len(doomed) + len(kept) == users

        os.kill(victim.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        victim.process.wait(10)
        wait_for(lambda: connected(stub) == len(kept), 10, "the dead worker's sockets closed")

        def all_with_the_survivor() -> bool:
            now = owners()
            return len(now) == users and set(now.values()) == {survivor.pid}

        wait_for(all_with_the_survivor, 4 * ttl + 15, "every charger id leased by the survivor")
        elapsed = time.monotonic() - killed_at
        # Freed by expiry (the last renewal was at most TTL / 3 before the kill), not at once.
        assert elapsed >= ttl * 2 / 3, elapsed
        wait_for(lambda: connected(stub) == users, 15, f"{users} chargers connected again")

        def boots() -> dict[int, set[str]]:
            by_count: dict[int, set[str]] = {}
            for charger in get(stub.api_url, "/chargers"):
                by_count.setdefault(charger["boot_count"], set()).add(charger["charger_id"])
            return by_count

        # The dead worker's chargers booted again (at the survivor); the others never did.
        wait_for(lambda: boots() == {1: kept, 2: doomed}, 10, "the re-sent users booted")
        assert survivor.process.poll() is None and master.process.poll() is None
        output = survivor.output()
        assert "Traceback" not in output and "Too many connections" not in output
        # The re-sent users waited for the ids in back-off, said in a line or two, not 20.
        said = [line for line in output.splitlines() if "lease failed" in line]
        assert len(said) <= 3, said
    finally:
        for process in (master, *workers):
            process.stop()
        if run_id:
            coordination.delete_run(raw_redis, run_id)


# -- 6. Redis stopped and restarted mid-run ---------------------------------------------------


def _last_heartbeats(stub: StubProcess) -> dict[str, float]:
    return {
        c["charger_id"]: datetime.fromisoformat(c["last_heartbeat_at"]).timestamp()
        for c in get(stub.api_url, "/chargers")
        if c["connected"] and c["last_heartbeat_at"]
    }


def test_a_redis_outage_keeps_stations_running_and_fails_new_leases_visibly(
    tmp_path: Path, stub: StubProcess, redis_server: RedisServer
) -> None:
    ttl = 2.0
    driver = Driver(
        tmp_path,
        *("--host", stub.ws_url, "--time-scale", "60", "--ocpp-profile", "idle"),
        *("--fleet-size", "30", "--redis-url", redis_server.url, "--lease-ttl", str(ttl)),
    )
    try:
        driver.ask("start", users=10, rate=50)
        wait_for(lambda: len(_last_heartbeats(stub)) == 10, 20, "10 chargers heartbeating")
        first = set(_last_heartbeats(stub))

        redis_server.stop()
        down_at = time.time()
        before = requests(driver.ask("stats"), "OCPP")["Heartbeat"]["count"]
        # Five more users while Redis is down: each fails to lease, visibly, and retries.
        driver.ask("start", users=15, rate=50)
        wait_for(
            lambda: errors(driver.ask("stats"), "Coordination", "lease") >= 5,
            15,
            "5 Coordination lease failures",
        )
        time.sleep(ttl + 1)  # longer than a lease lives: renewals have failed meanwhile
        stats = driver.ask("stats")
        assert stats["users"] == 15  # waiting to retry, not dead
        assert errors(stats, "Coordination", "lease") >= 5
        # The ten connected stations carried on: heartbeats answered by the stub.
        assert requests(stats, "OCPP")["Heartbeat"]["count"] > before
        assert requests(stats, "OCPP")["Heartbeat"]["failures"] == 0
        beats = _last_heartbeats(stub)
        assert set(beats) == first
        assert all(at > down_at + 1 for at in beats.values()), (down_at, beats)
        assert connected(stub) == 10

        redis_server.start()  # empty, as after a crash: the run's state is gone

        # The waiting users lease by themselves once the pools are re-created (after a
        # grace of one TTL in which the living workers re-claim what they hold).
        wait_for(lambda: connected(stub) == 15, 25, "15 chargers connected after the restart")
        stats = driver.ask("stats")
        assert stats["users"] == 15
        failed = errors(stats, "Coordination", "lease")
        # Quiet: the failures (some 5 users x 4 back-off rounds) in a few lines with counts.
        said = [line for line in driver.log().splitlines() if "lease failed" in line]
        assert 1 <= len(said) <= 3 < failed, (failed, said)
        assert set(_last_heartbeats(stub)) >= first  # the first ten never went away
        chargers = get(stub.api_url, "/chargers")
        assert len(chargers) == 15
        assert all(c["boot_count"] == 1 for c in chargers)
        client = redis.Redis.from_url(redis_server.url)
        try:
            owner_key = f"{coordination.run_prefix(driver.run_id)}:pool:chargers:owner"
            leased = {key.decode() for key in client.hkeys(owner_key)}
        finally:
            client.close()
        assert leased == {c["charger_id"] for c in chargers}
        result = driver.quit()
    finally:
        driver.stop()
    assert requests(result, "OCPP")["Heartbeat"]["failures"] == 0
    assert [row for row in result["requests"] if row["type"] == "OCPP" and row["failures"]] == []
    assert result["exceptions"] == []
    wait_for(lambda: connected(stub) == 0, 10, "every WebSocket closed")


# -- 6. --blackout-at: a rehearsed CSMS restart, and recovery as a figure --------------------


@pytest.mark.parametrize("processes", [0, 2], ids=["single", "master+2workers"])
def test_a_blackout_drops_every_charger_and_the_recovery_is_reported(
    tmp_path: Path, stub: StubProcess, raw_redis: redis.Redis, processes: int
) -> None:
    """Every charger (of every worker) drops at 4 s for 2 s, then comes back by its
    back-off: the console and the JSON report give the recovery time and the peak rate."""
    users = 30
    distributed: list[str] = []
    if processes:
        port = str(free_port())
        distributed = ["--processes", str(processes), "--master-bind-host", "127.0.0.1"]
        distributed += ["--master-bind-port", port, "--master-port", port]
        distributed += ["--redis-url", REDIS_URL]
    code, output = run_locust(
        tmp_path / "locust.log",
        *distributed,
        *("--host", stub.ws_url, "--users", str(users), "--spawn-rate", "30"),
        *("--run-time", "12s", "--fleet-size", "40", "--only-summary", *FAST),
        *("--ocpp-profile", "idle", "--report-dir", str(tmp_path / "reports")),
        *("--blackout-at", "4", "--blackout-for", "2"),
        *("--retry-backoff-wait-minimum", "0.2", "--retry-backoff-random-range", "1.5"),
        *("--retry-backoff-repeat-times", "0"),
        timeout=60,
    )
    try:
        assert code == 0, output[-3000:]
        assert "Traceback" not in output
        line = re.search(
            r"recovery: (\d+) of (\d+) chargers lost at (\d+) s; 99% booted again "
            r"after (\d+) s",
            output,
        )
        assert line is not None, output[-3000:]
        lost, before, at_s, recovered_s = map(int, line.groups())
        assert lost == before == users and 3 <= at_s <= 5
        # nobody tried during the 2 s; then back within the random range (+ a 1 s grain)
        assert 2 <= recovered_s <= 2 + 1.7 + 2, output[-2000:]
        (report_path,) = (tmp_path / "reports").glob("*.json")
        (event,) = json.loads(report_path.read_text())["recovery"]
        assert (event["lost"], event["rebooted"], event["recovered_s"]) == (
            users,
            users,
            recovered_s,
        )
        assert 1 <= event["peak_reboots_per_s"] <= users
        assert "Recovery after mass disconnects" in report_path.with_suffix(".html").read_text()
        # the CSMS saw every charger twice: no charger stayed away, none came twice
        boots = {c["charger_id"]: c["boot_count"] for c in get(stub.api_url, "/chargers")}
        assert sorted(boots.values()) == [2] * users, boots
    finally:
        if processes:
            coordination.delete_run(raw_redis, run_id_of(output))


def test_a_csms_restart_is_found_and_its_recovery_counts_the_refused_connects(
    tmp_path: Path,
) -> None:
    """No blackout: the stub itself goes away and comes back on the same port. The chargers
    meet refused connects on the way, which the recovery figure counts."""
    users, port = 20, str(free_port())
    stub = start_stub_process(tmp_path, "--port", port)
    locust_run = Background(
        tmp_path / "locust.log",
        *("--host", stub.ws_url, "--users", str(users), "--spawn-rate", "20"),
        *("--run-time", "12s", "--fleet-size", "30", "--only-summary", *FAST),
        *("--ocpp-profile", "idle", "--retry-backoff-wait-minimum", "0.3"),
        *("--retry-backoff-random-range", "0.5", "--retry-backoff-repeat-times", "1"),
    )
    try:
        wait_for(lambda: connected(stub) == users, 15, "every charger connected")
        time.sleep(1)
        stub.stop()
        stub = start_stub_process(tmp_path, "--port", port)  # ~1-2 s of refused connects
        code = locust_run.wait(40)
        output = locust_run.output()
    finally:
        locust_run.stop()
        stub.stop()
    assert code in (0, 1), output[-3000:]  # 1: Locust counted the refused connects
    assert "Traceback" not in output
    line = re.search(
        r"recovery: (\d+) of (\d+) chargers lost at \d+ s; 99% booted again after \d+ s "
        r"\(peak \d+ boots/s; (\d+) connect failures",
        output,
    )
    assert line is not None, output[-3000:]
    lost, before, connect_failures = map(int, line.groups())
    assert lost == before == users and connect_failures > 0


# -- 7. the CSMS's answers honoured, wall-clock time on the wire ------------------------------


@pytest.mark.parametrize("version", ["2.0.1", "1.6"])
def test_rejected_tokens_are_honoured_counted_and_timestamps_are_never_ahead(
    tmp_path: Path, version: str
) -> None:
    """--time-scale 10 against a stub that refuses timestamps 5 s ahead and blocks half the
    tokens: no timestamp is refused (simulated time would be 9 s ahead per second of run);
    the blocked tokens start no transaction, show in Locust's failure table with their
    status and in both reports; the rest reconciles. 1.6 too: its StartTransaction,
    MeterValues and StopTransaction carry their own timestamps."""
    tokens = [token.value for token in idtokens.generate(20)]  # the pool of --fleet-size 20
    blocked = tokens[::2]
    stub = start_stub_process(
        tmp_path,
        "--reject-future-timestamps",
        "5",
        *(arg for token in blocked for arg in ("--blocked-token", token)),
    )
    try:
        code, output = run_locust(
            tmp_path / "locust.log",
            *("--host", stub.ws_url, "--users", "20", "--spawn-rate", "20"),
            *("--run-time", "8s", "--fleet-size", "20", "--only-summary"),
            *("--time-scale", "10", "--session-interarrival", "10", "--session-stay", "30"),
            *("--meter-interval", "10", "--prometheus-port", "0"),
            *("--report-dir", str(tmp_path / "reports"), "--csms-api", stub.api_url),
            *("--ocpp-version", version),
            timeout=60,
        )
        metrics = urllib.request.urlopen(stub.api_url + "/metrics", timeout=10).read().decode()
        rows = transactions(stub)
    finally:
        stub.stop()
    assert "Traceback" not in output
    assert code == 1, output[-3000:]  # Locust's exit code when requests failed: the rejections
    assert "csms_stub_future_timestamps_total{" not in metrics  # not one refused
    assert not re.search(r"^csms_stub_call_errors_total\{.*\} [1-9]", metrics, re.MULTILINE)
    assert reconciliation(output) == len(rows) > 0  # every accepted session matched
    # Locust's failure table: one row per message and status
    assert re.search(r"\d+\s+Authorization Authorize: OcppRequestFailure\('Blocked'\)", output)
    (json_path,) = (tmp_path / "reports").glob("*.json")
    verdicts = {
        (row["message"], row["status"]): row["count"]
        for row in json.loads(json_path.read_text())["authorizations"]
    }
    # the stub answers TransactionEvent Started (StartTransaction) with its verdict too:
    # Accepted, by then
    start = "StartTransaction" if version == "1.6" else "TransactionEvent"
    expected = {("Authorize", "Accepted"), ("Authorize", "Blocked"), (start, "Accepted")}
    assert set(verdicts) == expected, verdicts
    assert verdicts[("Authorize", "Accepted")] >= verdicts[(start, "Accepted")]
    assert verdicts[(start, "Accepted")] == len(rows)
    assert {row["ocpp_version"] for row in rows} == {version}
    if version == "1.6":  # meter values went out with their timestamps, none refused
        answered = {"version": "1.6", "action": "MeterValues", "outcome": "result"}
        assert metric_sample(metrics, "csms_stub_messages_total", **answered) > 0
    assert "rejections of" in json_path.with_suffix(".html").read_text()
