"""What the web UI's OCPP tabs show: the capacity search so far and the fleet by site.

Pure functions of the master's figures (the capacity shape's steps and answer, the merged
metrics of every worker), kept apart from Locust so they are tested without it;
:mod:`loadgen.locust.webui` puts them in Locust's web UI.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from loadgen.capacity.measure import Merged

#: the JSON of everything the tabs show (Locust's web UI serves it)
STATUS_PATH = "/ocpp/status"
CAPACITY_TAB = "ocpp-capacity"
FLEET_TAB = "ocpp-fleet"

_SITE_CHARGERS = "ocpp_loadgen_site_chargers"
#: fleet-map states of a charger with an open WebSocket, and of one also booted
_CONNECTED = frozenset({"booting", "available", "charging", "unavailable"})
_BOOTED = frozenset({"available", "charging", "unavailable"})

CAPACITY_COLUMNS = [
    {"key": "item", "title": "Step / answer"},
    {"key": "offered", "title": "Offered"},
    {"key": "connected", "title": "Connected"},
    {"key": "booted", "title": "Booted"},
    {"key": "verdict", "title": "Verdict"},
    {"key": "why", "title": "Why"},
]
FLEET_COLUMNS = [
    {"key": "site", "title": "Site"},
    {"key": "chargers", "title": "Chargers in the fleet"},
    {"key": "stations", "title": "Stations running"},
    {"key": "connected", "title": "Connected"},
    {"key": "booted", "title": "Booted"},
    {"key": "charging", "title": "Charging"},
]


# -- the figures ----------------------------------------------------------------------------


def fleet_by_site(merged: Merged, fleet_sites: Mapping[str, int]) -> list[dict[str, Any]]:
    """Per site: chargers in the fleet (``fleet_sites``), stations running, connected,
    booted and charging, from the merged ``site_chargers`` gauge; sites in name order."""
    states: dict[str, Counter[str]] = {site: Counter() for site in fleet_sites}
    for labels, value in merged.get(_SITE_CHARGERS, {}).items():
        if len(labels) != 4:
            continue
        site, _lat, _lon, state = labels
        states.setdefault(site, Counter())[state] += int(value)
    return [
        {
            "site": site,
            "chargers": fleet_sites.get(site, 0),
            "stations": sum(counts.values()),
            "connected": sum(n for state, n in counts.items() if state in _CONNECTED),
            "booted": sum(n for state, n in counts.items() if state in _BOOTED),
            "charging": counts["charging"],
        }
        for site, counts in sorted(states.items())
    ]


def capacity_status(shape: Any) -> dict[str, Any] | None:
    """The search so far: phase, target, both answers (final or so far) and every step."""
    if shape is None:
        return None
    result = shape.result
    config = shape.config
    return {
        "phase": shape.phase,
        "target": shape.target,
        "done": shape.done,
        "searches_chargers": config.searches_chargers,
        "searches_connect_rate": config.searches_connect_rate,
        "max_chargers": result.max_chargers,
        "stopped_because": result.stopped_because,
        "max_connect_rate": result.max_connect_rate,
        "connect_rate_stopped_because": result.connect_rate_stopped_because,
        "steps": [
            {
                "phase": step.get("phase"),
                "chargers": step.get("chargers"),
                "connected": step.get("connected"),
                "booted": step.get("booted"),
                "ok": step.get("ok"),
                "reasons": list(step.get("reasons") or []),
                "admission": step.get("admission"),
            }
            for step in list(shape.steps)
        ],
        "rate_steps": [
            {
                "phase": step.get("phase"),
                "rate": step.get("rate"),
                "chargers": step.get("chargers"),
                "booted": step.get("booted"),
                "ok": step.get("ok"),
                "reasons": list(step.get("reasons") or []),
            }
            for step in list(shape.rate_steps)
        ],
    }


# -- the tabs' rows -------------------------------------------------------------------------


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}/s"


#: what the shape is doing, by its phase (none between steps and after the search)
_PHASES = {
    "settle": "ramping to {target} chargers",
    "hold": "holding {target} chargers",
    "rate-step": "{target} fresh chargers arriving",
    "drain": "the rate step's chargers leaving",
}


def capacity_rows(capacity: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The capacity tab: the answers first (so far, or final), then every step in order."""
    if capacity is None:
        return [
            {
                "item": "no capacity search in this run",
                "offered": "",
                "connected": "",
                "booted": "",
                "verdict": "",
                "why": "start Locust with --capacity-search to search the CSMS's capacities",
            }
        ]
    final = "final" if capacity["done"] else "so far"
    rows = []
    if capacity["searches_connect_rate"]:
        rows.append(
            {
                "item": "answer: max connect rate",
                "offered": _rate(capacity["max_connect_rate"]),
                "connected": "",
                "booted": "",
                "verdict": final,
                "why": capacity["connect_rate_stopped_because"],
            }
        )
    if capacity["searches_chargers"]:
        most = capacity["max_chargers"]
        rows.append(
            {
                "item": "answer: max chargers",
                "offered": "-" if most is None else f"{most} chargers",
                "connected": "",
                "booted": "",
                "verdict": final,
                "why": capacity["stopped_because"],
            }
        )
    for number, step in enumerate(capacity["rate_steps"], 1):
        rows.append(
            {
                "item": f"rate step {number} ({step['phase']})",
                "offered": f"{_rate(step['rate'])}, {step['chargers']} chargers",
                "connected": "",
                "booted": step["booted"],
                "verdict": "kept pace" if step["ok"] else "FAILED",
                "why": "; ".join(step["reasons"]),
            }
        )
    for number, step in enumerate(capacity["steps"], 1):
        reasons = list(step["reasons"])
        if step.get("admission"):
            reasons.append(str(step["admission"]))
        rows.append(
            {
                "item": f"step {number} ({step['phase']})",
                "offered": f"{step['chargers']} chargers",
                "connected": step["connected"],
                "booted": step["booted"],
                "verdict": "held" if step["ok"] else "FAILED",
                "why": "; ".join(reasons),
            }
        )
    doing = _PHASES.get(capacity["phase"])
    if doing is not None and capacity["target"] is not None:
        rows.append(
            {
                "item": "now",
                "offered": doing.format(target=capacity["target"]),
                "connected": "",
                "booted": "",
                "verdict": "in progress",
                "why": "",
            }
        )
    return rows


def fleet_rows(fleet: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fleet tab: every site, then the whole fleet."""
    total = {
        key: sum(int(site[key]) for site in fleet)
        for key in ("chargers", "stations", "connected", "booted", "charging")
    }
    return [*fleet, {"site": "all sites", **total}]


def extended_stats(snapshot: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``extended_stats`` of Locust's ``/stats/requests``: one table per tab."""
    return [
        {"key": CAPACITY_TAB, "data": capacity_rows(snapshot["capacity"])},
        {"key": FLEET_TAB, "data": fleet_rows(snapshot["fleet"])},
    ]
