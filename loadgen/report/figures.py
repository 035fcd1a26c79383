"""The report's charts: latency and errors against the load, the connect-rate steps, the
run over time; each a :func:`~loadgen.report.charts.svg_chart` of report data."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from loadgen.report import charts, model
from loadgen.report import format as fmt


def action_colours(report: Mapping[str, Any]) -> dict[str, str]:
    """One colour per action, the same in every chart and table of the page."""
    names: set[str] = set()
    for item in [*report["steps"], *report["timeline"], report["totals"] or {}]:
        names.update(item.get("actions") or {})
    return {name: charts.PALETTE[i % len(charts.PALETTE)] for i, name in enumerate(sorted(names))}


def _chart_source(report: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str, str]:
    """What the per-load charts plot: the steps against their target, or without steps
    the timeline windows against the chargers connected in them."""
    if report["steps"]:
        return report["steps"], "chargers", "chargers (each step's target)"
    return report["timeline"], "connected", "chargers connected (timeline windows)"


def latency_chart(report: Mapping[str, Any], colours: Mapping[str, str]) -> str:
    source, x_key, x_label = _chart_source(report)
    actions = sorted({name for item in source for name in item["actions"]})
    series = []
    for action in actions:
        for key, dash, marker in (("p95_ms", "", 3.0), ("p99_ms", charts.P99_DASH, 2.0)):
            points = charts.plottable(
                (item[x_key], item["actions"][action][key])
                for item in source
                if action in item["actions"]
            )
            label = f"{action} {key[:3]}"
            series.append(charts.Series(label, points, colours[action], dash=dash, marker=marker))
    config = (report["capacity"] or {}).get("config") or {}
    overrides = config.get("p95_ms_by_action")
    overrides = overrides if isinstance(overrides, dict) else {}
    rules = []
    default = model.as_number(config.get("p95_ms"))
    if default is not None and (not actions or any(a not in overrides for a in actions)):
        rules.append(charts.Rule(f"p95 SLO {fmt.ms(default)} ms", default, "#333333"))
    for action in actions:
        slo = model.as_number(overrides.get(action))
        if slo is not None:
            rules.append(charts.Rule(f"p95 SLO {action} {fmt.ms(slo)} ms", slo, colours[action]))

    def describe(x: float, y: float, one: charts.Series) -> str:
        return f"{one.label}: {fmt.ms(y)} ms at {x:,.0f} chargers"

    return charts.svg_chart(
        series=series,
        rules=rules,
        x_label=x_label,
        y_label="latency (ms)",
        describe=describe,
        caption="Round trip of each OCPP action, p95 solid and p99 dashed; "
        "dotted lines are the p95 SLOs.",
    )


def _percent(value: float | None) -> float | None:
    return None if value is None else value * 100


def error_chart(report: Mapping[str, Any]) -> str:
    source, x_key, x_label = _chart_source(report)
    config = (report["capacity"] or {}).get("config") or {}
    figures = (
        ("CALL error ratio", "call_errors", "calls", "max_call_error_ratio", charts.PALETTE[2]),
        (
            "connect failure ratio",
            "connect_failures",
            "connect_attempts",
            "max_connect_failure_ratio",
            charts.PALETTE[0],
        ),
        (
            "unexpected disconnect ratio",
            "unexpected_disconnects",
            "chargers",
            "max_disconnect_ratio",
            charts.PALETTE[1],
        ),
    )
    series, rules = [], []
    for label, part, whole, slo_key, colour in figures:
        points = charts.plottable(
            (item[x_key], _percent(fmt.ratio(item[part], item[whole]))) for item in source
        )
        series.append(charts.Series(label, points, colour))
        slo = model.as_number(config.get(slo_key))
        if slo is not None and points:
            rules.append(charts.Rule(f"SLO {label} {fmt.pct(slo)}", slo * 100, colour))

    def describe(x: float, y: float, one: charts.Series) -> str:
        return f"{one.label}: {fmt.figure(y)}% at {x:,.0f} chargers"

    return charts.svg_chart(
        series=series,
        rules=rules,
        x_label=x_label,
        y_label="% of CALLs / attempts / chargers",
        describe=describe,
        caption="CALLs not answered with a CALLRESULT, failed connection attempts and "
        "connections the CSMS closed, as ratios; dotted lines are their SLOs.",
    )


def _time_axis(
    timeline: list[dict[str, Any]],
) -> tuple[Callable[[Mapping[str, Any]], float | None], str]:
    """``(at, unit)``: a window's time in seconds, or in minutes past 20 minutes."""
    longest = max((model.as_number(w["t_s"]) or 0 for w in timeline), default=0)
    scale, unit = (60.0, "min") if longest > 1200 else (1.0, "s")

    def at(window: Mapping[str, Any]) -> float | None:
        t = model.as_number(window["t_s"])
        return None if t is None else t / scale

    return at, unit


def _over_time(
    series: list[charts.Series],
    unit: str,
    y_label: str,
    caption: str,
    y_unit: str = "",
    **kw: Any,
) -> str:
    """A chart against the time since the start; ``kw`` goes to :func:`charts.svg_chart`."""

    def describe(x: float, y: float, one: charts.Series) -> str:
        return f"{one.label}: {fmt.figure(y, 4)}{y_unit} at {fmt.figure(x, 4)} {unit}"

    return charts.svg_chart(
        series=series,
        x_label=f"time since the start ({unit})",
        y_label=y_label,
        describe=describe,
        caption=caption,
        **kw,
    )


def timeline_chart(report: Mapping[str, Any]) -> str:
    """Chargers asked for, connected and booted, and messages per second, over time."""
    timeline = report["timeline"]
    at, unit = _time_axis(timeline)
    series = [
        charts.Series(
            "chargers connected",
            charts.plottable((at(w), w["connected"]) for w in timeline),
            charts.PALETTE[0],
        ),
        charts.Series(
            "chargers booted",
            charts.plottable((at(w), w["booted"]) for w in timeline),
            charts.PALETTE[1],
            dash="2 4",
            marker=2.0,
        ),
        charts.Series(
            "chargers target",
            charts.plottable((at(w), w["chargers"]) for w in timeline),
            charts.PALETTE[9],
            dash=charts.P99_DASH,
            marker=2.0,
        ),
        charts.Series(
            "messages/s (right axis)",
            charts.plottable((at(w), w["messages_per_s"]) for w in timeline),
            charts.PALETTE[4],
            right=True,
        ),
    ]
    return _over_time(
        series,
        unit,
        "chargers",
        "Chargers asked for, connected and booted (the CSMS accepted their "
        "BootNotification), and messages per second, at the end of each window.",
        y_label_right="messages/s",
    )


#: the percentiles of the latency-over-time charts, and how each line is drawn
_QUANTILES = (("p50", "p50_ms", "2 4", 2.0), ("p95", "p95_ms", "", 3.0))
_QUANTILES += (("p99", "p99_ms", charts.P99_DASH, 2.0),)


def action_latency_chart(report: Mapping[str, Any], action: str, colour: str) -> str:
    """One action's p50, p95 and p99 round trip, window by window."""
    timeline = [w for w in report["timeline"] if action in w["actions"]]
    at, unit = _time_axis(report["timeline"])
    series = [
        charts.Series(
            f"{action} {name}",
            charts.plottable((at(w), w["actions"][action][key]) for w in timeline),
            colour,
            dash=dash,
            marker=marker,
        )
        for name, key, dash, marker in _QUANTILES
    ]
    return _over_time(
        series,
        unit,
        "latency (ms)",
        f"{action}: round trip per window, p50 dotted, p95 solid, p99 dashed.",
        " ms",
    )


#: (label, the window's count, colour) of the failures-over-time chart
_FAILURES = (
    ("CALL errors", ("call_errors",), charts.PALETTE[2]),
    ("connect failures", ("connect_failures",), charts.PALETTE[0]),
    ("unexpected disconnects", ("unexpected_disconnects",), charts.PALETTE[1]),
    ("protocol errors", ("protocol_errors", "schema_violations"), charts.PALETTE[6]),
    ("rejected idTokens", ("rejections",), charts.PALETTE[8]),
)


def failures_chart(report: Mapping[str, Any]) -> str:
    """What failed in each window, as counts."""
    timeline = report["timeline"]
    at, unit = _time_axis(timeline)

    def total(window: Mapping[str, Any], keys: tuple[str, ...]) -> int | None:
        values = [window.get(key) for key in keys]
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    series = [
        charts.Series(label, charts.plottable((at(w), total(w, keys)) for w in timeline), colour)
        for label, keys, colour in _FAILURES
    ]
    return _over_time(
        series,
        unit,
        "count in the window",
        "CALLs not answered with a CALLRESULT, failed connection attempts, connections the "
        "CSMS closed or lost, protocol errors and schema violations, idTokens the CSMS "
        "rejected: each point counts the window before it.",
    )


def rate_chart(report: Mapping[str, Any]) -> str:
    """The connect-rate steps: what the CSMS booted against what was offered, and the
    ramp's BootNotification p95 against its SLO."""
    capacity = report["capacity"] or {}
    steps = sorted(
        (s for s in capacity.get("connect_rate_steps") or [] if s["rate"] is not None),
        key=lambda s: s["rate"],
    )
    series = []
    for label, ok, colour in (
        ("kept pace: booted/s", True, charts.PALETTE[0]),
        ("did not: booted/s", False, charts.PALETTE[2]),
    ):
        points = charts.plottable((s["rate"], s["admitted_per_s"]) for s in steps if s["ok"] is ok)
        series.append(charts.Series(label, points, colour, dash="2 6", marker=5.0))
    offered = charts.plottable((s["rate"], s["rate"]) for s in steps)
    series.append(
        charts.Series("offered", offered, charts.PALETTE[9], dash=charts.P99_DASH, marker=2.0)
    )
    series.append(
        charts.Series(
            "p95 BootNotification ms (right axis)",
            charts.plottable((s["rate"], s["boot_p95_ms"]) for s in steps),
            charts.PALETTE[4],
            right=True,
        )
    )
    slo = model.as_number((capacity.get("config") or {}).get("boot_p95_ms"))
    rules = (
        [charts.Rule(f"SLO boot p95 {fmt.ms(slo)} ms", slo, charts.PALETTE[4], right=True)]
        if slo
        else []
    )

    def describe(x: float, y: float, one: charts.Series) -> str:
        return f"{one.label}: {fmt.figure(y, 4)} at {fmt.figure(x, 4)} chargers/s offered"

    return charts.svg_chart(
        series=series,
        rules=rules,
        x_label="new chargers per second offered (each rate step)",
        y_label="chargers/s booted",
        y_label_right="ms",
        describe=describe,
        caption="Per rate step, the boot rate the CSMS kept (from when its last boot was "
        "answered; none where nothing had to wait), green where it kept pace; the offered "
        "rate for reference; the ramp's BootNotification p95.",
    )
