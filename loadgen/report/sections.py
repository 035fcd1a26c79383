"""Sections of every report: totals over the run, mass disconnects and their recovery,
the CSMS's verdicts on idTokens."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loadgen.report import format as fmt
from loadgen.report import search


def totals_section(report: Mapping[str, Any], colours: Mapping[str, str]) -> str:
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
        slo = search.p95_slo(config, action)
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


def recovery_section(report: Mapping[str, Any]) -> str:
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


def authorizations_section(report: Mapping[str, Any]) -> str:
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


#: the problem categories of loadgen.timeline, in their order, with a title and what the
#: labels are
_PROBLEM_TITLES = {
    "connect_failures": ("Connect failures", "outcome"),
    "timeouts": ("CALLs timed out", "action"),
    "lost_replies": ("Connection lost before the reply", "action"),
    "call_errors": ("CALL errors and invalid replies", "action and error code"),
    "rejections": ("Rejected idTokens", "message and status"),
    "schema_violations": ("Schema violations", "kind"),
    "protocol_errors": ("Protocol errors", "kind"),
    "disconnects": ("Disconnect reasons", "reason"),
    "dropped_messages": ("Messages given up", "action"),
    "coordination_failures": ("Coordination failures", "operation"),
}


def problems_section(report: Mapping[str, Any]) -> str:
    """Every problem counted over the run, by kind: connects, CALLs, rejections, protocol
    errors, schema violations and disconnect reasons."""
    counts = report["problems"]["counts"]
    tables = []
    for category, labels in counts.items():
        if not labels:
            continue
        title, what = _PROBLEM_TITLES.get(category, (category, "label"))
        rows = [(fmt.esc(label), fmt.count(n)) for label, n in labels.items()]
        tables.append(f"<div><h3>{fmt.esc(title)}</h3>{fmt.table((what, 'count'), rows)}</div>")
    validated = report["settings"].get("ocpp_validate")
    schema_note = (
        "CSMS replies were checked against the OCPP schemas (--ocpp-validate)"
        if validated
        else "CSMS replies were not checked against the OCPP schemas (add --ocpp-validate); "
        "the CSMS's own CALLs always are"
    )
    body = (
        f'<div class="grid2">{"".join(tables)}</div>'
        if tables
        else '<p class="note">None recorded.</p>'
    )
    return (
        '<section id="problems"><h2>Problems</h2>'
        f'<p class="note">Counted over the run. {fmt.esc(schema_note)}. The load '
        "generator's own closes (a user stopping) are not disconnects.</p>"
        f"{body}</section>"
    )
