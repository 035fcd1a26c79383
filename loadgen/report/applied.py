"""Which of a run's settings applied to it, so that the page shows those and folds the
rest away: a plain run has no use for the capacity search's dozen options.

The settings are the load generator's options by their ``options`` names
(``loadgen.locust.recorder.report_settings``); unknown names simply apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: option -> the options that apply only when it is set (a falsy value: not used)
_ONLY_WITH = {
    "blackout_at": ("blackout_for",),
    "reconcile_db_url": ("reconcile_mapping",),
    "redis_url": ("lease_ttl",),
    "master": ("expect_workers",),
}
#: options that do not apply when this one is set
_REPLACED_BY = {
    "fleet": ("fleet_size", "charger_id_pattern"),
    "capacity_search": ("num_users",),  # the shape decides how many users
}
_SEARCH_PREFIXES = ("capacity_", "connect_rate_", "slo_")
#: switches whose off value (0, False) means the feature was not used
_OFF_MEANS_UNUSED = ("blackout_at", "master")


def not_applied(settings: Mapping[str, Any]) -> list[str]:
    """The names among ``settings`` that did not apply to this run: unset (None, ""), or
    of a feature the run did not use (the capacity search's in a plain run, say)."""
    unused = {name for name, value in settings.items() if value is None or value == ""}
    unused |= {name for name in _OFF_MEANS_UNUSED if not settings.get(name, True)}
    search = settings.get("capacity_search")
    if not search:
        unused |= {name for name in settings if name.startswith(_SEARCH_PREFIXES)}
        if settings.get("check_slo"):  # SLOs may judge a plain run too
            unused -= {name for name in settings if name.startswith("slo_")}
    elif search == "chargers":
        unused |= {name for name in settings if name.startswith("connect_rate_")}
    if settings.get("ocpp_profile") == "idle":
        unused |= {"session_interarrival", "session_stay"}
    for option, dependants in _ONLY_WITH.items():
        if not settings.get(option):
            unused |= set(dependants)
    for option, replaced in _REPLACED_BY.items():
        if settings.get(option):
            unused |= set(replaced)
    return sorted(unused & set(settings))
