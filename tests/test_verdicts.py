"""Options people can find, and verdicts CI can use.

- ``python -m loadgen options`` lists every option of the plugin, grouped, with its help;
  the web UI keeps the same help texts;
- a plain run's SLO verdict (``--check-slo``) and its JUnit XML (``--junit``), pure on
  measurements, then end to end with the real ``locust`` command against csms_stub, alone
  and as master + worker;
- failed connects whose station connected afterwards do not fail a run by Locust's exit
  code, but do count against ``--slo-connect-failure-ratio`` with ``--check-slo``.

Locust is never imported here (it monkey-patches the standard library): what needs it runs
in a subprocess.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from loadgen import junit
from loadgen.capacity.config import CapacityConfig
from loadgen.capacity.judgement import ActionStats, StepMeasurement, Verdict
from loadgen.capacity.search import CHARGERS_NOT_SEARCHED, CapacityResult
from loadgen.verdict import judge_run
from tests.conftest import REDIS_URL, StubProcess, free_port, start_stub_process
from tests.test_locust import FAST, ROOT, Background, connected, run_locust, wait_for

pytestmark = pytest.mark.seconds(60)  # conftest.py: the start order

# -- 1. the options, from their one definition ----------------------------------------------


def run_python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_python_m_loadgen_options_lists_every_option_grouped_with_its_help() -> None:
    done = run_python("-m", "loadgen", "options")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    listed = re.findall(r"^  (--[a-z0-9-]+)", text, re.MULTILINE)
    names = run_python(
        "-c",
        "from loadgen.locust.settings import option_names; print(' '.join(option_names()))",
    )
    expected = ["--" + name.replace("_", "-") for name in names.stdout.split()]
    assert len(expected) > 40 and listed == expected
    # a heading per group, in the order of the README's table
    headings = re.findall(r"^([A-Z][^\n]*)$", text, re.MULTILINE)
    assert headings.index("Protocol and fleet") < headings.index("Capacity search")
    assert any(h.startswith("SLOs") for h in headings)
    # an option: its value, environment variable and help on the next line
    fleet_size = text.split("  --fleet-size N  (LOCUST_FLEET_SIZE)\n", 1)[1]
    assert fleet_size.startswith("      chargers in the generated fleet")
    assert "  --check-slo  (LOCUST_CHECK_SLO)\n      judge a plain run by the SLOs" in text
    assert "  --capacity-search [TEXT]  (LOCUST_CAPACITY_SEARCH)" in text
    assert "%%" not in text  # argparse's escape, not for people


def test_python_m_loadgen_without_a_command_says_how() -> None:
    done = run_python("-m", "loadgen", "nonsense")
    assert done.returncode == 2
    assert "python -m loadgen options" in done.stderr


# Locust's web UI builds its form from ui_extra_args_dict(): our options with their help
WEB_UI = """
import json
from locust.argument_parser import ui_extra_args_dict
from loadgen.locust.settings import option_help
ui = ui_extra_args_dict([])
print(json.dumps({
    "ui": {k: [v["help_text"], v["is_secret"]] for k, v in ui.items()},
    "ours": {o.name: o.help for o in option_help()},
}))
"""


def test_the_web_ui_keeps_every_options_help_text() -> None:
    done = run_python("-c", WEB_UI)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads(done.stdout.strip().splitlines()[-1])
    ui, ours = data["ui"], data["ours"]
    assert set(ours) <= set(ui)  # every option is in the form
    for name, help_text in ours.items():
        assert ui[name][0] == help_text, name  # the same text, no "%%"
    assert ui["ocpp_password"][1] and ui["reconcile_db_url"][1]  # masked
    assert not ui["fleet_size"][1]
    assert ui["check_slo"][0].startswith("judge a plain run by the SLOs")


# -- 2. the verdict of a plain run, pure ----------------------------------------------------

SLOS = CapacityConfig(
    start=1,
    max_chargers=1000,
    p95_ms=1000,
    p95_ms_by_action={"Heartbeat": 500},
    boot_p95_ms=3000,
    max_call_error_ratio=0.01,
    max_connect_failure_ratio=0.02,
    max_disconnect_ratio=0.05,
    max_schedule_lag_p99_ms=100,
    max_generator_cpu=0.9,
)


def run_of(**changes: object) -> StepMeasurement:
    fields: dict[str, object] = {
        "chargers": 100,
        "actions": {
            "BootNotification": ActionStats(100, 40, 900, 1200),
            "Heartbeat": ActionStats(1000, 10, 20, 30),
            "TransactionEvent": ActionStats(400, 30, 80, 120),
        },
        "connect_attempts": 102,
        "connect_failures": 2,
        "connected": 100,
        "booted": 100,
        "schedule_lag_p99_ms": 5.0,
        "cpu": 0.3,
        "seconds": 60.0,
    }
    fields.update(changes)
    return StepMeasurement(**fields)  # type: ignore[arg-type]


def test_a_run_that_held_every_slo_says_each_with_its_figure_and_limit() -> None:
    verdict = judge_run(run_of(), SLOS)
    assert verdict.ok and verdict.reasons == []
    lines = verdict.lines()
    assert lines[0] == "SLO verdict: PASSED (8 of 8 held)"
    assert lines[1:] == [
        "  SLO p95 Heartbeat: held (20 ms <= 500 ms)",
        "  SLO p95 TransactionEvent: held (80 ms <= 1000 ms)",
        "  SLO CALL error ratio: held (0% (0/1500) <= 1%)",
        "  SLO connect failure ratio: held (1.96% (2/102) <= 2%)",
        "  SLO chargers booted: held (100 of 100 (missing 0%) <= 2% missing)",
        "  SLO unexpected disconnect ratio: held (0% (0/100 chargers) <= 5%)",
        "  SLO BootNotification error ratio: held (0% (0/100) <= 1%)",
        "  SLO p95 BootNotification: held (900 ms <= 3000 ms)",
    ]  # the load generator's guards judge the capacity search's holds only


def test_a_run_that_broke_slos_fails_with_each_reason() -> None:
    actions = dict(run_of().actions)
    actions["Heartbeat"] = ActionStats(1000, 10, 620, 900, errors=30)
    verdict = judge_run(run_of(actions=actions, call_errors=30, booted=90), SLOS)
    assert not verdict.ok
    assert verdict.reasons == [
        "p95 Heartbeat 620 ms > 500 ms",
        "CALL error ratio 2% (30/1500) > 1%",
        "only 90 of 100 chargers booted (missing 10% > 2%)",
    ]
    assert verdict.lines()[0] == "SLO verdict: FAILED (" + "; ".join(verdict.reasons) + ")"
    assert "  SLO p95 Heartbeat: FAILED (p95 Heartbeat 620 ms > 500 ms)" in verdict.lines()
    # the connect failure ratio is judged once, not again as a connect SLO of the ramp
    names = [check.name for check in verdict.checks]
    assert names.count("connect failure ratio") == 1


def test_exceptions_in_the_load_generator_fail_a_run_whose_slos_held() -> None:
    verdict = judge_run(run_of(), SLOS, ["3 exceptions in the load generator"])
    assert not verdict.ok and verdict.reasons == ["3 exceptions in the load generator"]
    assert verdict.lines()[-1] == "  FAILED: 3 exceptions in the load generator"


def test_a_run_without_calls_fails() -> None:
    verdict = judge_run(run_of(actions={}), SLOS)
    assert verdict.reasons == ["no CALLs measured at 100 chargers"]


# -- 3. JUnit XML ---------------------------------------------------------------------------


def parse(data: bytes) -> ET.Element:
    root = ET.fromstring(data)
    # the structure CI systems read (schema-free): testsuites > testsuite > testcase
    assert root.tag == "testsuites"
    (suite,) = list(root)
    assert suite.tag == "testsuite" and suite.get("name") == junit.SUITE
    for case in suite:
        assert case.tag == "testcase" and case.get("name") and case.get("classname")
        assert {child.tag for child in case} <= {"failure", "system-out"}
        for failure in case.findall("failure"):
            assert failure.get("message") == failure.text
    cases = suite.findall("testcase")
    assert suite.get("tests") == root.get("tests") == str(len(cases))
    failed = sum(1 for case in cases if case.find("failure") is not None)
    assert suite.get("failures") == root.get("failures") == str(failed)
    return suite


def test_junit_has_a_case_per_slo_and_a_failure_per_broken_one(tmp_path: Path) -> None:
    verdict = judge_run(run_of(booted=90), SLOS, ["1 exceptions in the load generator"])
    path = tmp_path / "verdict.xml"
    junit.write(str(path), junit.slo_cases(verdict.checks, verdict.problems), seconds=61.5)
    suite = parse(path.read_bytes())
    assert suite.get("time") == "61.500"
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    assert len(cases) == len(verdict.checks) + 1
    booted = cases[("ocpp-loadgen.slo", "chargers booted")].find("failure")
    assert booted is not None
    assert booted.get("message") == "only 90 of 100 chargers booted (missing 10% > 2%)"
    heartbeat = cases[("ocpp-loadgen.slo", "p95 Heartbeat")]
    assert heartbeat.find("failure") is None
    assert heartbeat.findtext("system-out") == "20 ms (limit 500 ms)"
    assert cases[("ocpp-loadgen.run", "load generator")].find("failure") is not None


def test_junit_escapes_markup_and_drops_what_xml_cannot_hold() -> None:
    case = junit.Case("slo", 'p95 <Heart&beat> "x"', "a \x00bad\x1b reason <b>", "out & in")
    suite = parse(junit.render([case]))
    (item,) = suite.findall("testcase")
    assert item.get("name") == 'p95 <Heart&beat> "x"'
    assert item.find("failure").get("message") == "a bad reason <b>"  # type: ignore[union-attr]


def test_junit_has_a_case_per_capacity_answer() -> None:
    both = CapacityConfig(mode="both")
    found = CapacityResult(
        2250,
        False,
        "refined by bisection",
        [(2250, Verdict(True))],
        max_connect_rate=None,
        connect_rate_stopped_because="even the start failed",
    )
    suite = parse(junit.render(junit.capacity_cases(found, both, finished=True)))
    chargers, rate = suite.findall("testcase")
    assert (chargers.get("name"), rate.get("name")) == ("chargers", "connect rate")
    assert chargers.find("failure") is None
    assert chargers.findtext("system-out") == "capacity: 2250 chargers (refined by bisection)"
    failure = rate.find("failure")
    assert failure is not None
    assert failure.get("message") == "capacity: connect rate: no answer: even the start failed"
    # only what was searched; a search cut short fails each
    rate_only = CapacityConfig(mode="connect-rate")
    none = CapacityResult(None, False, CHARGERS_NOT_SEARCHED, [], max_connect_rate=40.0)
    (case,) = junit.capacity_cases(none, rate_only, finished=False)
    assert case.name == "connect rate" and case.failure == "the run ended before the search did"


# -- 4. end to end: the locust command against csms_stub -------------------------------------

#: idle chargers that retry a refused connect within about half a second
QUICK_RETRY = ["--ocpp-profile", "idle", "--retry-backoff-wait-minimum", "0.3"]
QUICK_RETRY += ["--retry-backoff-random-range", "0.3", "--retry-backoff-repeat-times", "0"]


def late_stub_run(tmp_path: Path, *args: str, users: int = 10) -> tuple[int, str]:
    """A plain run whose CSMS comes up a second after every charger first tried: each
    meets refused connects, then connects and boots; stopped (SIGTERM) once they have
    heartbeated a while: the stop follows what happened, not a fixed --run-time, so a slow
    start on a busy machine cannot cut the run short."""
    port = str(free_port())
    run = Background(
        tmp_path / "locust.log",
        *("--host", f"ws://127.0.0.1:{port}", "--users", str(users), "--spawn-rate", "20"),
        *("--fleet-size", str(users), "--only-summary", *FAST, *QUICK_RETRY, *args),
    )
    stub: StubProcess | None = None
    try:
        wait_for(lambda: "All users spawned" in run.output(), 30, "the users spawned")
        time.sleep(1.0)
        stub = start_stub_process(tmp_path, "--port", port)
        wait_for(lambda: connected(stub) == users, 30, "every charger connected")
        time.sleep(2.0)  # heartbeats every 0.5 s
        run.process.terminate()
        return run.wait(60), run.output()
    finally:
        run.stop()
        if stub is not None:
            stub.stop()


def refused_connects(output: str) -> int:
    """Failed ``WebSocket connect`` requests in Locust's final table."""
    match = re.search(r"^WebSocket\s+connect\s+(\d+)\s+(\d+)\(", output, re.MULTILINE)
    assert match, output[-3000:]
    return int(match.group(2))


def test_connects_retried_until_they_succeeded_do_not_fail_a_plain_run(
    tmp_path: Path,
) -> None:
    code, output = late_stub_run(tmp_path)
    assert "Traceback" not in output
    failed = refused_connects(output)
    assert failed > 0  # Locust's table still shows every failed attempt
    assert code == 0, output[-3000:]  # without --check-slo: recovered, so no failure
    line = re.search(r"connects: (\d+) failed attempts were retried", output)
    assert line is not None and int(line.group(1)) == failed, output[-3000:]


def test_check_slo_judges_the_retried_connects_by_the_connect_slo(tmp_path: Path) -> None:
    report = tmp_path / "slo.xml"
    code, output = late_stub_run(tmp_path, "--check-slo", "--junit", str(report))
    assert code == 1, output[-3000:]  # refused attempts break the 1 % connect SLO
    assert "SLO verdict: FAILED (connect failure ratio " in output, output[-3000:]
    assert re.search(r"SLO connect failure ratio: FAILED \(connect failure ratio ", output)
    assert re.search(r"SLO chargers booted: held \(10 of 10 \(missing 0%\)", output)
    assert re.search(r"SLO p95 Heartbeat: held \(\d+(\.\d+)? ms <= 1000 ms\)", output)
    suite = parse(report.read_bytes())
    failed = {c.get("name") for c in suite.findall("testcase") if c.find("failure") is not None}
    assert failed == {"connect failure ratio"}
    assert f"junit: {report}" in output

    # the same run with a connect SLO that tolerates them passes
    again = tmp_path / "again"
    again.mkdir()
    code, output = late_stub_run(
        again, "--check-slo", "--slo-connect-failure-ratio", "1", "--junit", str(report)
    )
    assert code == 0, output[-3000:]
    assert re.search(r"SLO verdict: PASSED \((\d+) of \1 held\)", output), output[-3000:]
    suite = parse(report.read_bytes())
    assert suite.get("failures") == "0" and int(suite.get("tests") or 0) >= 6


def test_a_master_judges_its_workers_merged_figures(tmp_path: Path) -> None:
    """With --processes the stations live in a worker: the verdict's figures are the
    master's merge of what it reported (a p95 SLO of 0.001 ms fails on its latencies).
    The run ends by --run-time: judged when Locust stops it, before it quits."""
    port = str(free_port())
    stub = start_stub_process(tmp_path)
    try:
        code, output = run_locust(
            tmp_path / "locust.log",
            *("--processes", "1", "--master-bind-host", "127.0.0.1"),
            *("--master-bind-port", port, "--master-port", port, "--redis-url", REDIS_URL),
            *("--host", stub.ws_url, "--users", "8", "--spawn-rate", "20", "--run-time", "20s"),
            *("--fleet-size", "10", "--only-summary", *FAST, "--ocpp-profile", "idle"),
            *("--check-slo", "--slo-p95-ms", "1000,Heartbeat=0.001"),
            timeout=90,
        )
    finally:
        stub.stop()
    assert code == 1, output[-3000:]
    assert "Traceback" not in output
    assert re.search(r"SLO verdict: FAILED \(p95 Heartbeat [0-9.]+ ms > 0\.001 ms\)", output)
    assert re.search(r"SLO chargers booted: held \(8 of 8 \(missing 0%\)", output), output[-3000:]
    calls = re.search(r"SLO CALL error ratio: held \(0% \(0/(\d+)\)", output)
    assert calls is not None and int(calls.group(1)) >= 16, output[-3000:]  # boots, heartbeats


BAD = {
    "junit without a verdict": (["--junit", "x.xml"], "--junit writes the verdicts"),
    "check-slo with a search": (["--check-slo", "--capacity-search"], "--check-slo judges"),
    "junit in no directory": (["--check-slo", "--junit", "/no/such/dir/x.xml"], "--junit"),
}


@pytest.mark.parametrize("args,named", BAD.values(), ids=BAD.keys())
def test_verdict_options_that_cannot_work_stop_at_start_with_one_line(
    tmp_path: Path, args: list[str], named: str
) -> None:
    code, output = run_locust(
        tmp_path / "locust.log",
        *("--host", "ws://127.0.0.1:9", "--users", "1", "--run-time", "5s"),
        *("--prometheus-port", "0"),
        *args,
        timeout=30,
    )
    assert code == 2, output[-2000:]
    (line,) = [line for line in output.splitlines() if line.startswith("loadgen: ")]
    assert named in line
    assert "Traceback" not in output
