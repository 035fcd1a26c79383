"""A plain run's part of the page (no capacity search): what happened, over time.

A plain run has no steps and no verdict to explain it, so its page answers what a person
asks of one: how many chargers connected and booted, what went wrong first and when, and
how latency and failures moved while the run went on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.report import figures
from loadgen.report import format as fmt


def _most(report: Mapping[str, Any], key: str) -> int | None:
    values = [w[key] for w in report["timeline"] if w.get(key) is not None]
    return max(values) if values else None


def headline(report: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(css class, lines) of the page's opening box for a plain run."""
    lines = []
    connected, booted = _most(report, "connected"), _most(report, "booted")
    target = _most(report, "chargers")
    if connected is None and target is None:
        lines.append('<p class="answer-line">Plain run (no capacity search)</p>')
    else:
        asked = f" of {fmt.count(target)} asked for" if target is not None else ""
        lines.append(
            f'<p class="answer-line">{fmt.count(connected)} chargers connected{asked}, '
            f"{fmt.count(booted)} booted</p>"
        )
        lines.append('<p class="why">The most at once during the run (no capacity search).</p>')
    totals = report["totals"]
    if totals:
        error = fmt.pct(fmt.ratio(totals["call_errors"], totals["calls"]))
        lines.append(
            f'<p class="why">{fmt.count(totals["calls"])} CALLs, CALL error ratio {error}.</p>'
        )
    first = report["problems"]["first"]
    if first:
        one = first[0]
        more = len(first) - 1
        others = f" (and {more} more kind{'s' if more > 1 else ''}, below)" if more else ""
        lines.append(
            f'<p class="why">First problem, {_when(one)}: {fmt.esc(one["what"])}{others}.</p>'
        )
        return "warn", lines
    lines.append(
        '<p class="why">No problem recorded: no failed connect, CALL error, rejected idToken, '
        "protocol error or unexpected disconnect.</p>"
    )
    return "ok", lines


def _when(problem: Mapping[str, Any]) -> str:
    """The window a problem first showed in: ``between 5 and 10 s``."""
    start, end = problem.get("from_s"), problem.get("t_s")
    if end is None:
        return "at an unknown time"
    if start is None:
        return f"by {fmt.duration(end)}"
    return f"between {fmt.figure(start)} and {fmt.duration(end)}"


def first_problems_section(report: Mapping[str, Any]) -> str:
    """The earliest distinct problems, in the order they appeared, with their window."""
    problems = report["problems"]
    first = problems["first"]
    if not first:
        return (
            '<section id="first-problems"><h2>What went wrong first</h2>'
            '<p class="note">Nothing: no problem was recorded during the run.</p></section>'
        )
    counts = problems["counts"]
    rows = [
        (
            fmt.esc(_when(item)),
            fmt.esc(item["what"]),
            fmt.count(item["count"]),
            fmt.count((counts.get(item["category"]) or {}).get(item["label"])),
        )
        for item in first
    ]
    return (
        '<section id="first-problems"><h2>What went wrong first</h2>'
        '<p class="note">Each distinct problem once, in the order it first appeared (to '
        "within a window of the timeline); the counts by kind are under Problems.</p>"
        + fmt.table(("when", "what", "in that window", "over the run"), rows, "first")
        + "</section>"
    )


def over_time_section(report: Mapping[str, Any], colours: Mapping[str, str]) -> str:
    """Chargers, failures and every action's latency, window by window."""
    timeline = report["timeline"]
    seconds = sorted(w["seconds"] for w in timeline if w.get("seconds"))
    typical = seconds[len(seconds) // 2] if seconds else None  # the median: not the last
    window = f"windows of about {fmt.duration(typical)}" if typical else "windows"
    actions = sorted({name for w in timeline for name in w["actions"]})
    parts = [
        '<section id="over-time"><h2>Over time</h2>',
        f'<p class="note">{len(timeline)} {window} (a long run merges its older windows).</p>',
        "<h3>Chargers connected and booted</h3>",
        figures.timeline_chart(report),
        "<h3>Failures</h3>",
        figures.failures_chart(report),
        "<h3>Latency per action</h3>",
    ]
    if not actions:
        parts.append('<p class="note">No CALLs.</p>')
    for action in actions:
        parts.append(figures.action_latency_chart(report, action, colours[action]))
    parts.append("</section>")
    return "".join(parts)
