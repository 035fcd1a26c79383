"""The HTML page: the answer first, then the run, its SLOs, steps, totals and charts.

Every string that came from the run (action names, reasons, error codes, settings, the
host) is escaped: a CSMS chooses its error codes and a fleet file its names, and neither
may inject markup into the page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.report import figures, model
from loadgen.report import format as fmt

_CSS = """
:root { --ok: #2e7d32; --fail: #c62828; --sat: #8e24aa; --muted: #666; --line: #ddd; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
  max-width: 1240px; padding: 16px 24px 48px; color: #222; font-size: 14px; }
h1 { font-size: 22px; margin: 8px 0 2px; } h2 { font-size: 18px; margin: 28px 0 8px;
  border-bottom: 1px solid var(--line); padding-bottom: 4px; } h3 { font-size: 15px; }
.host, .facts, figcaption, .note { color: var(--muted); }
.mono, td, th { font-variant-numeric: tabular-nums; }
.headline { border: 2px solid var(--line); border-left-width: 10px; border-radius: 6px;
  padding: 12px 18px; margin: 16px 0; background: #fafafa; }
.headline.ok { border-color: var(--ok); } .headline.fail { border-color: var(--fail); }
.headline.generator { border-color: var(--sat); background: #fbf3fd; }
.answer-line { font-size: 24px; font-weight: 700; margin: 4px 0; overflow-wrap: anywhere; }
.headline .why { margin: 4px 0; overflow-wrap: anywhere; }
nav a { margin-right: 14px; color: #1a5fb4; }
table { border-collapse: collapse; margin: 6px 0 14px; }
th, td { border: 1px solid var(--line); padding: 3px 7px; text-align: right;
  vertical-align: top; }
th { background: #f3f3f3; } thead th { position: sticky; top: 0; }
td.text, th.text, .kv th, .kv td { text-align: left; }
.kv th { font-weight: 600; white-space: nowrap; }
.grid2 { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
.steps tbody:nth-of-type(even) td { background: #f8f9fb; }
.steps tbody.answer td { background: #edf7ee; }
.verdict { font-weight: 700; } .verdict.ok { color: var(--ok); }
.verdict.fail { color: var(--fail); } .verdict.saturated { color: var(--sat); }
.scroll { overflow-x: auto; }
.steps { font-size: 13px; } .steps th { font-size: 12px; }
.steps th, .steps td { padding: 3px 5px; } .steps td.action-start { white-space: nowrap; }
.steps .badge { display: table; margin: 2px 0 0 auto; }
.steps .action-start { border-left: 2px solid #bbb; }
.fill { width: 0; min-width: 100%; }
.steps tr.reasons td { white-space: normal; font-size: 12px; color: #444;
  overflow-wrap: anywhere; }
.codes { display: block; font-size: 11px; color: var(--muted); }
.over { color: var(--fail); font-weight: 700; }
.badge { font-size: 11px; background: var(--ok); color: #fff; border-radius: 3px;
  padding: 0 4px; margin-left: 4px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 5px; }
figure { margin: 8px 0 24px; } figure svg { max-width: 100%; height: auto; }
svg .plot { fill: #fff; stroke: #ccc; } svg .grid { stroke: #eee; }
svg .axis { stroke: #888; } svg .tick { fill: #555; }
svg .axis-label { fill: #333; font-weight: 600; } svg .nodata { fill: #999; font-size: 20px; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""


def _headline(report: Mapping[str, Any]) -> str:
    """The answer first: how many chargers held, or why there is no CSMS figure."""
    capacity = report["capacity"]
    run = report["run"]
    facts = " · ".join(
        fact
        for fact in (
            f"OCPP {fmt.esc(run['ocpp_version'])}" if run.get("ocpp_version") else "",
            f"profile {fmt.esc(run['profile'])}" if run.get("profile") else "",
            f"{fmt.count(run.get('workers'))} workers" if model.as_int(run.get("workers")) else "",
            f"ran {fmt.duration(run.get('duration_s'))}"
            if model.as_number(run.get("duration_s"))
            else "",
            f"exit code {run['exit_code']}"
            if model.as_int(run.get("exit_code")) is not None
            else "",
        )
        if fact
    )
    lines: list[str] = []
    if capacity is None:
        css = "none"
        lines.append('<p class="answer-line">No capacity search in this run</p>')
        totals = report["totals"]
        if totals:
            error = fmt.pct(fmt.ratio(totals["call_errors"], totals["calls"]))
            lines.append(
                f'<p class="why">{fmt.count(totals["calls"])} CALLs, CALL error ratio {error}.</p>'
            )
    else:
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
        lines.append(_connect_rate_line(capacity))
    if facts:
        lines.append(f'<p class="facts">{facts}</p>')
    return f'<section class="headline {css}" id="answer">{"".join(lines)}</section>'


def _connect_rate_line(capacity: Mapping[str, Any]) -> str:
    """The second capacity beside the first: new chargers per second admitted in time."""
    rate = capacity.get("max_connect_rate")
    why = fmt.esc(capacity.get("connect_rate_stopped_because") or "not searched")
    if rate is None:
        return f'<p class="why" id="connect-rate">Connect rate: no answer ({why})</p>'
    return (
        f'<p class="answer-line" id="connect-rate">{rate:.3g} new chargers per second '
        f'connected and booted within the connect SLOs</p><p class="why">Why: {why}</p>'
    )


def _run_section(report: Mapping[str, Any]) -> str:
    run = dict(report["run"])
    names = {
        "run_id": "run id",
        "host": "CSMS",
        "ocpp_version": "OCPP version",
        "profile": "profile",
        "workers": "workers",
        "started": "started",
        "ended": "ended",
        "duration_s": "duration",
        "exit_code": "exit code",
        "locust_version": "Locust",
        "loadgen_version": "ocpp-loadgen",
    }
    pairs = []
    for key, value in run.items():
        shown = fmt.duration(value) if key == "duration_s" else fmt.setting_text(value)
        pairs.append((fmt.esc(names.get(key, key)), fmt.esc(shown)))
    settings = report["settings"]
    setting_pairs = [
        (fmt.esc(key), fmt.esc(fmt.setting_text(value))) for key, value in settings.items()
    ]
    settings_html = (
        fmt.key_values(setting_pairs) if setting_pairs else '<p class="note">none recorded</p>'
    )
    return (
        '<section id="run"><h2>Run and settings</h2><div class="grid2">'
        f"<div><h3>Run</h3>{fmt.key_values(pairs)}</div>"
        f"<div><h3>Settings</h3>{settings_html}</div></div></section>"
    )


def _limit(value: Any, unit: str = "") -> str:
    number = model.as_number(value)
    return "off" if number is None else f"{fmt.figure(number, 6)}{unit}"


def _ratio_limit(value: Any) -> str:
    number = model.as_number(value)
    return "off" if number is None else fmt.pct(number)


def _slo_section(report: Mapping[str, Any]) -> str:
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


def _p95_slo(config: Mapping[str, Any], action: str) -> float | None:
    overrides = config.get("p95_ms_by_action")
    if isinstance(overrides, dict) and model.as_number(overrides.get(action)) is not None:
        return model.as_number(overrides[action])
    return model.as_number(config.get("p95_ms"))


def _latency_cells(action: str, stats: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    slo = _p95_slo(config, action)
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
        reasons = "; ".join(fmt.esc(reason) for reason in step["reasons"])
        rows.append(
            # the <div> keeps the sentences from widening the columns (it wraps instead)
            f'<tr class="reasons"><td></td><td class="text" colspan="{len(_STEP_HEAD) - 1}">'
            f'<div class="fill"><span class="verdict {css}">{label}</span>: {reasons}</div>'
            "</td></tr>"
        )
    cls = ' class="answer"' if answer else ""
    return f"<tbody{cls}>{''.join(rows)}</tbody>"


def _steps_section(report: Mapping[str, Any], colours: Mapping[str, str]) -> str:
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


def _totals_section(report: Mapping[str, Any], colours: Mapping[str, str]) -> str:
    totals = report["totals"]
    if not totals:
        return '<section id="totals"><h2>Totals</h2><p class="note">No totals.</p></section>'
    config = (report["capacity"] or {}).get("config") or {}
    connect_ratio = fmt.ratio(totals["connect_failures"], totals["connect_attempts"])
    summary = [
        ("measured", fmt.duration(totals["seconds"])),
        ("CALLs", fmt.count(totals["calls"])),
        (
            "CALL errors",
            f"{fmt.count(totals['call_errors'])} "
            f"({fmt.pct(fmt.ratio(totals['call_errors'], totals['calls']))})",
        ),
        (
            "connect failures",
            f"{fmt.count(totals['connect_failures'])} of {fmt.count(totals['connect_attempts'])} "
            f"attempts ({fmt.pct(connect_ratio)})",
        ),
        ("unexpected disconnects", fmt.count(totals["unexpected_disconnects"])),
        ("messages/s", fmt.figure(totals["messages_per_s"])),
        ("schedule lag p99", fmt.with_unit(fmt.ms(totals["schedule_lag_p99_ms"]), " ms")),
        ("load-generator CPU", fmt.figure(totals["cpu"])),
    ]
    rows = []
    for action, stats in totals["actions"].items():
        swatch = f'<span class="swatch" style="background:{colours[action]}"></span>'
        slo = _p95_slo(config, action)
        rows.append(
            [
                f"{swatch}{fmt.esc(action)}",
                fmt.count(stats["count"]),
                fmt.count(stats["errors"]),
                fmt.pct(fmt.ratio(stats["errors"], stats["count"])),
                fmt.ms(stats["p50_ms"]),
                fmt.ms(stats["p95_ms"]),
                fmt.ms(stats["p99_ms"]),
                fmt.DASH if slo is None else fmt.ms(slo),
            ]
        )
    head = ["action", "CALLs", "errors", "error %", "p50 ms", "p95 ms", "p99 ms", "p95 SLO ms"]
    actions = fmt.table(head, rows, "actions") if rows else '<p class="note">No CALLs.</p>'
    codes = [(fmt.esc(code), fmt.count(n)) for code, n in totals["error_codes"].items()]
    codes_html = (
        f"<div><h3>CALL errors by code</h3>{fmt.table(['code', 'CALLs'], codes)}</div>"
        if codes
        else ""
    )
    return (
        '<section id="totals"><h2>Totals over the run</h2><div class="grid2">'
        f"<div><h3>Summary</h3>{fmt.key_values((fmt.esc(k), fmt.esc(v)) for k, v in summary)}</div>"
        f"<div><h3>Per action</h3>{actions}</div>{codes_html}</div></section>"
    )


def _charts_section(report: Mapping[str, Any], colours: Mapping[str, str]) -> str:
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


def _recovery_section(report: Mapping[str, Any]) -> str:
    """Mass disconnects (a CSMS restart, an outage, ``--blackout-at``) and how long the
    CSMS took to take its chargers back; nothing when there was none."""
    events = report.get("recovery") or []
    if not events:
        return ""
    rows = [
        (
            fmt.duration(item["at_s"]),
            f"{fmt.count(item['lost'])} of {fmt.count(item['booted_before'])}",
            fmt.duration(item["recovered_s"])
            if item["recovered_s"] is not None
            else f"not by the end ({fmt.count(item['rebooted'])} back)",
            fmt.count(item["peak_reboots_per_s"]),
            fmt.count(item["connect_failures"]),
            fmt.count(item["boot_failures"]),
        )
        for item in events
    ]
    head = ("at", "chargers lost", "99 % booted again after", "peak boots/s")
    return (
        '<section id="recovery"><h2>Recovery after mass disconnects</h2>'
        + fmt.table((*head, "connect failures", "boot failures"), rows)
        + "</section>"
    )


def _authorizations_section(report: Mapping[str, Any]) -> str:
    """How the CSMS judged the fleet's idTokens, rejections first; nothing without a verdict."""
    rows = report.get("authorizations") or []
    if not rows:
        return ""
    rejected = sum(row["count"] for row in rows if row["status"] != "Accepted")
    total = sum(row["count"] for row in rows)
    ordered = sorted(rows, key=lambda row: (row["status"] == "Accepted", -row["count"]))
    return (
        '<section id="authorizations"><h2>Authorizations</h2>'
        f'<p class="why">{fmt.count(rejected)} rejections of {fmt.count(total)} verdicts on '
        "idTokens "
        "(a rejected Authorize starts no transaction; a rejected TransactionEvent / "
        "StartTransaction ends it, DeAuthorized).</p>"
        + fmt.table(
            ("message", "status", "count"),
            (
                (fmt.esc(row["message"]), fmt.esc(row["status"]), fmt.count(row["count"]))
                for row in ordered
            ),
        )
        + "</section>"
    )


_FORMAT = f"{model.REPORT_KIND} v{model.REPORT_VERSION}"


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one HTML page that needs nothing else: open it from a file, offline.

    Takes :func:`build_report`'s result, or the same read back from the JSON file.
    """
    report = model.build_report(
        run=report.get("run") or {},
        settings=report.get("settings") or {},
        steps=report.get("steps") or [],
        timeline=report.get("timeline") or [],
        totals=report.get("totals"),
        capacity=report.get("capacity"),
        recovery=report.get("recovery") or [],
        authorizations=report.get("authorizations") or [],
    )
    run = report["run"]
    colours = figures.action_colours(report)
    run_id = fmt.esc(run["run_id"] or "(no run id)")
    host = fmt.esc(run["host"] or "(unknown CSMS)")
    versions = f"ocpp-loadgen {fmt.esc(run['loadgen_version'] or '?')}"
    if run["locust_version"]:
        versions += f" on Locust {fmt.esc(run['locust_version'])}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>OCPP load test {run_id} against {host}</title>",
            f"<style>{_CSS}</style>",
            "</head>",
            "<body>",
            f'<header><h1>OCPP load test <span class="mono">{run_id}</span></h1>'
            f'<p class="host">against <span class="mono">{host}</span>'
            f"{' · started ' + fmt.esc(run['started']) if run['started'] else ''}</p></header>",
            _headline(report),
            '<nav><a href="#run">run and settings</a><a href="#slos">SLOs</a>'
            '<a href="#steps">steps</a><a href="#totals">totals</a>'
            '<a href="#charts">charts</a></nav>',
            _run_section(report),
            _slo_section(report),
            _steps_section(report, colours),
            _totals_section(report, colours),
            _recovery_section(report),
            _authorizations_section(report),
            _charts_section(report, colours),
            f"<footer>{versions} · report format {_FORMAT}</footer>",
            "</body>",
            "</html>",
            "",
        ]
    )
