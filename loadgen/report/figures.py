"""The report's charts: latency and errors against the load, the connect-rate steps, the
run over time; each a :func:`~loadgen.report.charts.svg_chart` of report data."""

from __future__ import annotations

from collections.abc import Mapping
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
        return f"{one.label}: {y:.3g}% at {x:,.0f} chargers"

    return charts.svg_chart(
        series=series,
        rules=rules,
        x_label=x_label,
        y_label="% of CALLs / attempts / chargers",
        describe=describe,
        caption="CALLs not answered with a CALLRESULT, failed connection attempts and "
        "connections the CSMS closed, as ratios; dotted lines are their SLOs.",
    )


def timeline_chart(report: Mapping[str, Any]) -> str:
    timeline = report["timeline"]
    longest = max((model.as_number(w["t_s"]) or 0 for w in timeline), default=0)
    scale, unit = (60.0, "min") if longest > 1200 else (1.0, "s")

    def at(window: Mapping[str, Any]) -> float | None:
        t = model.as_number(window["t_s"])
        return None if t is None else t / scale

    series = [
        charts.Series(
            "chargers connected",
            charts.plottable((at(w), w["connected"]) for w in timeline),
            charts.PALETTE[0],
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

    def describe(x: float, y: float, one: charts.Series) -> str:
        return f"{one.label}: {y:,.4g} at {x:,.4g} {unit}"

    return charts.svg_chart(
        series=series,
        x_label=f"time since the start ({unit})",
        y_label="chargers",
        y_label_right="messages/s",
        describe=describe,
        caption="Chargers connected (and asked for) and messages per second, per window.",
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
        return f"{one.label}: {y:,.4g} at {x:,.4g} chargers/s offered"

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
