"""The HTML page: the answer first; then, for a capacity search, the run, its SLOs, steps,
totals and charts (:mod:`.search`), for a plain run what went wrong first and the run over
time (:mod:`.plain`); the sections of both in :mod:`.sections`.

Every string that came from the run (action names, reasons, error codes, settings, the
host) is escaped: a CSMS chooses its error codes and a fleet file its names, and neither
may inject markup into the page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.report import figures, model, plain, search, sections
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
.headline.warn { border-color: #ef6c00; }
table.first td:nth-child(2) { text-align: left; }
details summary { cursor: pointer; color: var(--muted); margin: 4px 0; }
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


def _workers(count: int | None) -> str:
    if not count:
        return ""
    return "1 worker" if count == 1 else f"{fmt.count(count)} workers"


def _versions(run: Mapping[str, Any]) -> str:
    """ "OCPP 2.1"; when the CSMS picked other than the one version offered, what it picked:
    "OCPP 2.1 (12 connections), 2.0.1 (3 connections) of 2.1,2.0.1 offered"."""
    offered = run.get("ocpp_version") or ""
    spoken = run.get("versions_spoken") or {}
    if not spoken or list(spoken) == [offered]:
        return f"OCPP {fmt.esc(offered)}" if offered else ""
    if len(spoken) == 1:
        text = f"OCPP {next(iter(spoken))}"
    else:
        text = "OCPP " + ", ".join(
            f"{version} ({fmt.count(n)} connection{'s' if n != 1 else ''})"
            for version, n in spoken.items()
        )
    return fmt.esc(f"{text} of {offered} offered" if offered else text)


def _headline(report: Mapping[str, Any]) -> str:
    """The answer first: how many chargers held, or why there is no CSMS figure; for a
    plain run, how many connected and what went wrong first."""
    capacity = report["capacity"]
    run = report["run"]
    facts = " · ".join(
        fact
        for fact in (
            _versions(run),
            f"profile {fmt.esc(run['profile'])}" if run.get("profile") else "",
            _workers(model.as_int(run.get("workers"))),
            f"ran {fmt.duration(run.get('duration_s'))}"
            if model.as_number(run.get("duration_s"))
            else "",
            f"exit code {run['exit_code']}"
            if model.as_int(run.get("exit_code")) is not None
            else "",
        )
        if fact
    )
    if capacity is None:
        css, lines = plain.headline(report)
    else:
        css, lines = search.headline(report)
    if facts:
        lines.append(f'<p class="facts">{facts}</p>')
    return f'<section class="headline {css}" id="answer">{"".join(lines)}</section>'


def _run_section(report: Mapping[str, Any]) -> str:
    run = dict(report["run"])
    names = {
        "run_id": "run id",
        "host": "CSMS",
        "ocpp_version": "OCPP version",
        "versions_spoken": "connections by OCPP version",
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
    settings_html = _settings(report)
    return (
        '<section id="run"><h2>Run and settings</h2><div class="grid2">'
        f"<div><h3>Run</h3>{fmt.key_values(pairs)}</div>"
        f"<div><h3>Settings</h3>{settings_html}</div></div></section>"
    )


def _settings(report: Mapping[str, Any]) -> str:
    """The settings that applied to this run; the rest (unset, or of a feature the run did
    not use: the capacity search's in a plain run, say) folded away."""
    settings = report["settings"]
    if not settings:
        return '<p class="note">none recorded</p>'
    unused = set(report["settings_not_applied"])

    def pairs(applied: bool) -> list[tuple[str, str]]:
        return [
            (fmt.esc(key), fmt.esc(fmt.setting_text(value)))
            for key, value in settings.items()
            if (key not in unused) is applied
        ]

    shown = fmt.key_values(pairs(True))
    if not unused:
        return shown
    return (
        f'{shown}<details id="settings-not-applied"><summary>{len(unused)} more, unset or '
        f"of features this run did not use</summary>{fmt.key_values(pairs(False))}</details>"
    )


_FORMAT = f"{model.REPORT_KIND} v{model.REPORT_VERSION}"


def _plain_sections(report: Mapping[str, Any], colours: Mapping[str, str]) -> list[str]:
    return [
        '<nav><a href="#first-problems">what went wrong first</a><a href="#over-time">over '
        'time</a><a href="#totals">totals</a><a href="#problems">problems</a>'
        '<a href="#run">run and settings</a></nav>',
        plain.first_problems_section(report),
        plain.over_time_section(report, colours),
        sections.totals_section(report, colours),
        sections.problems_section(report),
        sections.recovery_section(report),
        sections.authorizations_section(report),
        _run_section(report),
    ]


def _search_sections(report: Mapping[str, Any], colours: Mapping[str, str]) -> list[str]:
    rate_steps = (report["capacity"] or {}).get("connect_rate_steps")
    return [
        '<nav><a href="#run">run and settings</a><a href="#slos">SLOs</a>'
        '<a href="#steps">steps</a>'
        + ('<a href="#rate-steps">rate steps</a>' if rate_steps else "")
        + '<a href="#totals">totals</a>'
        '<a href="#problems">problems</a><a href="#charts">charts</a></nav>',
        _run_section(report),
        search.slo_section(report),
        search.steps_section(report, colours),
        search.rate_steps_section(report),
        sections.totals_section(report, colours),
        sections.recovery_section(report),
        sections.authorizations_section(report),
        sections.problems_section(report),
        search.charts_section(report, colours),
    ]


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
        problems=report.get("problems"),
        settings_not_applied=report.get("settings_not_applied") or [],
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
            *(_plain_sections if report["capacity"] is None else _search_sections)(report, colours),
            f"<footer>{versions} · report format {_FORMAT}</footer>",
            "</body>",
            "</html>",
            "",
        ]
    )
