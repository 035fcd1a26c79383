"""The capacity search's part of the page: its SLOs, its steps and its charts against the
load (the headline's answers are in :mod:`.page`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.report import figures, model
from loadgen.report import format as fmt


def connect_rate_line(capacity: Mapping[str, Any]) -> str:
    """The second capacity beside the first: new chargers per second admitted in time."""
    rate = capacity.get("max_connect_rate")
    why = fmt.esc(capacity.get("connect_rate_stopped_because") or "not searched")
    if rate is None:
        return f'<p class="why" id="connect-rate">Connect rate: no answer ({why})</p>'
    return (
        f'<p class="answer-line" id="connect-rate">{fmt.figure(rate)} new chargers per second '
        f'connected and booted within the connect SLOs</p><p class="why">Why: {why}</p>'
    )


def _limit(value: Any, unit: str = "") -> str:
    number = model.as_number(value)
    return "off" if number is None else f"{fmt.figure(number, 6)}{unit}"


def _ratio_limit(value: Any) -> str:
    number = model.as_number(value)
    return "off" if number is None else fmt.pct(number)


def slo_section(report: Mapping[str, Any]) -> str:
    capacity = report["capacity"]
    if not capacity or not capacity["config"]:
        return (
            '<section id="slos"><h2>SLOs</h2>'
            '<p class="note">No capacity search ran, so no step was judged.</p></section>'
        )
    config = dict(capacity["config"])
    overrides = config.pop("p95_ms_by_action", None)
    overrides = overrides if isinstance(overrides, dict) else {}
    judged = [("p95 of every action", _limit(config.pop("p95_ms", None), " ms"))]
    judged += [(f"p95 of {name}", _limit(ms, " ms")) for name, ms in sorted(overrides.items())]
    judged += [
        ("CALL error ratio", _ratio_limit(config.pop("max_call_error_ratio", None))),
        ("connect failure ratio", _ratio_limit(config.pop("max_connect_failure_ratio", None))),
        ("unexpected disconnect ratio", _ratio_limit(config.pop("max_disconnect_ratio", None))),
    ]
    guards = [
        ("schedule lag p99", _limit(config.pop("max_schedule_lag_p99_ms", None), " ms")),
        ("CPU (1 = one core)", _limit(config.pop("max_generator_cpu", None))),
    ]
    search_names = {
        "start": "start (chargers)",
        "step": "step",
        "max_chargers": "at most (chargers)",
        "hold_seconds": "hold per step",
        "resolution": "bisection resolution",
        "resolution_ratio": "bisection resolution (fraction of the good step)",
    }
    search = []
    for key, value in config.items():
        shown = fmt.duration(value) if key == "hold_seconds" else fmt.setting_text(value)
        search.append((search_names.get(key, key), shown))

    def table(pairs: list[tuple[str, str]]) -> str:
        return fmt.key_values((fmt.esc(name), fmt.esc(value)) for name, value in pairs)

    return (
        '<section id="slos"><h2>SLOs</h2><div class="grid2">'
        f"<div><h3>A step holds when, during the hold</h3>{table(judged)}"
        '<p class="note">(each at most)</p></div>'
        f"<div><h3>Load-generator saturation guards</h3>{table(guards)}"
        '<p class="note">Over a guard: the search stops, with no CSMS figure.</p></div>'
        f"<div><h3>Search</h3>{table(search)}</div></div></section>"
    )


def p95_slo(config: Mapping[str, Any], action: str) -> float | None:
    overrides = config.get("p95_ms_by_action")
    if isinstance(overrides, dict) and model.as_number(overrides.get(action)) is not None:
        return model.as_number(overrides[action])
    return model.as_number(config.get("p95_ms"))


def _latency_cells(action: str, stats: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    slo = p95_slo(config, action)
    p95 = stats["p95_ms"]
    over = slo is not None and p95 is not None and p95 > slo
    p95_cell = f'<td class="over">{fmt.ms(p95)}</td>' if over else f"<td>{fmt.ms(p95)}</td>"
    return (
        f"<td>{fmt.count(stats['count'])}</td><td>{fmt.count(stats['errors'])}</td>"
        f"<td>{fmt.ms(stats['p50_ms'])}</td>{p95_cell}<td>{fmt.ms(stats['p99_ms'])}</td>"
    )


def _codes(codes: Mapping[str, Any]) -> str:
    if not codes:
        return ""
    text = ", ".join(f"{code} {fmt.count(n)}" for code, n in codes.items())
    return f'<span class="codes">{fmt.esc(text)}</span>'


_STEP_HEAD = (
    ("#", ""),
    ("phase", "text"),
    ("chargers", ""),
    ("connected", ""),
    ("verdict", "text"),
    ("msg/s", ""),
    ("CALLs", ""),
    ("CALL errors", ""),
    ("connect failures", ""),
    ("discon&shy;nects", ""),
    ("lag p99 ms", ""),
    ("CPU", ""),
    ("action", "text action-start"),
    ("CALLs", ""),
    ("errors", ""),
    ("p50 ms", ""),
    ("p95 ms", ""),
    ("p99 ms", ""),
)


def _step_rows(
    index: int,
    step: Mapping[str, Any],
    capacity: Mapping[str, Any],
    colours: Mapping[str, str],
) -> str:
    """One <tbody> per step: the step's figures span its rows, one row per action, then
    the verdict's reasons across the whole width (they are sentences, not figures)."""
    config = capacity.get("config") or {}
    label, css = fmt.verdict(step)
    answer = step["ok"] is True and step["chargers"] == capacity.get("max_chargers")
    chargers = fmt.count(step["chargers"]) + ('<span class="badge">answer</span>' if answer else "")
    error_ratio = fmt.pct(fmt.ratio(step["call_errors"], step["calls"]))
    failure_ratio = fmt.pct(fmt.ratio(step["connect_failures"], step["connect_attempts"]))
    actions = list(step["actions"].items()) or [("", None)]
    span = f' rowspan="{len(actions)}"' if len(actions) > 1 else ""
    shared = "".join(
        f"<td{span}{cls}>{cell}</td>"
        for cell, cls in (
            (str(index), ""),
            (fmt.esc(step["phase"] or fmt.DASH), ' class="text"'),
            (chargers, ""),
            (fmt.count(step["connected"]), ""),
            (f'<span class="verdict {css}">{label}</span>', ' class="text"'),
            (fmt.figure(step["messages_per_s"]), ""),
            (fmt.count(step["calls"]), ""),
            (f"{fmt.count(step['call_errors'])} ({error_ratio}){_codes(step['error_codes'])}", ""),
            (
                f"{fmt.count(step['connect_failures'])}/{fmt.count(step['connect_attempts'])}"
                f" ({failure_ratio})",
                "",
            ),
            (fmt.count(step["unexpected_disconnects"]), ""),
            (fmt.ms(step["schedule_lag_p99_ms"]), ""),
            (fmt.figure(step["cpu"]), ""),
        )
    )
    rows = []
    for i, (action, stats) in enumerate(actions):
        if stats is None:
            cells = '<td class="text action-start" colspan="6">no CALLs</td>'
        else:
            swatch = f'<span class="swatch" style="background:{colours[action]}"></span>'
            cells = f'<td class="text action-start">{swatch}{fmt.esc(action)}</td>'
            cells += _latency_cells(action, stats, config)
        rows.append(f"<tr>{shared if i == 0 else ''}{cells}</tr>")
    if step["reasons"]:
        rows.append(_reasons_row(step["reasons"], len(_STEP_HEAD), css, label))
    cls = ' class="answer"' if answer else ""
    return f"<tbody{cls}>{''.join(rows)}</tbody>"


def _reasons_row(reasons: list[str], columns: int, css: str, label: str) -> str:
    """A step's verdict and reasons as a row of their own under the step's figures."""
    text = "; ".join(fmt.esc(reason) for reason in reasons)
    return (
        # the <div> keeps the sentences from widening the columns (it wraps instead)
        f'<tr class="reasons"><td></td><td class="text" colspan="{columns - 1}">'
        f'<div class="fill"><span class="verdict {css}">{label}</span>: {text}</div>'
        "</td></tr>"
    )


def steps_section(report: Mapping[str, Any], colours: Mapping[str, str]) -> str:
    steps = report["steps"]
    if not steps:
        return (
            '<section id="steps"><h2>Capacity steps</h2>'
            '<p class="note">No capacity step finished in this run.</p></section>'
        )
    capacity = report["capacity"] or {}
    header = "".join(
        f'<th class="{cls}">{cell}</th>' if cls else f"<th>{cell}</th>" for cell, cls in _STEP_HEAD
    )
    bodies = "".join(
        _step_rows(i, step, capacity, colours) for i, step in enumerate(steps, start=1)
    )
    return (
        '<section id="steps"><h2>Capacity steps</h2>'
        '<p class="note">In the order they ran, each held for the configured time; the '
        "figures are over the hold. Latencies in ms; a p95 over its SLO is red.</p>"
        f'<div class="scroll"><table class="steps"><thead><tr>{header}</tr></thead>'
        f"{bodies}</table></div></section>"
    )


_RATE_HEAD = (
    ("#", ""),
    ("offered /s", ""),
    ("chargers", ""),
    ("booted", ""),
    ("verdict", "text"),
    ("booted /s", ""),
    ("boot p95 ms", ""),
    ("slowest boot ms", ""),
    ("last boot s", ""),
)


def rate_steps_section(report: Mapping[str, Any]) -> str:
    """The connect-rate search step by step, with each verdict's reasons: why a rate did
    not keep pace, met a connection ceiling or found the load generator the limit. Empty
    when the rate was not searched."""
    capacity = report["capacity"] or {}
    steps = capacity.get("connect_rate_steps") or []
    if not steps:
        return ""
    header = "".join(
        f'<th class="{cls}">{cell}</th>' if cls else f"<th>{cell}</th>" for cell, cls in _RATE_HEAD
    )
    answer_rate = capacity.get("max_connect_rate")
    bodies = []
    for index, step in enumerate(steps, start=1):
        label, css = fmt.verdict(step)
        answer = step["ok"] is True and step["rate"] == answer_rate
        offered = fmt.figure(step["rate"]) + ('<span class="badge">answer</span>' if answer else "")
        cells = "".join(
            f"<td{cls}>{cell}</td>"
            for cell, cls in (
                (str(index), ""),
                (offered, ""),
                (fmt.count(step.get("chargers")), ""),
                (fmt.count(step.get("booted")), ""),
                (f'<span class="verdict {css}">{label}</span>', ' class="text"'),
                (fmt.figure(step["admitted_per_s"]), ""),
                (fmt.ms(step["boot_p95_ms"]), ""),
                (fmt.ms(step.get("slowest_boot_ms")), ""),
                (fmt.figure(step.get("last_boot_s")), ""),
            )
        )
        rows = [f"<tr>{cells}</tr>"]
        if step["reasons"]:
            rows.append(_reasons_row(step["reasons"], len(_RATE_HEAD), css, label))
        cls = ' class="answer"' if answer else ""
        bodies.append(f"<tbody{cls}>{''.join(rows)}</tbody>")
    return (
        '<section id="rate-steps"><h2>Connect-rate steps</h2>'
        '<p class="note">In the order they ran: each started its fresh chargers at the '
        "offered rate and was judged by the connect SLOs and by whether the CSMS kept pace "
        "(booted /s: the boot rate its last boot says the CSMS kept; none where nothing had "
        "to wait). A step that met the CSMS's connection ceiling was repeated with fewer "
        "chargers and is not listed.</p>"
        f'<div class="scroll"><table class="steps"><thead><tr>{header}</tr></thead>'
        f"{''.join(bodies)}</table></div></section>"
    )


def charts_section(report: Mapping[str, Any], colours: Mapping[str, str]) -> str:
    basis = "each capacity step" if report["steps"] else "the timeline windows"
    parts = [
        '<section id="charts"><h2>Charts</h2>',
        f"<h3>Latency against chargers ({basis})</h3>",
        figures.latency_chart(report, colours),
        f"<h3>Errors against chargers ({basis})</h3>",
        figures.error_chart(report),
    ]
    if (report["capacity"] or {}).get("connect_rate_steps"):
        parts += ["<h3>Connect rate (each rate step)</h3>", figures.rate_chart(report)]
    if report["timeline"]:
        parts += ["<h3>Over time</h3>", figures.timeline_chart(report)]
    parts.append("</section>")
    return "".join(parts)


def headline(report: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(css class, lines) of the page's opening box: the search's answers."""
    capacity = report["capacity"]
    lines: list[str] = []
    why = fmt.esc(capacity["stopped_because"] or "unknown")
    most = capacity["max_chargers"]
    if capacity["limited_by_generator"]:
        css = "generator"
        lines.append(
            '<p class="answer-line">Limited by the load generator (add workers)</p>'
            f'<p class="why">No CSMS figure: {why}</p>'
        )
        held = [s["chargers"] for s in capacity["steps"] if s["ok"] and s["chargers"]]
        if held:
            lines.append(
                f'<p class="why">The CSMS held every SLO up to {max(held):,} chargers: '
                "a lower bound, not its capacity.</p>"
            )
    elif most is not None:
        css = "ok"
        lines.append(f'<p class="answer-line">{most:,} chargers held every SLO</p>')
        lines.append(f'<p class="why">Why the search stopped: {why}</p>')
        if capacity["stopped_because"].startswith("unfinished"):
            lines.append('<p class="why">The search did not finish: a lower bound.</p>')
    else:
        css = "fail"
        lines.append(f'<p class="answer-line">No CSMS figure: {why}</p>')
    lines.append(connect_rate_line(capacity))
    return css, lines
