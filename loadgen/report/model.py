"""The report as plain data: what the JSON file holds and the HTML page is drawn from.

:func:`build_report` takes plain mappings (``StepMeasurement.to_dict()`` and friends) and
returns JSON-safe copies with every expected field present and of its type, non-finite
floats as None and secrets redacted, so that a page can be drawn from a report read back
from its JSON file as well as from a live run.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loadgen.report import applied

if TYPE_CHECKING:
    from loadgen.capacity.config import CapacityConfig
    from loadgen.capacity.judgement import StepMeasurement, Verdict
    from loadgen.capacity.search import CapacityResult


REPORT_VERSION = 1
REPORT_KIND = "ocpp-loadgen-report"
REDACTED = "(redacted)"

#: setting names whose values never go into a report, whatever the caller passed
_SECRET_NAME = re.compile(
    r"pass(?:word|wd|phrase)|secret|api[_-]?key|private|credential|bearer|auth[_-]?token",
    re.IGNORECASE,
)
#: ``scheme://user:password@`` in a URL-valued setting (a Redis URL, say)
_URL_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^/?#@\s]+@", re.IGNORECASE)

_RUN_FIELDS = (
    "run_id",
    "started",
    "ended",
    "duration_s",
    "host",
    "ocpp_version",
    "versions_spoken",
    "profile",
    "workers",
    "locust_version",
    "loadgen_version",
    "exit_code",
)
_COUNT_FIELDS = (
    "calls",
    "call_errors",
    "connect_attempts",
    "connect_failures",
    "unexpected_disconnects",
)
_NUMBER_FIELDS = ("seconds", "messages_per_s", "schedule_lag_p99_ms", "cpu")
_LATENCY_FIELDS = ("p50_ms", "p95_ms", "p99_ms")


# -- plain data -----------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """A JSON-safe deep copy: mappings become dicts with str keys, sequences lists, NaN and
    the infinities None (JSON has no spelling for them), anything else its ``str()``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item) for item in value]
    return str(value)


def as_int(value: Any) -> int | None:
    """A whole number, or None for anything else (None, NaN, text, 1.5)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def as_number(value: Any) -> int | float | None:
    """A finite number, or None; ints stay ints so that the JSON keeps them whole."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _redact(value: Any, key: str = "") -> Any:
    """Secrets out of the run facts and settings: values of secret-sounding names, and user
    information in URLs. The one place a report's secrets are handled."""
    if _SECRET_NAME.search(key):
        return REDACTED
    if isinstance(value, dict):
        return {name: _redact(item, name) for name, item in value.items()}
    if isinstance(value, list):
        return [_redact(item) for item in value]
    if isinstance(value, str):
        return _URL_USERINFO.sub(rf"\g<1>{REDACTED}@", value)
    return value


def _action(stats: Any) -> dict[str, Any]:
    data = dict(stats) if isinstance(stats, dict) else {}
    data["count"] = as_int(data.get("count"))
    data["errors"] = as_int(data.get("errors"))
    for key in _LATENCY_FIELDS:
        data[key] = as_number(data.get(key))
    return data


def _measurement(item: Any) -> dict[str, Any]:
    """A ``StepMeasurement.to_dict()`` with every field present and of its type (None when
    missing or not a number); unknown keys are kept, so the Locust layer may add some."""
    data = plain(item) if isinstance(item, Mapping) else {}
    data["chargers"] = as_int(data.get("chargers"))
    data["connected"] = as_int(data.get("connected"))
    data["booted"] = as_int(data.get("booted"))
    actions = data.get("actions")
    actions = actions if isinstance(actions, dict) else {}
    data["actions"] = {name: _action(actions[name]) for name in sorted(actions)}
    for key in _COUNT_FIELDS:
        data[key] = as_int(data.get(key))
    if data["calls"] is None and data["actions"]:
        data["calls"] = sum(stats["count"] or 0 for stats in data["actions"].values())
    for key in _NUMBER_FIELDS:
        data[key] = as_number(data.get(key))
    codes = data.get("error_codes")
    codes = codes if isinstance(codes, dict) else {}
    counted = {code: as_int(n) for code, n in codes.items()}
    data["error_codes"] = {code: n for code, n in sorted(counted.items()) if n is not None}
    return data


def _reasons(value: Any) -> list[str]:
    if isinstance(value, list):
        return [str(reason) for reason in value if reason is not None]
    return [] if value is None else [str(value)]


def _step(item: Any) -> dict[str, Any]:
    data = _measurement(item)
    phase = data.get("phase")
    data["phase"] = None if phase is None else str(phase)
    ok = data.get("ok")
    data["ok"] = ok if isinstance(ok, bool) else None
    data["generator_saturated"] = data.get("generator_saturated") is True
    data["reasons"] = _reasons(data.get("reasons"))
    data["started_s"] = as_number(data.get("started_s"))
    return data


def _window(item: Any) -> dict[str, Any]:
    data = _measurement(item)
    data["t_s"] = as_number(data.get("t_s"))
    for key in _WINDOW_COUNTS:  # what loadgen.timeline adds to a window
        data[key] = as_int(data.get(key))
    return data


_WINDOW_COUNTS = ("protocol_errors", "schema_violations", "rejections")


def _capacity(capacity: Any) -> dict[str, Any] | None:
    if not isinstance(capacity, Mapping):
        return None
    data = plain(capacity)
    data["max_chargers"] = as_int(data.get("max_chargers"))
    data["max_connect_rate"] = as_number(data.get("max_connect_rate"))
    why_rate = data.get("connect_rate_stopped_because")
    data["connect_rate_stopped_because"] = "not searched" if why_rate is None else str(why_rate)
    data["limited_by_generator"] = data.get("limited_by_generator") is True
    stopped = data.get("stopped_because")
    data["stopped_because"] = "" if stopped is None else str(stopped)
    steps = data.get("steps")
    data["steps"] = [
        {
            **step,
            "chargers": as_int(step.get("chargers")),
            "ok": step.get("ok") is True,
            "generator_saturated": step.get("generator_saturated") is True,
            "reasons": _reasons(step.get("reasons")),
        }
        for step in (steps if isinstance(steps, list) else [])
        if isinstance(step, dict)
    ]
    rate_steps = data.get("connect_rate_steps")
    data["connect_rate_steps"] = [
        {
            **step,
            "rate": as_number(step.get("rate")),
            "ok": step.get("ok") is True,
            "admitted_per_s": as_number(step.get("admitted_per_s")),
            "boot_p95_ms": as_number(step.get("boot_p95_ms")),
            "reasons": _reasons(step.get("reasons")),
        }
        for step in (rate_steps if isinstance(rate_steps, list) else [])
        if isinstance(step, dict)
    ]
    config = data.get("config")
    data["config"] = config if isinstance(config, dict) else {}
    return data


def _versions_spoken(value: Any) -> dict[str, int]:
    """``{version: connections}``: what the CSMS picked of the versions offered."""
    if not isinstance(value, dict):
        return {}
    return {str(k): n for k, v in value.items() if (n := as_int(v)) is not None and n > 0}


def build_report(
    *,
    run: Mapping[str, Any],
    settings: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    timeline: Sequence[Mapping[str, Any]],
    totals: Mapping[str, Any] | None,
    capacity: Mapping[str, Any] | None,
    recovery: Sequence[Mapping[str, Any]] = (),
    authorizations: Sequence[Mapping[str, Any]] = (),
    problems: Mapping[str, Any] | None = None,
    settings_not_applied: Sequence[str] = (),
) -> dict[str, Any]:
    """The report as plain data: JSON-safe copies of the inputs with every expected field
    present (None when unknown), non-finite floats as None and secrets redacted.

    ``problems``: :meth:`loadgen.timeline.Timeline.problems` (the first problems and every
    problem counted, by category and label). ``settings_not_applied``: names of settings
    that did not apply to this run, beyond those :func:`.applied.not_applied` finds.

    Idempotent (a report's own sections fed back give the same report), which is how
    :func:`~loadgen.report.render_html` accepts a report read back from JSON. Nothing here
    raises on missing or odd values: a run stopped before its first step still gets its
    report.
    """
    run_data = plain(run) if isinstance(run, Mapping) else {}
    run_data = {name: run_data.get(name) for name in _RUN_FIELDS} | run_data
    run_data["versions_spoken"] = _versions_spoken(run_data["versions_spoken"])
    settings_data = plain(settings) if isinstance(settings, Mapping) else {}
    settings_data = {name: _redact(settings_data[name], name) for name in sorted(settings_data)}
    return {
        "kind": REPORT_KIND,
        "version": REPORT_VERSION,
        "run": _redact(run_data),
        "settings": settings_data,
        "capacity": _capacity(capacity),
        "steps": [_step(item) for item in steps or () if isinstance(item, Mapping)],
        "timeline": [_window(item) for item in timeline or () if isinstance(item, Mapping)],
        "totals": _measurement(totals) if isinstance(totals, Mapping) else None,
        "recovery": _recoveries(recovery),
        "authorizations": _authorizations(authorizations),
        "problems": _problems(problems),
        "settings_not_applied": sorted(
            {str(name) for name in settings_not_applied or () if str(name) in settings_data}
            | set(applied.not_applied(settings_data))
        ),
    }


_PROBLEM_FIELDS = ("category", "label", "what")


def _problems(problems: Any) -> dict[str, Any]:
    """``{"first": [{from_s, t_s, category, label, what, count}], "counts": {category:
    {label: count}}}``, odd entries dropped; empty when the run recorded none."""
    data = problems if isinstance(problems, Mapping) else {}
    first = []
    for item in data.get("first") or ():
        if not isinstance(item, Mapping):
            continue
        entry: dict[str, Any] = {name: str(item.get(name) or "") for name in _PROBLEM_FIELDS}
        entry["from_s"] = as_number(item.get("from_s"))
        entry["t_s"] = as_number(item.get("t_s"))
        entry["count"] = as_int(item.get("count"))
        first.append(entry)
    counts: dict[str, dict[str, int]] = {}
    raw = data.get("counts")
    for category, labels in raw.items() if isinstance(raw, Mapping) else ():
        if not isinstance(labels, Mapping):
            continue
        kept = {str(label): as_int(n) for label, n in labels.items()}
        counts[str(category)] = {label: n for label, n in sorted(kept.items()) if n}
    return {"first": first, "counts": counts}


_RECOVERY_FIELDS = (
    "at_s",
    "lost",
    "booted_before",
    "recovered_s",
    "rebooted",
    "peak_reboots_per_s",
    "connect_failures",
    "boot_failures",
)


def _recoveries(items: Any) -> list[dict[str, Any]]:
    """The mass disconnects (:class:`loadgen.recovery.Recovery` as JSON), every field
    present: whole numbers, None when unknown (``recovered_s``: not by the run's end)."""
    if not isinstance(items, Sequence) or isinstance(items, str):
        return []
    return [
        {name: as_int(item.get(name)) for name in _RECOVERY_FIELDS}
        for item in items
        if isinstance(item, Mapping)
    ]


def _authorizations(items: Any) -> list[dict[str, Any]]:
    """The CSMS's verdicts on idTokens (:func:`loadgen.capacity.measure.authorization_counts`):
    ``{"message", "status", "count"}`` each, rejections are every status but Accepted."""
    if not isinstance(items, Sequence) or isinstance(items, str):
        return []
    rows = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        count = as_int(item.get("count"))
        if count is None or count <= 0:
            continue
        rows.append(
            {"message": str(item.get("message")), "status": str(item.get("status")), "count": count}
        )
    return rows


def step_dict(
    measurement: StepMeasurement, verdict: Verdict, *, phase: str, started_s: float | None
) -> dict[str, Any]:
    """One capacity step as :func:`build_report` takes it: the measurement and its verdict."""
    return {
        **measurement.to_dict(),
        "phase": phase,
        "ok": verdict.ok,
        "generator_saturated": verdict.generator_saturated,
        "reasons": list(verdict.reasons),
        "started_s": started_s,
    }


def capacity_dict(result: CapacityResult, config: CapacityConfig) -> dict[str, Any]:
    """``result.to_dict()`` plus the search's configuration as plain values (the step as
    its text, ``x1.5`` or ``+100``), the shape :func:`build_report` takes."""
    plain = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    plain["step"] = str(config.step)
    plain["p95_ms_by_action"] = dict(config.p95_ms_by_action)  # type: ignore[arg-type]
    return {**result.to_dict(), "config": plain}
