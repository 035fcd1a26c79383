"""Two tabs in Locust's web UI: the capacity search as it goes, and the fleet by site.

Locust's UI shows requests, charts and failures; what a person running a capacity search
wants to see, the steps so far, their verdicts and the answer so far (both capacities), and
how many chargers of each site are connected, booted and charging, is in our own figures.
Locust lets a locustfile add tabs that show a table (``extended_tabs`` and
``extended_tables`` in ``web_ui.template_args``), filled from ``extended_stats`` in the
``/stats/requests`` answer its page polls every few seconds; the rows come from
:func:`status` (made into rows by :mod:`loadgen.live`), which ``GET /ocpp/status`` also
serves as JSON for scripts.

Everything here is read from what the master (or the single process) already keeps: the
capacity shape's steps and answer, and the merged metrics of every worker.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from loadgen.live import (
    CAPACITY_COLUMNS,
    CAPACITY_TAB,
    FLEET_COLUMNS,
    FLEET_TAB,
    STATUS_PATH,
    capacity_status,
    extended_stats,
    fleet_by_site,
)

log = logging.getLogger(__name__)


def status(context: Any, environment: Any) -> dict[str, Any]:
    """What ``GET /ocpp/status`` answers; the tabs' rows are made from it."""
    runner = environment.runner
    merged = context.merged.merged() if context.merged is not None else {}
    fleet = context.settings.fleet
    sizes = Counter(charger.site_id for charger in fleet.chargers.values())
    sites = {site: sizes.get(site, 0) for site in fleet.sites} | dict(sizes)
    return {
        "state": getattr(runner, "state", None),
        "users": getattr(runner, "user_count", 0),
        "connected": int(sum(merged.get("ocpp_loadgen_chargers_connected", {}).values())),
        "booted": int(sum(merged.get("ocpp_loadgen_chargers_booted", {}).values())),
        "capacity": capacity_status(context.shape),
        "fleet": fleet_by_site(merged, sites),
    }


# -- Locust's web UI ------------------------------------------------------------------------


def install(web_ui: Any, context: Any, environment: Any) -> None:
    """Add the tabs and ``GET /ocpp/status`` to Locust's web UI (master or single process)."""
    from flask import jsonify, request

    web_ui.template_args["extended_tabs"] = [
        {"title": "OCPP capacity", "key": CAPACITY_TAB},
        {"title": "OCPP fleet", "key": FLEET_TAB},
    ]
    web_ui.template_args["extended_tables"] = [
        {"key": CAPACITY_TAB, "structure": CAPACITY_COLUMNS},
        {"key": FLEET_TAB, "structure": FLEET_COLUMNS},
    ]
    app = web_ui.app
    # Locust serves its own pages under --web-base-path (a proxy's prefix): ours too
    base = (getattr(environment.parsed_options, "web_base_path", None) or "").rstrip("/")

    @app.route(base + STATUS_PATH)
    @web_ui.auth_required_if_enabled
    def ocpp_status() -> Any:
        return jsonify(status(context, environment))

    @app.after_request
    def add_our_tables(response: Any) -> Any:
        if not request.path.endswith("/stats/requests") or response.status_code != 200:
            return response
        try:
            data = response.get_json(silent=True)
            if isinstance(data, dict):
                data["extended_stats"] = extended_stats(status(context, environment))
                response.set_data(json.dumps(data))
        except Exception:  # Locust's own page must keep working whatever ours does
            log.exception("the OCPP tabs' figures failed")
        return response
