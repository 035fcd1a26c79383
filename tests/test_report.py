"""The JSON + HTML report: built from a real capacity search against a simulated CSMS (no
sockets), written to disk, read back, parsed, and checked for what a reader needs and for
what must never be in it (markup from the run, secrets, anything from the network)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from html import escape as html_escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.capacity.config import CapacityConfig
from loadgen.capacity.judgement import ActionStats, StepMeasurement, judge
from loadgen.capacity.measure import versions_spoken
from loadgen.capacity.rate import RateSearch
from loadgen.capacity.search import LIMITED_BY_GENERATOR, CapacityResult, CapacitySearch
from loadgen.report import (
    REDACTED,
    REPORT_KIND,
    REPORT_VERSION,
    build_report,
    capacity_dict,
    render_html,
    report_basename,
    step_dict,
    write_reports,
)
from tests.test_capacity import csms_with_ceiling, rate_step
from tests.test_capacity import run as run_search

HOSTILE = "<script>alert(1)</script>"
STARTED = "2026-05-09T07:35:25+00:00"
HOLD_S = 60.0
WINDOW_S = 10.0

# -- a realistic run ------------------------------------------------------------------------


def _config() -> CapacityConfig:
    return CapacityConfig(
        start=100,
        step="x2",
        max_chargers=6400,
        hold_seconds=HOLD_S,
        p95_ms=1000,
        p95_ms_by_action={"BootNotification": 2000},
        max_call_error_ratio=0.01,
        max_connect_failure_ratio=0.02,
        max_generator_cpu=0.9,
        resolution=50,
    )


def _measure(
    ceiling: int, saturate_above: int | None, extra_action: str | None
) -> Callable[[int], StepMeasurement]:
    """tests.test_capacity's CSMS (Heartbeat's p95 explodes above ``ceiling``) with more
    actions, latencies that grow with the load, and errors once it is overloaded."""
    base = csms_with_ceiling(ceiling, saturate_above)

    def measure(chargers: int) -> StepMeasurement:
        step = base(chargers)
        load = chargers / ceiling
        over = chargers > ceiling
        p95 = 40 + 120 * load + (1500 if over else 0)
        actions = dict(step.actions)
        actions["TransactionEvent"] = ActionStats(
            2 * chargers, p95 / 3, p95, p95 * 1.6, errors=chargers // 20 if over else 0
        )
        boot = 300 * load
        actions["BootNotification"] = ActionStats(chargers // 10 + 1, boot / 3, boot, boot * 1.6)
        if extra_action:
            actions[extra_action] = ActionStats(5, 1.0, 2.0, 3.0)
        errors = chargers // 20 if over else 0
        return dataclasses.replace(
            step,
            actions=actions,
            connected=chargers - (chargers // 50 if over else 0),
            seconds=HOLD_S,
            call_errors=errors,
            error_codes={"InternalError": errors - errors // 4, "timeout": errors // 4}
            if errors
            else {},
            connect_failures=chargers // 40 if over else 0,
            messages_per_s=chargers * 0.35,
            cpu=0.2 + 0.1 * load,
        )

    return measure


def _window(step: StepMeasurement, connected: int, t_s: float) -> dict[str, Any]:
    window = dataclasses.replace(
        step, connected=connected, seconds=WINDOW_S, connect_attempts=0, connect_failures=0
    )
    return {**window.to_dict(), "t_s": t_s}


def simulated(
    ceiling: int = 1000,
    saturate_above: int | None = None,
    extra_action: str | None = None,
    reason_suffix: str = "",
) -> dict[str, Any]:
    """A report from a real :class:`CapacitySearch`, as the Locust layer would build it."""
    config = _config()
    search = CapacitySearch(config)
    measure = _measure(ceiling, saturate_above, extra_action)
    steps: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    clock = 0.0

    def hold(chargers: int) -> StepMeasurement:
        nonlocal clock
        phase = search.phase
        measurement = measure(chargers)
        previous = steps[-1]["connected"] if steps else 0
        for i in range(1, int(HOLD_S / WINDOW_S) + 1):
            connected = previous + (measurement.connected - previous) * min(1.0, i / 2)
            timeline.append(_window(measurement, round(connected), clock + i * WINDOW_S))
        verdict = judge(measurement, config)
        entry = step_dict(measurement, verdict, phase=phase, started_s=clock)
        entry["reasons"] = [r + reason_suffix for r in entry["reasons"]]
        steps.append(entry)
        clock += HOLD_S
        return measurement

    result, _ = run_search(search, hold)
    totals = _totals(steps, clock)
    return build_report(
        run={
            "run_id": "run-7f3a",
            "started": STARTED,
            "ended": (datetime.fromisoformat(STARTED) + timedelta(seconds=clock)).isoformat(),
            "duration_s": clock,
            "host": "ws://csms.example:9000/ocpp",
            "ocpp_version": "2.0.1",
            "profile": "steady",
            "workers": 4,
            "locust_version": "2.31.0",
            "loadgen_version": "0.1.0",
            "exit_code": 0,
        },
        settings={
            "fleet_size": 10000,
            "id_tokens": 0,
            "heartbeat_interval": 60,
            "ocpp_password": "hunter2",
            "redis_url": "redis://:s3cret@127.0.0.1:6379/0",
            "ocpp_validate": False,
        },
        steps=steps,
        timeline=timeline,
        totals=totals.to_dict(),
        capacity=capacity_dict(result, config),
    )


def _totals(steps: list[dict[str, Any]], seconds: float) -> StepMeasurement:
    """The whole run, roughly: counts add up, a percentile is the worst step's."""
    actions: dict[str, ActionStats] = {}
    for step in steps:
        for name, s in step["actions"].items():
            old = actions.get(name, ActionStats(0, 0.0, 0.0, 0.0))
            actions[name] = ActionStats(
                old.count + s["count"],
                max(old.p50_ms or 0.0, s["p50_ms"]),
                max(old.p95_ms or 0.0, s["p95_ms"]),
                max(old.p99_ms or 0.0, s["p99_ms"]),
                errors=old.errors + s["errors"],
            )
    codes: Counter[str] = Counter()
    for step in steps:
        codes.update(step["error_codes"])

    def total(key: str) -> int:
        return sum(step[key] for step in steps)

    return StepMeasurement(
        chargers=max(step["chargers"] for step in steps),
        actions=actions,
        call_errors=total("call_errors"),
        connect_attempts=total("connect_attempts"),
        connect_failures=total("connect_failures"),
        messages_per_s=sum(s["messages_per_s"] for s in steps) / len(steps),
        schedule_lag_p99_ms=max(step["schedule_lag_p99_ms"] for step in steps),
        cpu=max(step["cpu"] for step in steps),
        seconds=seconds,
        error_codes=codes,
    )


# -- reading the page -----------------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}


class Page(HTMLParser):
    """Parses a page, asserting that every element is closed in order; keeps the elements
    (tag, attributes) and the text."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()
        assert self.stack == [], f"unclosed: {self.stack}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-3:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def tags(self) -> Counter[str]:
        return Counter(tag for tag, _ in self.elements)

    def series(self) -> dict[str, list[int]]:
        """Every chart line's label -> its number of points, per chart in page order."""
        found: dict[str, list[int]] = {}
        for tag, attrs in self.elements:
            if tag == "polyline":
                points = (attrs.get("points") or "").split()
                found.setdefault(attrs.get("data-series") or "", []).append(len(points))
        return found


def _no_network(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"\bsrc\s*=", html, re.IGNORECASE)
    assert "@import" not in html and "url(" not in html
    for href in re.findall(r"\bhref\s*=\s*\"([^\"]*)\"", html, re.IGNORECASE):
        assert href.startswith("#"), href


# -- tests ----------------------------------------------------------------------------------


def test_json_round_trip(tmp_path: Path) -> None:
    report = simulated()
    json_path, html_path = write_reports(report, tmp_path / "out")
    assert json_path.name == "ocpp-report-run-7f3a-20260509-073525.json"
    assert html_path.name == "ocpp-report-run-7f3a-20260509-073525.html"
    assert sorted(p.name for p in json_path.parent.iterdir()) == sorted(
        [json_path.name, html_path.name]
    )  # no temporary files left behind
    loaded = json.loads(json_path.read_text(encoding="utf-8"))
    assert loaded == report
    assert loaded["kind"] == REPORT_KIND and loaded["version"] == REPORT_VERSION
    assert set(loaded) == {"kind", "version", "run", "settings", "capacity", "steps"} | {
        "timeline",
        "totals",
        "recovery",
        "authorizations",
        "problems",
        "settings_not_applied",
    }
    assert loaded["recovery"] == []  # no mass disconnect in this run
    assert loaded["authorizations"] == []  # no verdict on any idToken
    assert loaded["capacity"]["max_chargers"] == 1000  # the ceiling, bisected to within 50
    assert loaded["capacity"]["config"]["step"] == "x2"
    assert [s["chargers"] for s in loaded["steps"]] == [
        s["chargers"] for s in loaded["capacity"]["steps"]
    ]
    assert {s["phase"] for s in loaded["steps"]} == {"ramp", "bisect"}
    assert loaded["timeline"][-1]["t_s"] == loaded["run"]["duration_s"]
    assert loaded["totals"]["error_codes"] == {"InternalError": 186, "timeout": 61}
    # rebuilding from the JSON changes nothing, and renders the same page
    assert build_report(**{k: loaded[k] for k in ("run", "settings", "steps")},
                        timeline=loaded["timeline"], totals=loaded["totals"],
                        capacity=loaded["capacity"]) == report  # fmt: skip
    assert render_html(loaded) == html_path.read_text(encoding="utf-8")


def test_html_content() -> None:
    report = simulated()
    html = render_html(report)
    page = Page(html)
    text = " ".join(page.text)
    assert "1,000 chargers held every SLO" in text
    assert "refined by bisection: 1000 held, 1050 failed" in text
    assert "run-7f3a" in text and "ws://csms.example:9000/ocpp" in text
    for step in report["steps"]:
        assert f"{step['chargers']:,}" in text
    for action in ("Heartbeat", "TransactionEvent", "BootNotification"):
        assert action in text
    assert "p95 Heartbeat" in text  # a failed step's reason
    assert "SATURATED" not in text and "FAIL" in text and "OK" in text
    # the sections come in the order a reader wants them
    order = [html.index(f'id="{name}"') for name in ("answer", "run", "slos", "steps")]
    order += [html.index(f'id="{name}"') for name in ("totals", "charts")]
    assert order == sorted(order)
    # SLOs from the search's configuration
    assert "p95 of BootNotification" in text and "2,000 ms" in text


def test_html_charts() -> None:
    report = simulated()
    page = Page(render_html(report))
    assert page.tags["svg"] == 3
    series = page.series()
    steps = len(report["steps"])
    windows = len(report["timeline"])
    for action in ("Heartbeat", "TransactionEvent", "BootNotification"):
        assert series[f"{action} p95"] == [steps]
        assert series[f"{action} p99"] == [steps]
    assert series["CALL error ratio"] == [steps]
    assert series["connect failure ratio"] == [steps]
    assert series["chargers connected"] == [windows]
    assert series["messages/s (right axis)"] == [windows]
    rules = [
        attrs["data-rule"] for tag, attrs in page.elements if tag == "line" and "data-rule" in attrs
    ]
    assert "p95 SLO 1,000 ms" in rules and "p95 SLO BootNotification 2,000 ms" in rules
    # markers: one per point, so a single step is still visible
    assert page.tags["circle"] == sum(sum(counts) for counts in series.values())
    assert "no data" not in " ".join(page.text)


def test_no_network_references() -> None:
    _no_network(render_html(simulated()))
    _no_network(render_html(build_report(run={}, settings={}, steps=[], timeline=[],
                                         totals=None, capacity=None)))  # fmt: skip


def test_hostile_strings_are_escaped() -> None:
    report = simulated(extra_action=HOSTILE, reason_suffix=f" {HOSTILE}")
    report["run"]["run_id"] = f'"><img src=x onerror=alert(2)>{HOSTILE}'
    report["settings"][HOSTILE] = HOSTILE
    html = render_html(report)
    page = Page(html)
    assert "script" not in page.tags and "img" not in page.tags
    assert "<script" not in html.lower() and "<img" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = " ".join(page.text)
    assert HOSTILE in text  # shown, as text
    assert any(label.startswith(HOSTILE) for label in page.series())
    _no_network(html.replace("src=x", ""))  # the hostile "src=" is escaped text, not markup


def test_secrets_are_redacted(tmp_path: Path) -> None:
    report = simulated()
    assert report["settings"]["ocpp_password"] == REDACTED
    assert report["settings"]["redis_url"] == f"redis://{REDACTED}@127.0.0.1:6379/0"
    assert report["settings"]["id_tokens"] == 0  # a count of tokens is no secret
    assert report["settings"]["fleet_size"] == 10000
    redacted = build_report(
        run={"host": "wss://cp:pw@csms:443/"},
        settings={"API_KEY": "k", "csms_secret": "s", "private_key_file": "/k.pem", "n": 1},
        steps=[],
        timeline=[],
        totals=None,
        capacity=None,
    )
    assert redacted["settings"] == {
        "API_KEY": REDACTED,
        "csms_secret": REDACTED,
        "n": 1,
        "private_key_file": REDACTED,
    }
    assert redacted["run"]["host"] == f"wss://{REDACTED}@csms:443/"
    for path in write_reports(report, tmp_path):
        content = path.read_text(encoding="utf-8")
        assert "hunter2" not in content and "s3cret" not in content


def test_empty_inputs_render(tmp_path: Path) -> None:
    report = build_report(run={}, settings={}, steps=[], timeline=[], totals=None, capacity=None)
    assert report["steps"] == [] and report["capacity"] is None and report["totals"] is None
    assert report["run"]["run_id"] is None
    page = Page(render_html(report))
    text = " ".join(page.text)
    assert "Plain run (no capacity search)" in text  # no search: a plain run's page
    assert page.tags["svg"] == 2  # chargers and failures over time; no action to chart
    assert text.count("no data") == 2
    assert "No CALLs." in text and "Nothing: no problem was recorded" in text
    json_path, html_path = write_reports(report, tmp_path)
    assert re.fullmatch(r"ocpp-report-run-\d{8}-\d{6}\.json", json_path.name)
    assert html_path.exists()


def test_stopped_before_any_step() -> None:
    config = _config()
    search = CapacitySearch(config)
    report = build_report(
        run={"run_id": "r", "started": "2026-01-02T03:04:05", "exit_code": None},
        settings={"fleet_size": 10},
        steps=[],
        timeline=[
            {"t_s": 10.0, "chargers": 100, "connected": 40, "messages_per_s": None, "actions": {}}
        ],
        totals=None,
        capacity=capacity_dict(search.result(), config),
    )
    assert report["capacity"]["max_chargers"] is None
    page = Page(render_html(report))
    text = " ".join(page.text)
    assert "No CSMS figure: unfinished (next target 100)" in text
    assert "No capacity step finished" in text
    series = page.series()
    assert series["chargers connected"] == [1]  # one window: one point, still drawn
    assert "messages/s (right axis)" not in series  # None: not plotted
    assert report_basename(report) == "ocpp-report-r-20260102-030405"


def test_limited_by_the_generator() -> None:
    report = simulated(ceiling=5000, saturate_above=800)
    capacity = report["capacity"]
    assert capacity["limited_by_generator"] and capacity["max_chargers"] is None
    text = " ".join(Page(render_html(report)).text)
    assert "Limited by the load generator (add workers)" in text
    assert f"No CSMS figure: {LIMITED_BY_GENERATOR} at 1600 chargers" in text
    assert "up to 800 chargers: a lower bound" in text
    assert "chargers held every SLO" not in text
    assert "SATURATED" in text


def test_start_failed() -> None:
    report = simulated(ceiling=50)
    text = " ".join(Page(render_html(report)).text)
    assert "No CSMS figure: even the start failed (100 chargers)" in text


def test_timeline_only_charts_against_connected() -> None:
    report = simulated()
    report["steps"] = []
    page = Page(render_html(report))
    series = page.series()
    windows = len(report["timeline"])
    assert series["Heartbeat p95"] == [windows]
    assert "chargers connected (timeline windows)" in " ".join(page.text)


def test_non_finite_floats_become_null(tmp_path: Path) -> None:
    nan, inf = float("nan"), float("inf")
    step = {
        **StepMeasurement(100, actions={"Heartbeat": ActionStats(10, nan, inf, -inf)}).to_dict(),
        "messages_per_s": nan,
        "ok": True,
        "reasons": [],
    }
    report = build_report(
        run={"run_id": "nan", "duration_s": inf},
        settings={"x": nan, "nested": {"y": [1.0, inf]}},
        steps=[step],
        timeline=[{**step, "t_s": nan}],
        totals={**step, "cpu": inf},
        capacity={"max_chargers": nan, "stopped_because": None, "config": {"p95_ms": inf}},
    )
    assert report["steps"][0]["actions"]["Heartbeat"] == {
        "count": 10,
        "errors": 0,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
    }
    assert report["settings"] == {"nested": {"y": [1.0, None]}, "x": None}
    assert report["run"]["duration_s"] is None and report["totals"]["cpu"] is None
    assert report["capacity"]["max_chargers"] is None
    json_path, html_path = write_reports(report, tmp_path)
    assert "NaN" not in json_path.read_text() and "Infinity" not in json_path.read_text()
    Page(html_path.read_text())
    # write_reports cleans a report that did not come from build_report, too
    raw = {"run": {"run_id": "raw", "started": "2026-05-09T00:00:00"}, "score": nan}
    json_path, _ = write_reports(raw, tmp_path)
    assert json.loads(json_path.read_text())["score"] is None


def test_module_is_pure() -> None:
    """No Locust, gevent or network libraries behind the import (a fresh process)."""
    import subprocess
    import sys

    code = (
        "import sys, loadgen.report\n"
        "bad = {'gevent', 'locust', 'socket', 'loadgen.capacity'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- any data renders -----------------------------------------------------------------------

_numbers = st.one_of(
    st.none(),
    st.integers(min_value=-(10**6), max_value=10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
)
_actions = st.dictionaries(
    st.text(min_size=1, max_size=12),
    st.fixed_dictionaries(
        {"count": _numbers, "errors": _numbers, "p50_ms": _numbers, "p95_ms": _numbers},
        optional={"p99_ms": _numbers},
    ),
    max_size=4,
)
_measurements = st.fixed_dictionaries(
    {"chargers": _numbers, "actions": _actions},
    optional={
        "connected": _numbers,
        "calls": _numbers,
        "call_errors": _numbers,
        "connect_attempts": _numbers,
        "connect_failures": _numbers,
        "unexpected_disconnects": _numbers,
        "messages_per_s": _numbers,
        "schedule_lag_p99_ms": _numbers,
        "cpu": _numbers,
        "error_codes": st.dictionaries(st.text(max_size=8), _numbers, max_size=3),
        "ok": st.one_of(st.none(), st.booleans()),
        "generator_saturated": st.booleans(),
        "reasons": st.lists(st.text(max_size=20), max_size=3),
        "t_s": _numbers,
    },
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(_measurements, max_size=6),
    timeline=st.lists(_measurements, max_size=6),
    totals=st.one_of(st.none(), _measurements),
    max_chargers=_numbers,
    p95_ms=_numbers,
)
def test_any_measurements_render(
    steps: list[dict[str, Any]],
    timeline: list[dict[str, Any]],
    totals: dict[str, Any] | None,
    max_chargers: Any,
    p95_ms: Any,
) -> None:
    """Whatever the figures (None, NaN, huge, negative, text), the report builds, its JSON
    is strict, and the page parses with nothing unescaped."""
    capacity = {
        "max_chargers": max_chargers,
        "limited_by_generator": False,
        "stopped_because": HOSTILE,
        "steps": [],
        "config": {"p95_ms": p95_ms, "max_call_error_ratio": p95_ms},
    }
    report = build_report(
        run={"run_id": HOSTILE},
        settings={},
        steps=steps,
        timeline=timeline,
        totals=totals,
        capacity=capacity,
    )
    json.dumps(report, allow_nan=False)
    html = render_html(report)
    page = Page(html)
    assert "script" not in page.tags
    assert page.tags["svg"] == (3 if timeline else 2)
    for tag, attrs in page.elements:
        if tag in ("polyline", "circle", "line", "text", "rect"):
            for name, value in attrs.items():
                if name in ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "points"):
                    assert value is not None and "nan" not in value and "inf" not in value


@pytest.mark.parametrize("count", [0, 1, 2])
def test_few_points(count: int) -> None:
    report = simulated()
    report["steps"] = report["steps"][:count]
    report["timeline"] = report["timeline"][:count]
    page = Page(render_html(report))
    series = page.series()
    if count:
        assert series["Heartbeat p95"] == [count]
    else:
        assert " ".join(page.text).count("no data") == 2
    assert all(math.isfinite(float(v)) for v in re.findall(r'cx="([^"]+)"', render_html(report)))


def test_recovery_section_round_trips_and_renders(tmp_path: Path) -> None:
    """Mass disconnects: every field present (None when unknown), odd input tolerated,
    the HTML says how long the CSMS took; no section when there was none."""
    restart = {"at_s": 300, "lost": 2000, "booted_before": 2000, "recovered_s": 41}
    restart |= {"rebooted": 1990, "peak_reboots_per_s": 96, "connect_failures": 3}
    restart |= {"boot_failures": 12}
    unfinished = {"at_s": 900, "lost": 1500, "booted_before": 1990, "recovered_s": None}
    report = build_report(
        run={"run_id": "r"},
        settings={},
        steps=[],
        timeline=[],
        totals=None,
        capacity=None,
        recovery=[restart, unfinished, "not a mapping", {"lost": float("nan")}],
    )
    assert report["recovery"][0] == restart
    assert report["recovery"][1]["rebooted"] is None
    assert report["recovery"][2] == dict.fromkeys(restart)  # every field, unknown
    json_path, html_path = write_reports(report, tmp_path)
    assert json.loads(json_path.read_text())["recovery"] == report["recovery"]
    text = " ".join(Page(html_path.read_text()).text)
    assert "Recovery after mass disconnects" in text
    assert "2,000 of 2,000" in text and "41.0 s" in text and "not by the end" in text
    assert "Recovery" not in render_html(simulated())


def test_authorizations_section_round_trips_and_renders(tmp_path: Path) -> None:
    """The CSMS's verdicts on idTokens: counts by message and status, rejections first in
    the HTML; odd rows dropped; no section without a verdict."""
    verdicts = [
        {"message": "Authorize", "status": "Accepted", "count": 1200},
        {"message": "Authorize", "status": "Invalid", "count": 31},
        {"message": "StartTransaction", "status": "Blocked", "count": 2},
    ]
    report = build_report(
        run={"run_id": "r"},
        settings={},
        steps=[],
        timeline=[],
        totals=None,
        capacity=None,
        authorizations=[*verdicts, "junk", {"message": "Authorize", "count": 0}],
    )
    assert report["authorizations"] == verdicts
    json_path, html_path = write_reports(report, tmp_path)
    assert json.loads(json_path.read_text())["authorizations"] == verdicts
    text = " ".join(Page(html_path.read_text()).text)
    assert "33 rejections of 1,233 verdicts" in text
    assert text.index("Invalid") < text.index("Accepted", text.index("33 rejections"))
    assert "Authorizations" not in render_html(simulated())


def test_the_versions_the_csms_picked_round_trip_and_head_the_report(tmp_path: Path) -> None:
    """Offered several versions, the CSMS picks per connection: the headline says what it
    picked; one version offered and spoken is just "OCPP 2.1"."""
    before = {"ocpp_loadgen_connections_total": {("2.1",): 2.0, ("2.0.1",): 0.0}}
    after = {"ocpp_loadgen_connections_total": {("2.1",): 14.0, ("2.0.1",): 3.0, ("1.6",): 0.0}}
    spoken = versions_spoken(before, after)
    assert list(spoken.items()) == [("2.1", 12), ("2.0.1", 3)]  # newest first, none at 0

    def report(offered: str, versions: Any) -> dict[str, Any]:
        run = {"run_id": "r", "ocpp_version": offered, "versions_spoken": versions}
        return build_report(run=run, settings={}, steps=[], timeline=[], totals=None, capacity=None)

    mixed = report("2.1,2.0.1", {**spoken, "9.9": "junk", "1.6": 0})
    assert mixed["run"]["versions_spoken"] == {"2.1": 12, "2.0.1": 3}
    json_path, html_path = write_reports(mixed, tmp_path)
    assert json.loads(json_path.read_text())["run"]["versions_spoken"] == {"2.1": 12, "2.0.1": 3}
    text = " ".join(Page(html_path.read_text()).text)
    assert "OCPP 2.1 (12 connections), 2.0.1 (3 connections) of 2.1,2.0.1 offered" in text
    assert "OCPP 2.0.1 of 2.1,2.0.1 offered" in render_html(report("2.1,2.0.1", {"2.0.1": 4}))
    plain_run = render_html(report("2.1", {"2.1": 4}))
    assert "OCPP 2.1" in plain_run and "offered" not in plain_run
    assert report("2.1", None)["run"]["versions_spoken"] == {}  # a run without the metric


def test_connect_rate_steps_are_charted(tmp_path: Path) -> None:
    """A real :class:`RateSearch` against a CSMS booting 20 chargers a second: each rate
    step's figures reach the JSON report, and the page draws them against the rate."""
    config = dataclasses.replace(_config(), mode="both", rate_start=5.0, rate_step_chargers=60)
    rates = RateSearch(config)
    while (rate := rates.next_rate()) is not None:
        rates.record(rate_step(rate, config, 20.0))
    answer, why, _ = rates.answer()
    report = simulated()
    result = dataclasses.replace(
        CapacityResult(1000, False, "refined by bisection", []),
        max_connect_rate=answer,
        connect_rate_stopped_because=why,
        connect_rate_steps=list(rates.steps),
        connect_rate_figures=list(rates.figures),
    )
    report = build_report(
        run=report["run"],
        settings={},
        steps=report["steps"],
        timeline=report["timeline"],
        totals=report["totals"],
        capacity=capacity_dict(result, config),
    )
    json_path, _ = write_reports(report, tmp_path)
    steps = json.loads(json_path.read_text())["capacity"]["connect_rate_steps"]
    assert [s["rate"] for s in steps] == [rate for rate, _ in rates.steps]
    for step in steps:
        assert step["chargers"] == 60 and step["booted"] == 60
        # the boot rate each step says the CSMS kept: 20/s where a backlog showed it
        if not step["ok"]:
            assert step["admitted_per_s"] == pytest.approx(20.0, rel=0.02), step
        assert step["boot_p95_ms"] > 0 and step["last_boot_s"] > 0
    page = Page(render_html(report))
    assert page.tags["svg"] == 4
    series = page.series()
    kept = sum(1 for s in steps if s["ok"] and s["admitted_per_s"] is not None)
    assert series["kept pace: booted/s"] == [kept]
    assert series["did not: booted/s"] == [sum(1 for s in steps if not s["ok"])]
    assert series["offered"] == [len(steps)]
    assert series["p95 BootNotification ms (right axis)"] == [len(steps)]
    assert "Connect rate (each rate step)" in " ".join(page.text)
    # and listed: every rate step with its verdict, the failed ones' reasons in words
    html = render_html(report)
    table = html[html.index('<section id="rate-steps">') :]
    table = table[: table.index("</section>")]
    assert table.count("<tbody") == len(steps)
    assert table.count('<span class="badge">answer</span>') == 1
    assert table.count('class="verdict fail"') == 2 * sum(1 for s in steps if not s["ok"])
    failed = next(s for s in steps if not s["ok"])
    assert html_escape(failed["reasons"][0]) in table
    assert '<a href="#rate-steps">' in html
    assert 'id="rate-steps"' not in render_html(simulated())  # not searched: no section


# -- a plain run (no capacity search) ---------------------------------------------------------

PLAIN_WINDOWS = 12


def plain_run() -> dict[str, Any]:
    """A plain run's report, as the recorder builds it from loadgen.timeline: 12 windows of
    5 s ramping to 300 chargers; the CSMS refuses connects from 20 s, sends a malformed
    frame at 30 s and rejects two idTokens at 40 s."""
    timeline = []
    for i in range(1, PLAIN_WINDOWS + 1):
        connected = min(300, 30 * i)
        failing = i > 4
        actions = {
            "Heartbeat": ActionStats(20 * i, 40.0 + i, 90.0 + 5 * i, 150.0 + 10 * i),
            "BootNotification": ActionStats(30, 200.0, 450.0, 800.0, errors=int(failing)),
        }
        window = StepMeasurement(
            chargers=300,
            actions=actions,
            call_errors=int(failing),
            connect_attempts=30,
            connect_failures=3 if failing else 0,
            messages_per_s=1550.3 + i,
            connected=connected,
            booted=max(0, connected - 10),
            seconds=5.0,
            error_codes={"InternalError": 1} if failing else {},
        ).to_dict()
        window |= {"t_s": 5.0 * i, "protocol_errors": int(i == 7), "schema_violations": 0}
        window["rejections"] = 2 if i == 9 else 0
        timeline.append(window)
    first = [
        ("connect_failures", "http_503", "connect failed: http_503", 20.0, 25.0, 3),
        ("call_errors", "BootNotification InternalError", "CALLERROR: x", 20.0, 25.0, 1),
        ("protocol_errors", "malformed_frame", "protocol error: malformed_frame", 30, 35, 1),
        ("rejections", "Authorize Invalid", "idToken rejected: Authorize Invalid", 40, 45, 2),
    ]
    totals = StepMeasurement(
        chargers=300,
        actions={"Heartbeat": ActionStats(1560, 45.0, 120.0, 260.0)},
        call_errors=8,
        connect_attempts=360,
        connect_failures=24,
        messages_per_s=1550.3,
        seconds=60.0,
    )
    return build_report(
        run={"run_id": "plain-1", "started": STARTED, "duration_s": 60.0, "exit_code": 1},
        settings={
            "fleet_size": 400,
            "ocpp_validate": True,
            "capacity_step": "x1.5",
            "slo_p95_ms": 1000.0,
            "heartbeat_interval": 0.0,
        },
        settings_not_applied=["capacity_step", "slo_p95_ms", "not-a-setting"],
        steps=[],
        timeline=timeline,
        totals=totals.to_dict(),
        capacity=None,
        problems={
            "first": [
                {"category": c, "label": label, "what": what, "from_s": a, "t_s": b, "count": n}
                for c, label, what, a, b, n in first
            ],
            "counts": {
                "connect_failures": {"http_503": 24},
                "call_errors": {"BootNotification InternalError": 8},
                "rejections": {"Authorize Invalid": 2},
                "schema_violations": {},
                "protocol_errors": {"malformed_frame": 1},
                "disconnects": {"closed_by_server": 5},
            },
        },
    )


def test_a_plain_run_explains_itself(tmp_path: Path) -> None:
    """No search: the page opens with the chargers connected and the first problem, then
    what went wrong first, the run over time, totals and problems; settings that did not
    apply are folded away; the JSON round-trips."""
    report = plain_run()
    assert report["settings_not_applied"] == ["capacity_step", "slo_p95_ms"]
    assert report["problems"]["counts"]["schema_violations"] == {}
    assert report["timeline"][6]["protocol_errors"] == 1
    json_path, html_path = write_reports(report, tmp_path)
    loaded = json.loads(json_path.read_text())
    assert loaded == report
    html = html_path.read_text()
    assert render_html(loaded) == html
    page = Page(html)
    text = " ".join(page.text)
    assert "300 chargers connected of 300 asked for, 290 booted" in text
    assert "First problem, between 20 and 25.0 s: connect failed: http_503" in text
    assert "(and 3 more kinds, below)" in text
    assert "No capacity search in this run" not in text
    order = [html.index(f'id="{name}"') for name in ("answer", "first-problems", "over-time")]
    order += [html.index(f'id="{name}"') for name in ("totals", "problems", "run")]
    assert order == sorted(order)
    assert 'id="slos"' not in html and 'id="steps"' not in html
    # the run over time: latency per action (p50, p95, p99), failures, connected and booted
    series = page.series()
    for action in ("Heartbeat", "BootNotification"):
        for quantile in ("p50", "p95", "p99"):
            assert series[f"{action} {quantile}"] == [PLAIN_WINDOWS]
    for label in ("chargers connected", "chargers booted", "CALL errors", "connect failures"):
        assert series[label] == [PLAIN_WINDOWS]
    assert series["protocol errors"] == [PLAIN_WINDOWS]
    assert "against chargers" not in text  # a ramp is not a load curve
    # the problems, counted by kind
    for shown in ("Connect failures", "http_503", "Protocol errors", "malformed_frame"):
        assert shown in text
    assert "Rejected idTokens" in text and "Disconnect reasons" in text
    assert "Schema violations" not in text  # none counted: no empty table
    assert "checked against the OCPP schemas (--ocpp-validate)" in text
    # numbers for people: separators, no exponents
    assert "1,550" in text
    assert not re.search(r"\de[+-]\d", html)
    # settings: what applied shown, the rest folded away in a <details>
    folded = html.index('id="settings-not-applied"')
    assert html.index(">fleet_size<") < folded < html.index(">capacity_step<")
    assert html.index(">slo_p95_ms<") > folded
    assert "2 more, unset or of features this run did not use" in text
    _no_network(html)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (1550.3, "1,550"),
        (0.0042, "0.0042"),
        (12.345, "12.3"),
        (1e-9, "0.000000001"),
        (2, "2"),
        (10_000_000.5, "10,000,000"),
        (None, "–"),  # noqa: RUF001
    ],
)
def test_numbers_for_people(value: Any, shown: str) -> None:
    from loadgen.report import format as fmt

    assert fmt.figure(value) == shown


def test_settings_that_did_not_apply() -> None:
    from loadgen.report.applied import not_applied

    plain = {"fleet": "", "fleet_size": 10, "capacity_step": "x2", "slo_p95_ms": 1000.0}
    plain |= {"blackout_at": 0.0, "blackout_for": 5.0, "num_users": 10, "ocpp_validate": False}
    plain |= {"master": False, "expect_workers": 1}
    assert not_applied(plain) == [
        "blackout_at",
        "blackout_for",
        "capacity_step",
        "expect_workers",
        "fleet",
        "master",
        "slo_p95_ms",
    ]
    search = {**plain, "capacity_search": "chargers", "connect_rate_start": 5.0}
    search |= {"fleet": "fleet.toml", "ocpp_profile": "idle", "session_stay": 60.0}
    assert not_applied(search) == [
        "blackout_at",
        "blackout_for",
        "connect_rate_start",
        "expect_workers",
        "fleet_size",
        "master",
        "num_users",
        "session_stay",
    ]
    assert not_applied({"check_slo": True, "slo_p95_ms": 1.0, "capacity_max": 9}) == [
        "capacity_max"
    ]
