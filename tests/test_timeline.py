"""The report's run over time (loadgen/timeline.py): windows and first problems measured from
a master's merged views of two real workers' collectors, fed through their observers."""

from __future__ import annotations

import pytest

from loadgen import link as links
from loadgen.metrics.collectors import Metrics
from loadgen.metrics.merge import MergedCollector
from loadgen.metrics.observer import MetricsObserver
from loadgen.timeline import Timeline, merge_windows, problem_counts
from tests.test_metrics import shipped


class Fleet:
    """A master and two workers; :meth:`view` is what the master sees after both reported."""

    def __init__(self) -> None:
        self.workers = {name: Metrics(worker=name) for name in ("w1", "w2")}
        self.observers = {name: MetricsObserver(m) for name, m in self.workers.items()}
        self.merged = MergedCollector(Metrics(worker="master"))

    def view(self) -> dict:
        for name, metrics in self.workers.items():
            self.merged.update(name, shipped(metrics))
        return self.merged.merged()

    def connect(self, worker: str, n: int, *, booted: int) -> None:
        for _ in range(n):
            self.observers[worker].connect_done("ok", 0.01)
        self.workers[worker].chargers_booted.inc(booted)

    def calls(self, worker: str, action: str, seconds: float, n: int) -> None:
        for _ in range(n):
            self.observers[worker].call_done(action, "result", seconds, None)
            self.observers[worker].message("sent", "call")
            self.observers[worker].message("received", "result")


def test_windows_follow_the_run_and_the_first_problems_keep_their_window() -> None:
    fleet = Fleet()
    fleet.observers["w1"].connect_done("refused", 0.01)  # before the start: not this run's
    timeline = Timeline(window=5.0)
    timeline.start(100.0, fleet.view())

    fleet.connect("w1", 3, booted=2)
    fleet.connect("w2", 2, booted=2)
    fleet.calls("w1", "BootNotification", 0.05, 3)
    fleet.calls("w2", "BootNotification", 0.05, 2)
    first = timeline.sample(105.0, fleet.view(), target=10)
    assert first is not None
    assert (first["t_s"], first["seconds"], first["chargers"]) == (5.0, 5.0, 10)
    assert (first["connected"], first["booted"]) == (5, 4)
    assert first["actions"]["BootNotification"]["count"] == 5
    assert first["connect_failures"] == 0 and first["protocol_errors"] == 0

    # the second window: a timeout on one worker, a refused connect and a malformed frame
    # on the other, a rejected idToken and a schema violation
    w1, w2 = fleet.observers["w1"], fleet.observers["w2"]
    w1.call_done("Heartbeat", "timeout", 30.0, None)
    w2.connect_done("refused", 0.01)
    w2.connect_done("refused", 0.01)
    w2.protocol_error("malformed_frame")
    w1.protocol_error("invalid_result")
    fleet.workers["w1"].authorizations.labels("Invalid", "Authorize").inc()
    fleet.calls("w1", "Heartbeat", 0.02, 4)
    second = timeline.sample(110.0, fleet.view(), target=10)
    assert second is not None
    assert (second["connect_attempts"], second["connect_failures"]) == (2, 2)
    assert second["call_errors"] == 1 and second["error_codes"] == {"timeout": 1}
    assert (second["protocol_errors"], second["schema_violations"], second["rejections"]) == (
        1,
        1,
        1,
    )

    # the third: a repeat of a known problem and one new one
    w2.connect_done("refused", 0.01)
    w1.disconnected("closed_by_server")
    assert timeline.sample(115.0, fleet.view(), target=10) is not None
    assert timeline.sample(115.2, fleet.view(), target=10) is None  # nothing to measure

    problems = timeline.problems(fleet.view())
    first_problems = [
        (p["category"], p["label"], p["from_s"], p["t_s"], p["count"]) for p in problems["first"]
    ]
    assert first_problems == [
        ("connect_failures", "refused", 5.0, 10.0, 2),
        ("timeouts", "Heartbeat", 5.0, 10.0, 1),
        ("rejections", "Authorize Invalid", 5.0, 10.0, 1),
        ("schema_violations", "invalid_result", 5.0, 10.0, 1),
        ("protocol_errors", "malformed_frame", 5.0, 10.0, 1),
        ("disconnects", "closed_by_server", 10.0, 15.0, 1),
    ]
    assert problems["first"][0]["what"] == "connect failed: refused"
    counts = problems["counts"]
    assert counts["connect_failures"] == {"refused": 3}  # the one before the start is not
    assert counts["disconnects"] == {"closed_by_server": 1}
    assert counts["rejections"] == {"Authorize Invalid": 1}
    assert counts["coordination_failures"] == {}
    assert len(timeline.windows()) == 3


def test_rejected_id_tokens_and_closed_locally_are_told_apart() -> None:
    metrics = Metrics()
    metrics.authorizations.labels("Invalid", "Authorize").inc(2)
    metrics.authorizations.labels("Accepted", "Authorize").inc(5)
    observer = MetricsObserver(metrics)
    observer.disconnected(links.CLOSED_LOCALLY)
    observer.disconnected("connection_lost")
    observer.call_done("TransactionEvent", "error", 0.1, "SecurityError")
    observer.call_done("Heartbeat", "disconnected", 0.1, None)
    counts = problem_counts(MergedCollector(metrics).merged())
    assert counts == {
        ("rejections", "Authorize Invalid"): 2,
        ("disconnects", "connection_lost"): 1,
        ("call_errors", "TransactionEvent SecurityError"): 1,
        ("lost_replies", "Heartbeat"): 1,
    }


def test_memory_is_bounded_by_merging_neighbours() -> None:
    fleet = Fleet()
    timeline = Timeline(window=5.0, max_windows=4)
    timeline.start(0.0, fleet.view())
    t = 0.0
    for i in range(1, 10):  # as the recorder does: a sample every (current) window
        t += timeline.window
        fleet.calls("w1", "Heartbeat", 0.02 if i != 3 else 2.0, 10)
        timeline.sample(t, fleet.view(), target=i)
    windows = timeline.windows()
    assert len(windows) <= 4
    assert timeline.window == 40.0  # thinned at the 5th, 7th and 9th: each doubled it
    assert sum(w["actions"]["Heartbeat"]["count"] for w in windows) == 90  # nothing lost
    assert sum(w["seconds"] for w in windows) == pytest.approx(t)
    assert [w["t_s"] for w in windows] == sorted(w["t_s"] for w in windows)
    # the slow window survives the merging: the merged p95 is the worse of the two
    assert max(w["actions"]["Heartbeat"]["p95_ms"] for w in windows) >= 1000
    assert windows[-1]["chargers"] == 9


def test_merging_two_windows() -> None:
    a = {
        "seconds": 5.0,
        "calls": 10,
        "call_errors": 1,
        "messages_per_s": 4.0,
        "error_codes": {"timeout": 1},
        "actions": {"Heartbeat": {"count": 10, "errors": 1, "p50_ms": 5, "p95_ms": 9}},
        "cpu": 0.5,
        "connected": 3,
    }
    b = {
        "seconds": 15.0,
        "calls": 2,
        "call_errors": 0,
        "messages_per_s": 8.0,
        "error_codes": {"timeout": 2},
        "actions": {"Authorize": {"count": 2, "errors": 0, "p50_ms": 1, "p95_ms": None}},
        "cpu": None,
        "connected": 7,
    }
    merged = merge_windows(a, b)
    assert merged["seconds"] == 20.0 and merged["calls"] == 12 and merged["call_errors"] == 1
    assert merged["messages_per_s"] == pytest.approx((4 * 5 + 8 * 15) / 20)
    assert merged["error_codes"] == {"timeout": 3}
    assert merged["connected"] == 7 and merged["cpu"] == 0.5
    assert merged["actions"]["Heartbeat"]["p95_ms"] == 9
    assert merged["actions"]["Authorize"]["count"] == 2
