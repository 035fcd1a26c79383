"""Build the Grafana dashboards in grafana/dashboards/ (the JSON there is this script's output).

    python grafana/build_dashboards.py           # rewrite the JSON files
    python grafana/build_dashboards.py --check   # exit 1 if they differ from what it builds

Plain dictionaries rather than a dashboards-as-code library: the three dashboards need a
handful of panel kinds, and the JSON stays readable in review. Grafana 11 (schemaVersion 39).
Every ``ocpp_loadgen_*`` selector goes through :func:`lg`, which adds
``job=~"$job", run=~"$run"``; the stub's own series are selected by ``$stub_job``.
tests/test_dashboards.py checks the files against this script and runs every query against a
real Prometheus scraping a real run, and every SQL query against the stub's PostgreSQL tables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
SCHEMA_VERSION = 39

#: the datasources of grafana/provisioning/datasources/datasources.yml
PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
POSTGRES = {"type": "postgres", "uid": "postgres"}

RATE = "[$__rate_interval]"
#: CALL outcomes whose duration is a reply time of the CSMS (as the capacity search counts
#: them; a timeout is the slowest answer, a dropped connection is no answer)
ANSWERED = 'outcome=~"result|error|timeout"'
NOT_RESULT = 'outcome!="result"'
NOT_OK = 'outcome!="ok"'
NOT_OFFLINE = 'state!="offline"'
CHARGING = 'state="charging"'


def lg(metric: str, *matchers: str) -> str:
    """A selector of the load generator's series, filtered by the dashboard's job and run."""
    return metric + "{" + ", ".join(['job=~"$job"', 'run=~"$run"', *matchers]) + "}"


def stub(metric: str, *matchers: str) -> str:
    """A selector of csms_stub's own series (its /metrics; no run label)."""
    return metric + "{" + ", ".join(['job=~"$stub_job"', *matchers]) + "}"


def rate(selector: str) -> str:
    return f"rate({selector}{RATE})"


def quantile(q: float, bucket_selector: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) ({rate(bucket_selector)}))"


# -- targets -------------------------------------------------------------------------------


def prom(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> dict:
    target: dict[str, Any] = {
        "datasource": PROMETHEUS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }
    if table:
        target["format"] = "table"
    return target


def sql(query: str) -> dict:
    """Raw SQL for the stub's tables: no Grafana macros, so tests run it as it is."""
    return {
        "datasource": POSTGRES,
        "editorMode": "code",
        "format": "table",
        "rawQuery": True,
        "rawSql": " ".join(query.split()),
    }


# -- panels --------------------------------------------------------------------------------


def _with_ref_ids(targets: list[dict]) -> list[dict]:
    return [{**target, "refId": chr(ord("A") + n)} for n, target in enumerate(targets)]


def _panel(kind: str, title: str, targets: list[dict], description: str = "") -> dict:
    datasource = targets[0]["datasource"] if targets else PROMETHEUS
    panel: dict[str, Any] = {"type": kind, "title": title, "datasource": datasource}
    if description:
        panel["description"] = description
    panel["targets"] = _with_ref_ids(targets)
    return panel


def timeseries(
    title: str,
    targets: list[dict],
    unit: str = "short",
    *,
    description: str = "",
    steps: bool = False,
    stack: bool = False,
    right: dict[str, str] | None = None,
    fill: int = 10,
    calcs: tuple[str, ...] = ("mean", "max", "lastNotNull"),
) -> dict:
    """A time series panel; ``right`` maps series names (legends) to a unit on a right axis."""
    panel = _panel("timeseries", title, targets, description)
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineInterpolation": "stepAfter" if steps else "linear",
        "lineWidth": 1,
        "fillOpacity": fill,
        "showPoints": "never",
        "spanNulls": False,
        "axisSoftMin": 0,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    overrides = [
        {
            "matcher": {"id": "byName", "options": name},
            "properties": [
                {"id": "unit", "value": right_unit},
                {"id": "custom.axisPlacement", "value": "right"},
                {"id": "custom.lineInterpolation", "value": "stepAfter"},
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
                {"id": "custom.fillOpacity", "value": 0},
                {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}},
            ],
        }
        for name, right_unit in (right or {}).items()
    ]
    panel["fieldConfig"] = {
        "defaults": {
            "unit": unit,
            "min": 0,
            "custom": custom,
            "color": {"mode": "palette-classic"},
        },
        "overrides": overrides,
    }
    panel["options"] = {
        "legend": {"displayMode": "table", "placement": "bottom", "calcs": list(calcs)},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel


def stat(
    title: str,
    targets: list[dict],
    unit: str = "short",
    *,
    description: str = "",
    mappings: list[dict] | None = None,
    thresholds: list[tuple[float | None, str]] = ((None, "blue"),),
    decimals: int | None = None,
) -> dict:
    panel = _panel("stat", title, targets, description)
    defaults: dict[str, Any] = {
        "unit": unit,
        "mappings": mappings or [],
        "thresholds": {
            "mode": "absolute",
            "steps": [{"value": value, "color": color} for value, color in thresholds],
        },
        "color": {"mode": "thresholds"},
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    panel["fieldConfig"] = {"defaults": defaults, "overrides": []}
    panel["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "value",
        "graphMode": "area",
        "textMode": "value_and_name",
        "justifyMode": "auto",
        "orientation": "auto",
    }
    return panel


def table(
    title: str,
    targets: list[dict],
    *,
    description: str = "",
    transformations: list[dict] | None = None,
    units: dict[str, str] | None = None,
) -> dict:
    panel = _panel("table", title, targets, description)
    panel["fieldConfig"] = {
        "defaults": {"custom": {"align": "auto", "filterable": True}},
        "overrides": [
            {
                "matcher": {"id": "byName", "options": name},
                "properties": [{"id": "unit", "value": u}],
            }
            for name, u in (units or {}).items()
        ],
    }
    panel["options"] = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    panel["transformations"] = transformations or []
    return panel


def geomap(
    title: str,
    targets: list[dict],
    *,
    size_field: str,
    color_field: str,
    text_field: str,
    description: str = "",
    transformations: list[dict] | None = None,
) -> dict:
    """Markers at each row's ``lat`` / ``lon``: sized by one field, coloured by another."""
    panel = _panel("geomap", title, targets, description)
    panel["fieldConfig"] = {
        "defaults": {
            "color": {"mode": "continuous-GrYlRd"},
            "thresholds": {"mode": "absolute", "steps": [{"value": None, "color": "green"}]},
        },
        "overrides": [],
    }
    panel["options"] = {
        # South Korea, where the seed fleet and the generated fleets' sites are
        "view": {"id": "coords", "lat": 35.9, "lon": 127.8, "zoom": 6.5, "allLayers": True},
        "controls": {"showZoom": True, "mouseWheelZoom": True, "showAttribution": True},
        "basemap": {"type": "default", "name": "Basemap", "config": {}},
        "layers": [
            {
                "type": "markers",
                "name": "Sites",
                "config": {
                    "showLegend": True,
                    "style": {
                        "size": {"field": size_field, "fixed": 8, "min": 6, "max": 30},
                        "color": {"field": color_field, "fixed": "green"},
                        "opacity": 0.6,
                        "symbol": {"mode": "fixed", "fixed": "img/icons/marker/circle.svg"},
                        "text": {"mode": "field", "field": text_field, "fixed": ""},
                        "textConfig": {
                            "fontSize": 11,
                            "offsetX": 0,
                            "offsetY": -16,
                            "textAlign": "center",
                            "textBaseline": "middle",
                        },
                    },
                },
                "location": {"mode": "coords", "latitude": "lat", "longitude": "lon"},
                "tooltip": True,
            }
        ],
        "tooltip": {"mode": "details"},
    }
    panel["transformations"] = transformations or []
    return panel


def xychart(
    title: str,
    targets: list[dict],
    *,
    x: str,
    x_unit: str,
    y_unit: str,
    description: str = "",
) -> dict:
    """A scatter of every other field against ``x``: the queries are joined on time first,
    so each point is one moment of the run (its chargers and, say, its p95)."""
    panel = _panel("xychart", title, targets, description)
    panel["fieldConfig"] = {
        "defaults": {
            "unit": y_unit,
            "min": 0,
            "custom": {"show": "points", "pointSize": {"fixed": 5}, "axisPlacement": "auto"},
            "color": {"mode": "palette-classic"},
        },
        "overrides": [
            {
                "matcher": {"id": "byName", "options": x},
                "properties": [{"id": "unit", "value": x_unit}],
            }
        ],
    }
    panel["options"] = {
        "mapping": "auto",
        "series": [{"x": {"matcher": {"id": "byName", "options": x}}}],
        "legend": {"showLegend": True, "displayMode": "list", "placement": "bottom", "calcs": []},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    panel["transformations"] = [
        {"id": "joinByField", "options": {"byField": "Time", "mode": "outer"}},
    ]
    return panel


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def text(title: str, content: str) -> dict:
    return {
        "type": "text",
        "title": title,
        "options": {"mode": "markdown", "content": content.strip()},
    }


# -- layout and dashboards -----------------------------------------------------------------

Layout = list[tuple[dict, int, int] | dict]  # (panel, width, height) or a row


def lay_out(items: Layout) -> list[dict]:
    """Place panels left to right, wrapping at Grafana's 24 columns; ids in order (stable)."""
    panels: list[dict] = []
    x = y = line_height = 0
    for item in items:
        if isinstance(item, dict):  # a row: always a line of its own
            y += line_height
            x = line_height = 0
            panel, width, height = item, 24, 1
        else:
            panel, width, height = item
            if x + width > 24:
                y += line_height
                x = line_height = 0
        panel = {
            "id": len(panels) + 1,
            "gridPos": {"h": height, "w": width, "x": x, "y": y},
            **panel,
        }
        panels.append(panel)
        x += width
        line_height = max(line_height, height)
        if x >= 24:
            y += line_height
            x = line_height = 0
    return panels


def _variable(name: str, label: str, query: str, *, multi: bool, hide: int = 0) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROMETHEUS,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-variable"},
        "refresh": 2,  # on time range change: new runs appear
        "includeAll": True,
        "multi": multi,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "regex": "",
        "sort": 1,
        "hide": hide,
        "options": [],
    }


JOB = _variable("job", "Job", "label_values(ocpp_loadgen_chargers_connected, job)", multi=True)
RUN = _variable(
    "run",
    "Run",
    'label_values(ocpp_loadgen_chargers_connected{job=~"$job"}, run)',
    multi=True,
)
STUB_JOB = _variable(
    "stub_job", "Stub job", "label_values(csms_stub_chargers_connected, job)", multi=True
)


def dashboard(
    uid: str,
    title: str,
    description: str,
    items: Layout,
    variables: list[dict],
    *,
    time_from: str = "now-30m",
    refresh: str = "10s",
) -> dict:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["ocpp", "load-test"],
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,  # shared crosshair
        "timezone": "browser",
        "time": {"from": time_from, "to": "now"},
        "timepicker": {},
        "refresh": refresh,
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "type": "dashboards",
                "tags": ["ocpp"],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "title": "OCPP dashboards",
            }
        ],
        "templating": {"list": variables},
        "panels": lay_out(items),
    }


# -- 1. live load --------------------------------------------------------------------------

CALLS = "ocpp_loadgen_call_duration_seconds"
CONNECTS = "ocpp_loadgen_connect_duration_seconds"


def live_load() -> dict:
    items: Layout = [
        row("Chargers"),
        (stat("Connected", [prom(f"sum({lg('ocpp_loadgen_chargers_connected')})")]), 4, 4),
        (stat("Target", [prom(f"max({lg('ocpp_loadgen_chargers_target')})")]), 4, 4),
        (
            stat("Peak connected", [prom(f"max({lg('ocpp_loadgen_chargers_connected_peak')})")]),
            4,
            4,
        ),
        (
            stat("Transactions active", [prom(f"sum({lg('ocpp_loadgen_transactions_active')})")]),
            4,
            4,
        ),
        (
            stat(
                "Messages / s",
                [prom(f"sum({rate(lg('ocpp_loadgen_messages_total'))})")],
                "ops",
                decimals=1,
            ),
            4,
            4,
        ),
        (
            stat(
                "CALL p95, all actions",
                [prom(quantile(0.95, lg(f"{CALLS}_bucket", ANSWERED)))],
                "s",
                thresholds=[(None, "green"), (0.5, "orange"), (1.0, "red")],
            ),
            4,
            4,
        ),
        (
            timeseries(
                "Chargers: connected, target, peak",
                [
                    prom(f"sum({lg('ocpp_loadgen_chargers_connected')})", "connected"),
                    prom(f"max({lg('ocpp_loadgen_chargers_target')})", "target"),
                    prom(f"max({lg('ocpp_loadgen_chargers_connected_peak')})", "peak"),
                ],
                steps=True,
                fill=0,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Messages / s by direction and type",
                [
                    prom(
                        f"sum by (direction, type) ({rate(lg('ocpp_loadgen_messages_total'))})",
                        "{{direction}} {{type}}",
                    )
                ],
                "ops",
            ),
            12,
            8,
        ),
        row("CALLs: latency, outcomes, errors"),
        (
            timeseries(
                "CALL latency p50 / p95 / p99 by action",
                [
                    prom(
                        quantile(q, lg(f"{CALLS}_bucket", ANSWERED), "action"),
                        f"{{{{action}}}} {name}",
                    )
                    for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
                ],
                "s",
                description="CALL sent to reply received (CALLRESULT, CALLERROR or timeout), "
                "from ocpp_loadgen_call_duration_seconds; CALLs cut short by a dropped "
                "connection are left out.",
                fill=0,
            ),
            24,
            9,
        ),
        (
            timeseries(
                "CALLs / s by action",
                [prom(f"sum by (action) ({rate(lg(f'{CALLS}_count'))})", "{{action}}")],
                "ops",
                stack=True,
            ),
            8,
            8,
        ),
        (
            timeseries(
                "CALLs without a result / s, by outcome",
                [
                    prom(
                        f"sum by (action, outcome) ({rate(lg(f'{CALLS}_count', NOT_RESULT))})",
                        "{{action}} {{outcome}}",
                    )
                ],
                "ops",
                description="error: a CALLERROR; timeout: no reply in --call-timeout; "
                "disconnected: the connection dropped first.",
            ),
            8,
            8,
        ),
        (
            timeseries(
                "CALL errors / s by error code",
                [
                    prom(
                        "sum by (action, error_code) "
                        f"({rate(lg('ocpp_loadgen_call_errors_total'))})",
                        "{{action}} {{error_code}}",
                    )
                ],
                "ops",
            ),
            8,
            8,
        ),
        row("Connections"),
        (
            timeseries(
                "Connect latency p50 / p95 / p99",
                [
                    prom(quantile(q, lg(f"{CONNECTS}_bucket", 'outcome="ok"')), name)
                    for q, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99"))
                ],
                "s",
                description="TCP + TLS + WebSocket handshake of the connections that opened.",
                fill=0,
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Connection attempts / s by outcome",
                [prom(f"sum by (outcome) ({rate(lg(f'{CONNECTS}_count'))})", "{{outcome}}")],
                "ops",
                description="ok, or why it failed: refused, timeout, dns, tls, handshake, "
                "http_503, ...",
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Offline queue depth",
                [prom(f"sum({lg('ocpp_loadgen_offline_queue_depth')})", "queued messages")],
                description="Transaction messages the chargers hold while offline, to send "
                "when connected again.",
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Disconnects / s by reason",
                [
                    prom(
                        f"sum by (reason) ({rate(lg('ocpp_loadgen_disconnects_total'))})",
                        "{{reason}}",
                    )
                ],
                "ops",
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Reconnects / s by reason",
                [
                    prom(
                        f"sum by (reason) ({rate(lg('ocpp_loadgen_reconnects_total'))})",
                        "{{reason}}",
                    )
                ],
                "ops",
                description="Chargers connected again, by why the previous connection ended.",
            ),
            8,
            8,
        ),
        (
            timeseries(
                "Protocol errors / s by kind",
                [
                    prom(
                        f"sum by (kind) ({rate(lg('ocpp_loadgen_protocol_errors_total'))})",
                        "{{kind}}",
                    )
                ],
                "ops",
                description="Broken things the CSMS sent: malformed frames, late replies "
                "(after the timeout), unknown reply ids, invalid results, ...",
            ),
            8,
            8,
        ),
        row("Transactions and energy"),
        (
            timeseries(
                "Transactions active",
                [prom(f"sum({lg('ocpp_loadgen_transactions_active')})", "active")],
            ),
            6,
            8,
        ),
        (
            timeseries(
                "Transactions ended / s by outcome",
                [
                    prom(
                        f"sum by (outcome) ({rate(lg('ocpp_loadgen_transactions_total'))})",
                        "{{outcome}}",
                    )
                ],
                "ops",
                description="completed: the CSMS acknowledged the end; dropped: an ending "
                "message was given up; unacknowledged: the charger went away first.",
            ),
            6,
            8,
        ),
        (
            timeseries(
                "Charging power by site",
                [prom(f"sum by (site) ({lg('ocpp_loadgen_power_w')})", "{{site}}")],
                "watt",
                stack=True,
            ),
            6,
            8,
        ),
        (
            timeseries(
                "Energy delivered by site",
                [
                    prom(
                        f"sum by (site) ({lg('ocpp_loadgen_energy_delivered_wh_total')})",
                        "{{site}}",
                    )
                ],
                "watth",
                stack=True,
                calcs=("lastNotNull",),
            ),
            6,
            8,
        ),
        row("CSMS-initiated CALLs"),
        (
            timeseries(
                "CSMS CALLs / s by action and status",
                [
                    prom(
                        f"sum by (action, status) ({rate(lg('ocpp_loadgen_csms_calls_total'))})",
                        "{{action}} {{status}}",
                    )
                ],
                "ops",
                description="CALLs the CSMS sent to the chargers (RequestStartTransaction, "
                "Reset, ...), by the status the chargers answered.",
            ),
            24,
            7,
        ),
        row("Load generator"),
        (
            timeseries(
                "Timer lag p99 by worker",
                [
                    prom(
                        quantile(0.99, lg("ocpp_loadgen_schedule_lag_seconds_bucket"), "worker"),
                        "{{worker}}",
                    )
                ],
                "s",
                description="How late timers fire in each load-generator process: when it "
                "grows, the load generator is saturated (add workers), not the CSMS.",
                fill=0,
            ),
            12,
            8,
        ),
        (
            timeseries(
                "CPU by worker",
                [prom(f"max by (worker) ({lg('ocpp_loadgen_worker_cpu_ratio')})", "{{worker}}")],
                "percentunit",
                description="CPU seconds per second of each load-generator process "
                "(100 % = one core busy).",
                fill=0,
            ),
            12,
            8,
        ),
        row("CSMS stub (its own /metrics)"),
        (
            timeseries(
                "Stub: chargers connected, added reply delay",
                [
                    prom(f"sum({stub('csms_stub_chargers_connected')})", "connected"),
                    prom(f"max({stub('csms_stub_reply_delay_seconds')})", "reply delay"),
                ],
                steps=True,
                right={"reply delay": "s"},
                description="reply delay: what --slow-above / --slow-ms-per-charger add to "
                "every reply (a known capacity ceiling for demos and tests).",
            ),
            6,
            8,
        ),
        (
            timeseries(
                "Stub: handler p95 by action",
                [
                    prom(
                        quantile(0.95, stub("csms_stub_handler_duration_seconds_bucket"), "action"),
                        "{{action}}",
                    )
                ],
                "s",
                description="A CALL's arrival at the stub to its reply being queued.",
                fill=0,
            ),
            6,
            8,
        ),
        (
            timeseries(
                "Stub: messages / s by action and outcome",
                [
                    prom(
                        f"sum by (action, outcome) ({rate(stub('csms_stub_messages_total'))})",
                        "{{action}} {{outcome}}",
                    )
                ],
                "ops",
            ),
            6,
            8,
        ),
        (
            timeseries(
                "Stub: database batch write p95 and queue",
                [
                    prom(
                        quantile(0.95, stub("csms_stub_db_write_duration_seconds_bucket")),
                        "write p95",
                    ),
                    prom(f"sum({stub('csms_stub_db_queue_depth')})", "queued rows"),
                ],
                "s",
                right={"queued rows": "short"},
                fill=0,
            ),
            6,
            8,
        ),
        # last, so that the panels above keep their ids
        row("OCPP versions"),
        (
            timeseries(
                "Chargers connected by OCPP version",
                [
                    prom(
                        f"sum by (version) ({lg('ocpp_loadgen_version_chargers')})",
                        "OCPP {{version}}",
                    )
                ],
                steps=True,
                description="The version each connection speaks: of the subprotocols the "
                "chargers offer (--ocpp-version 2.1,2.0.1), the one the CSMS picked.",
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Stub: messages / s by OCPP version",
                [
                    prom(
                        f"sum by (version) ({rate(stub('csms_stub_messages_total'))})",
                        "OCPP {{version}}",
                    )
                ],
                "ops",
            ),
            12,
            8,
        ),
    ]
    return dashboard(
        "ocpp-live-load",
        "OCPP load: live",
        "A load test as it runs: chargers, messages, CALL latency per action, errors, "
        "connections, transactions and energy, the load generator's own health.",
        items,
        [JOB, RUN, STUB_JOB],
        time_from="now-15m",
        refresh="5s",
    )


# -- 2. capacity report --------------------------------------------------------------------


def _error_ratio(window: str = RATE) -> str:
    failed = lg(f"{CALLS}_count", 'outcome!="result"')
    every = lg(f"{CALLS}_count")
    func = "rate" if window == RATE else "increase"
    return f"sum({func}({failed}{window})) / sum({func}({every}{window}))"


def _connect_failure_ratio() -> str:
    failed = lg(f"{CONNECTS}_count", 'outcome!="ok"')
    every = lg(f"{CONNECTS}_count")
    return f"sum({rate(failed)}) / sum({rate(every)})"


CONNECTED = f"sum({lg('ocpp_loadgen_chargers_connected')})"
OVER_RUN = "[$__range]"


def capacity_report() -> dict:
    items: Layout = [
        row("The answer"),
        (
            stat(
                "Capacity: most chargers within the SLOs",
                [
                    prom(
                        "max by (run) (max_over_time("
                        f"{lg('ocpp_loadgen_capacity_max_chargers')}{OVER_RUN}))",
                        "{{run}}",
                        instant=True,
                    )
                ],
                description="ocpp_loadgen_capacity_max_chargers, per run: the largest step "
                "of the capacity search that held its SLOs (refined by bisection). Empty "
                "or NaN: no answer (yet), or the load generator was the limit.",
                mappings=[
                    {
                        "type": "special",
                        "options": {"match": "nan", "result": {"text": "no CSMS figure"}},
                    }
                ],
                thresholds=[(None, "green")],
            ),
            6,
            6,
        ),
        (
            stat(
                "Capacity: new chargers per second within the connect SLOs",
                [
                    prom(
                        "max by (run) (max_over_time("
                        f"{lg('ocpp_loadgen_capacity_max_connect_rate')}{OVER_RUN}))",
                        "{{run}}",
                        instant=True,
                    )
                ],
                "short",
                description="ocpp_loadgen_capacity_max_connect_rate, per run: the most new "
                "chargers per second the CSMS connected and booted within the connect SLOs "
                "(the other capacity, beside the concurrent chargers). NaN: not searched or "
                "no answer.",
                mappings=[
                    {
                        "type": "special",
                        "options": {"match": "nan", "result": {"text": "no answer"}},
                    }
                ],
                thresholds=[(None, "green")],
                decimals=1,
            ),
            6,
            6,
        ),
        (
            stat(
                "Limited by the load generator",
                [
                    prom(
                        "max by (run) (max_over_time("
                        f"{lg('ocpp_loadgen_capacity_limited_by_generator')}{OVER_RUN}))",
                        "{{run}}",
                        instant=True,
                    )
                ],
                description="yes: the search stopped because the load generator was "
                "saturated (timer lag or CPU); its answer is no CSMS figure: add workers.",
                mappings=[
                    {
                        "type": "value",
                        "options": {
                            "0": {"text": "no", "color": "green"},
                            "1": {"text": "yes: add workers", "color": "red"},
                        },
                    }
                ],
                thresholds=[(None, "green"), (1, "red")],
            ),
            4,
            6,
        ),
        (
            stat(
                "Peak chargers connected",
                [
                    prom(
                        "max by (run) (max_over_time("
                        f"{lg('ocpp_loadgen_chargers_connected_peak')}{OVER_RUN}))",
                        "{{run}}",
                        instant=True,
                    )
                ],
            ),
            4,
            6,
        ),
        (
            stat(
                "CALLs without a result, over the range",
                [prom(_error_ratio(OVER_RUN), "error ratio", instant=True)],
                "percentunit",
                description="CALLERRORs, timeouts and CALLs cut by a dropped connection, as a "
                "share of all CALLs in the time range.",
                thresholds=[(None, "green"), (0.01, "red")],
                decimals=2,
            ),
            4,
            6,
        ),
        row("Load steps"),
        (
            timeseries(
                "Target vs connected chargers",
                [
                    prom(f"max({lg('ocpp_loadgen_chargers_target')})", "target"),
                    prom(CONNECTED, "connected"),
                    prom(f"sum({lg('ocpp_loadgen_chargers_booted')})", "booted"),
                ],
                steps=True,
                fill=0,
                description="The capacity search's steps (target), the chargers that "
                "actually held a connection and those the CSMS booted (a step's hold starts "
                "once they are all booted).",
            ),
            24,
            8,
        ),
        row("Latency and errors against load"),
        (
            timeseries(
                "p95 per action, with connected chargers",
                [
                    prom(quantile(0.95, lg(f"{CALLS}_bucket", ANSWERED), "action"), "{{action}}"),
                    prom(CONNECTED, "connected"),
                ],
                "s",
                right={"connected": "short"},
                fill=0,
            ),
            12,
            9,
        ),
        (
            xychart(
                "p95 against connected chargers",
                [
                    prom(CONNECTED, "connected"),
                    prom(quantile(0.95, lg(f"{CALLS}_bucket", ANSWERED)), "p95 all actions"),
                    prom(
                        quantile(0.95, lg(f"{CALLS}_bucket", ANSWERED), "action"), "p95 {{action}}"
                    ),
                ],
                x="connected",
                x_unit="short",
                y_unit="s",
                description="Each point is one moment of the run: the chargers connected "
                "then (x) and the p95 CALL latency (y).",
            ),
            12,
            9,
        ),
        (
            timeseries(
                "Error ratios, with connected chargers",
                [
                    prom(_error_ratio(), "CALLs without a result"),
                    prom(_connect_failure_ratio(), "failed connection attempts"),
                    prom(CONNECTED, "connected"),
                ],
                "percentunit",
                right={"connected": "short"},
                fill=0,
            ),
            12,
            9,
        ),
        (
            xychart(
                "Error ratio against connected chargers",
                [prom(CONNECTED, "connected"), prom(_error_ratio(), "CALLs without a result")],
                x="connected",
                x_unit="short",
                y_unit="percentunit",
            ),
            12,
            9,
        ),
        row("What the SLOs judge, and the load generator's guard"),
        (
            timeseries(
                "Connect failures and disconnects / s",
                [
                    prom(
                        f"sum by (outcome) ({rate(lg(f'{CONNECTS}_count', NOT_OK))})",
                        "connect {{outcome}}",
                    ),
                    prom(
                        f"sum by (reason) ({rate(lg('ocpp_loadgen_disconnects_total'))})",
                        "disconnect {{reason}}",
                    ),
                ],
                "ops",
            ),
            12,
            8,
        ),
        (
            timeseries(
                "Load generator: timer lag p99 and CPU",
                [
                    prom(
                        quantile(0.99, lg("ocpp_loadgen_schedule_lag_seconds_bucket"), "worker"),
                        "lag p99 {{worker}}",
                    ),
                    prom(f"max({lg('ocpp_loadgen_worker_cpu_ratio')})", "CPU, busiest worker"),
                ],
                "s",
                right={"CPU, busiest worker": "percentunit"},
                fill=0,
                description="The saturation guard: a step judged while these were over "
                "--capacity-max-lag-ms / --capacity-max-cpu counts against the load "
                "generator, not the CSMS.",
            ),
            12,
            8,
        ),
    ]
    return dashboard(
        "ocpp-capacity",
        "OCPP load: capacity report",
        "How many chargers the CSMS holds within SLOs: the capacity search's answer, its "
        "steps, and latency / errors against the chargers connected.",
        items,
        [JOB, RUN],
        time_from="now-1h",
        refresh="",
    )


# -- 3. fleet map --------------------------------------------------------------------------

SITE_CHARGERS = "ocpp_loadgen_site_chargers"

SQL_SITES = """
SELECT station_id AS site, max(site_name) AS name, avg(lat) AS lat, avg(lon) AS lon,
       count(*) AS chargers,
       count(*) FILTER (WHERE connected) AS connected,
       count(*) FILTER (WHERE status = 'Charging') AS charging,
       count(*) FILTER (WHERE status IN ('Faulted', 'Unavailable')) AS unavailable,
       round(sum(energy_total_kwh)::numeric, 1) AS energy_kwh
FROM charger_info
WHERE lat IS NOT NULL AND lon IS NOT NULL
GROUP BY station_id
ORDER BY station_id
"""

SQL_STATUS = """
SELECT coalesce(station_id, '(no site)') AS site, coalesce(status, 'Unknown') AS status,
       count(*) AS chargers, count(*) FILTER (WHERE connected) AS connected
FROM charger_info
GROUP BY 1, 2
ORDER BY 1, 2
"""

SQL_USAGE = """
SELECT coalesce(station_id, '(no site)') AS site, count(*) AS sessions,
       count(end_time) AS ended,
       round(sum(energy_consumed)::numeric, 2) AS energy_kwh,
       round(sum(cost)::numeric, 0) AS cost
FROM charger_usage_log
GROUP BY 1
ORDER BY 1
"""

SQL_TOP = """
SELECT charger_id, station_id AS site, status, connected, boot_count, session_count,
       round(energy_total_kwh::numeric, 2) AS energy_kwh, last_heartbeat_at
FROM charger_info
ORDER BY energy_total_kwh DESC, charger_id
LIMIT 20
"""

#: Prometheus labels are strings: the geomap wants numbers
_LAT_LON_NUMBERS = {
    "id": "convertFieldType",
    "options": {
        "conversions": [
            {"targetField": "lat", "destinationType": "number"},
            {"targetField": "lon", "destinationType": "number"},
        ],
        "fields": {},
    },
}


def fleet_map() -> dict:
    items: Layout = [
        row("From the load generator (ocpp_loadgen_site_chargers)"),
        (
            geomap(
                "Sites: chargers online, charging",
                [
                    prom(
                        f"sum by (site, lat, lon) ({lg(SITE_CHARGERS, NOT_OFFLINE)})",
                        instant=True,
                        table=True,
                    ),
                    prom(
                        f"sum by (site) ({lg(SITE_CHARGERS, CHARGING)})",
                        instant=True,
                        table=True,
                    ),
                ],
                size_field="online",
                color_field="charging",
                text_field="site",
                description="Marker size: chargers of the site that are not offline; colour: "
                "those charging. Hover for the figures.",
                transformations=[
                    {"id": "merge", "options": {}},
                    {
                        "id": "organize",
                        "options": {
                            "excludeByName": {"Time": True},
                            "renameByName": {"Value #A": "online", "Value #B": "charging"},
                        },
                    },
                    _LAT_LON_NUMBERS,
                ],
            ),
            14,
            14,
        ),
        (
            table(
                "Chargers per site and state",
                [
                    prom(
                        f"sum by (site, state) ({lg(SITE_CHARGERS)})",
                        instant=True,
                        table=True,
                    )
                ],
                transformations=[
                    {
                        "id": "groupingToMatrix",
                        "options": {
                            "columnField": "state",
                            "rowField": "site",
                            "valueField": "Value",
                            "emptyValue": "zero",
                        },
                    }
                ],
            ),
            10,
            7,
        ),
        (
            timeseries(
                "Chargers by state",
                [prom(f"sum by (state) ({lg(SITE_CHARGERS)})", "{{state}}")],
                stack=True,
            ),
            10,
            7,
        ),
        row("From the CSMS's database (csms_stub's charger_info, PostgreSQL)"),
        (
            geomap(
                "Sites in the CSMS: chargers, connected",
                [sql(SQL_SITES)],
                size_field="chargers",
                color_field="connected",
                text_field="site",
                description="charger_info grouped by site (station_id). Sites come from "
                "the fleet file the stub was started with (--fleet).",
            ),
            14,
            14,
        ),
        (
            table("Chargers per site and status (CSMS)", [sql(SQL_STATUS)]),
            10,
            7,
        ),
        (
            table(
                "Sessions and energy per site (CSMS)",
                [sql(SQL_USAGE)],
                units={"energy_kwh": "kwatth"},
            ),
            10,
            7,
        ),
        (
            table(
                "Chargers by energy delivered (CSMS, top 20)",
                [sql(SQL_TOP)],
                units={"energy_kwh": "kwatth"},
            ),
            24,
            9,
        ),
    ]
    return dashboard(
        "ocpp-fleet-map",
        "OCPP load: fleet map",
        "Where the chargers are and what they do: per site from the load generator's "
        "metrics, and from the CSMS stub's charger_info table.",
        items,
        [JOB, RUN],
        time_from="now-15m",
        refresh="10s",
    )


DASHBOARDS = {
    "live-load.json": live_load,
    "capacity-report.json": capacity_report,
    "fleet-map.json": fleet_map,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text_ = render(build)
        if check:
            if not path.exists() or path.read_text() != text_:
                stale.append(name)
        else:
            path.write_text(text_)
            print(f"wrote {path}")
    if stale:
        print(f"out of date (run python grafana/build_dashboards.py): {', '.join(stale)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
