"""The run's report: a JSON file for machines and a self-contained HTML page for people.

The HTML page is opened where the run happened, often on a machine without Internet access
or as a CI artefact, so it carries everything inline: CSS in a ``<style>`` element, charts
as SVG drawn here in Python, no scripts, fonts, images or links to anywhere else. Every
string that came from the run (action names, reasons, error codes, settings, the host) is
escaped: a CSMS chooses its error codes and a fleet file its names, and neither may inject
markup into the page.

Pure: no Locust, gevent or network. The Locust layer gathers plain mappings and calls::

    steps = [step_dict(measurement, verdict, phase=..., started_s=...) for each hold]
    report = build_report(run=..., settings=..., steps=steps, timeline=..., totals=...,
                          capacity=capacity_dict(search.result(), config))
    json_path, html_path = write_reports(report, directory)

The inputs are plain data (``StepMeasurement.to_dict()`` and friends), so a page can be
rebuilt from a JSON report later: ``render_html(json.load(f))``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

_RUN_FIELDS = (
    "run_id",
    "started",
    "ended",
    "duration_s",
    "host",
    "ocpp_version",
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


def _plain(value: Any) -> Any:
    """A JSON-safe deep copy: mappings become dicts with str keys, sequences lists, NaN and
    the infinities None (JSON has no spelling for them), anything else its ``str()``."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    return str(value)


def _int(value: Any) -> int | None:
    """A whole number, or None for anything else (None, NaN, text, 1.5)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _number(value: Any) -> int | float | None:
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
    data["count"] = _int(data.get("count"))
    data["errors"] = _int(data.get("errors"))
    for key in _LATENCY_FIELDS:
        data[key] = _number(data.get(key))
    return data


def _measurement(item: Any) -> dict[str, Any]:
    """A ``StepMeasurement.to_dict()`` with every field present and of its type (None when
    missing or not a number); unknown keys are kept, so the Locust layer may add some."""
    data = _plain(item) if isinstance(item, Mapping) else {}
    data["chargers"] = _int(data.get("chargers"))
    data["connected"] = _int(data.get("connected"))
    data["booted"] = _int(data.get("booted"))
    actions = data.get("actions")
    actions = actions if isinstance(actions, dict) else {}
    data["actions"] = {name: _action(actions[name]) for name in sorted(actions)}
    for key in _COUNT_FIELDS:
        data[key] = _int(data.get(key))
    if data["calls"] is None and data["actions"]:
        data["calls"] = sum(stats["count"] or 0 for stats in data["actions"].values())
    for key in _NUMBER_FIELDS:
        data[key] = _number(data.get(key))
    codes = data.get("error_codes")
    codes = codes if isinstance(codes, dict) else {}
    counted = {code: _int(n) for code, n in codes.items()}
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
    data["started_s"] = _number(data.get("started_s"))
    return data


def _window(item: Any) -> dict[str, Any]:
    data = _measurement(item)
    data["t_s"] = _number(data.get("t_s"))
    return data


def _capacity(capacity: Any) -> dict[str, Any] | None:
    if not isinstance(capacity, Mapping):
        return None
    data = _plain(capacity)
    data["max_chargers"] = _int(data.get("max_chargers"))
    data["max_connect_rate"] = _number(data.get("max_connect_rate"))
    why_rate = data.get("connect_rate_stopped_because")
    data["connect_rate_stopped_because"] = "not searched" if why_rate is None else str(why_rate)
    data["limited_by_generator"] = data.get("limited_by_generator") is True
    stopped = data.get("stopped_because")
    data["stopped_because"] = "" if stopped is None else str(stopped)
    steps = data.get("steps")
    data["steps"] = [
        {
            **step,
            "chargers": _int(step.get("chargers")),
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
            "rate": _number(step.get("rate")),
            "ok": step.get("ok") is True,
            "admitted_per_s": _number(step.get("admitted_per_s")),
            "boot_p95_ms": _number(step.get("boot_p95_ms")),
            "reasons": _reasons(step.get("reasons")),
        }
        for step in (rate_steps if isinstance(rate_steps, list) else [])
        if isinstance(step, dict)
    ]
    config = data.get("config")
    data["config"] = config if isinstance(config, dict) else {}
    return data


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
) -> dict[str, Any]:
    """The report as plain data: JSON-safe copies of the inputs with every expected field
    present (None when unknown), non-finite floats as None and secrets redacted.

    Idempotent (a report's own sections fed back give the same report), which is how
    :func:`render_html` accepts a report read back from JSON. Nothing here raises on
    missing or odd values: a run stopped before its first step still gets its report.
    """
    run_data = _plain(run) if isinstance(run, Mapping) else {}
    run_data = {name: run_data.get(name) for name in _RUN_FIELDS} | run_data
    settings_data = _plain(settings) if isinstance(settings, Mapping) else {}
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
    }


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
        {name: _int(item.get(name)) for name in _RECOVERY_FIELDS}
        for item in items
        if isinstance(item, Mapping)
    ]


def _authorizations(items: Any) -> list[dict[str, Any]]:
    """The CSMS's verdicts on idTokens (:func:`loadgen.metrics.authorization_counts`):
    ``{"message", "status", "count"}`` each, rejections are every status but Accepted."""
    if not isinstance(items, Sequence) or isinstance(items, str):
        return []
    rows = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        count = _int(item.get("count"))
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


# -- files ----------------------------------------------------------------------------------


def _stamp(started: Any) -> str:
    """``YYYYmmdd-HHMMSS`` of the run's start (now, when that is unknown), for file names."""
    try:
        moment = datetime.fromisoformat(str(started))
    except ValueError:
        moment = datetime.now(UTC)
    return moment.strftime("%Y%m%d-%H%M%S")


def report_basename(report: Mapping[str, Any]) -> str:
    """``ocpp-report-<run id>-<YYYYmmdd-HHMMSS>``, the run id reduced to safe characters."""
    run = report.get("run") or {}
    run_id = _FILENAME_UNSAFE.sub("-", str(run.get("run_id") or "")).strip("-.") or "run"
    return f"ocpp-report-{run_id[:80]}-{_stamp(run.get('started'))}"


def _write_atomically(path: Path, text: str) -> None:
    """Write beside the target, then rename over it: a reader (a CI artefact upload, a
    browser reloading) never sees half a report."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide the report from its readers
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_reports(report: Mapping[str, Any], directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.html`` into ``directory`` (created if needed);
    returns their paths, JSON first."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    name = report_basename(report)
    json_path, html_path = folder / f"{name}.json", folder / f"{name}.html"
    text = json.dumps(_plain(report), indent=2, allow_nan=False, ensure_ascii=False)
    _write_atomically(json_path, text + "\n")
    _write_atomically(html_path, render_html(report))
    return json_path, html_path


# -- formatting -----------------------------------------------------------------------------

_DASH = "–"  # noqa: RUF001 (an en dash: "no value")


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _count(value: Any) -> str:
    number = _int(value)
    return _DASH if number is None else f"{number:,}"


def _ms(value: Any) -> str:
    number = _number(value)
    if number is None:
        return _DASH
    if abs(number) >= 100:
        return f"{number:,.0f}"
    return f"{number:.1f}" if abs(number) >= 10 else f"{number:.2f}"


def _pct(value: float | None) -> str:
    if value is None:
        return _DASH
    return "0%" if value == 0 else f"{value * 100:.3g}%"


def _float(value: Any, digits: int = 3) -> str:
    number = _number(value)
    if number is None:
        return _DASH
    return f"{number:,}" if isinstance(number, int) else f"{number:,.{digits}g}"


def _with_unit(text: str, unit: str) -> str:
    return text if text == _DASH else text + unit


def _ratio(part: Any, whole: Any) -> float | None:
    """``part / whole``; None when either is unknown or there is nothing to divide by."""
    part, whole = _number(part), _number(whole)
    if part is None or whole is None or whole <= 0:
        return None
    return part / whole


def _duration(seconds: Any) -> str:
    number = _number(seconds)
    if number is None:
        return _DASH
    if number < 120:
        return f"{number:.1f} s"
    minutes, secs = divmod(round(number), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


def _value(value: Any) -> str:
    """Any setting as short text (escaped by the caller)."""
    if value is None:
        return _DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _float(value, 6)
    if isinstance(value, dict):
        return ", ".join(f"{key}={_value(item)}" for key, item in value.items()) or _DASH
    if isinstance(value, list):
        return ", ".join(_value(item) for item in value) or _DASH
    return str(value) if value != "" else '""'


def _verdict(step: Mapping[str, Any]) -> tuple[str, str]:
    """(label, css class) of a step's verdict."""
    if step.get("generator_saturated"):
        return "SATURATED", "saturated"
    if step.get("ok") is True:
        return "OK", "ok"
    if step.get("ok") is False:
        return "FAIL", "fail"
    return _DASH, ""


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    """A table of already-escaped cells."""
    cls = f' class="{css}"' if css else ""
    header = "".join(f"<th>{cell}</th>" for cell in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{cls}><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def _key_values(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column table of (escaped name, escaped value)."""
    rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


# -- charts ---------------------------------------------------------------------------------

#: distinct on white and for the common colour-vision deficiencies (Tableau 10)
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#e15759",
    "#76b7b2",
    "#59a14f",
    "#edc948",
    "#b07aa1",
    "#ff9da7",
    "#9c755f",
    "#bab0ac",
)
_P99_DASH = "7 4"
_SLO_DASH = "2 3"
#: a point beyond this is dropped from a chart: no latency, ratio or count gets there, and
#: the scale arithmetic stays finite
_PLOTTABLE = 1e15


@dataclass(frozen=True)
class Series:
    """One line of a chart: (x, y) points, drawn in x order."""

    label: str
    points: tuple[tuple[float, float], ...]
    colour: str
    dash: str = ""
    #: on the right-hand axis (a second unit)
    right: bool = False
    marker: float = 3.0


@dataclass(frozen=True)
class Rule:
    """A horizontal reference line, an SLO say."""

    label: str
    y: float
    colour: str
    right: bool = False


def _points(pairs: Iterable[tuple[Any, Any]]) -> tuple[tuple[float, float], ...]:
    """The plottable pairs (both finite numbers), sorted by x."""
    kept = []
    for x, y in pairs:
        x, y = _number(x), _number(y)
        if x is not None and y is not None and abs(x) < _PLOTTABLE and abs(y) < _PLOTTABLE:
            kept.append((float(x), float(y)))
    return tuple(sorted(kept))


def _nice_step(span: float, count: int = 5) -> float:
    """A tick spacing of 1, 2, 2.5 or 5 times a power of ten, about ``count`` per span."""
    raw = span / count if span > 0 else 1.0
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)


def _ticks(low: float, high: float, step: float) -> list[float]:
    first, last = math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9)
    return [i * step for i in range(first, min(last, first + 50) + 1)]


def _tick_label(value: float, step: float) -> str:
    if abs(value) < step * 1e-6:
        value = 0.0
    if abs(value) >= 1e6:
        return f"{value:.3g}"
    exponent = math.floor(math.log10(step) + 1e-9)
    mantissa_decimals = 1 if round(step / 10.0**exponent, 6) == 2.5 else 0
    decimals = max(0, mantissa_decimals - exponent)
    return f"{value:,.{decimals}f}"


@dataclass(frozen=True)
class _Axis:
    """A linear scale from the data range [low, high] to pixels [start, end]."""

    low: float
    high: float
    start: float
    end: float
    step: float

    def __call__(self, value: float) -> float:
        return self.start + (value - self.low) / (self.high - self.low) * (self.end - self.start)

    def ticks(self) -> list[float]:
        return _ticks(self.low, self.high, self.step)


def _x_axis(values: Sequence[float], start: float, end: float) -> _Axis:
    """The data's range, padded a little so that the end markers are not on the frame."""
    low, high = min(values), max(values)
    if high - low <= 0:
        spread = max(1.0, abs(low) * 0.1)
        low, high = low - spread, high + spread
    step = _nice_step(high - low)
    pad = (high - low) * 0.03
    return _Axis(low - pad, high + pad, start, end, step)


def _y_axis(values: Sequence[float], start: float, end: float) -> _Axis:
    """From zero (or the lowest value, if negative) to a round number above the highest."""
    low = min([0.0, *values])
    high = max([0.0, *values])
    if high - low <= 0:
        high = low + 1.0
    step = _nice_step(high - low)
    low = math.floor(low / step + 1e-9) * step
    high = max(math.ceil(high / step - 1e-9) * step, low + step)
    return _Axis(low, high, start, end, step)


def _short(text: str, limit: int = 36) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def svg_chart(
    *,
    series: Sequence[Series],
    rules: Sequence[Rule] = (),
    x_label: str,
    y_label: str,
    y_label_right: str = "",
    describe: Callable[[float, float, Series], str] | None = None,
    caption: str = "",
) -> str:
    """A line chart as inline SVG: axes with ticks and labels, a legend, a marker with a
    tooltip per point, dotted reference lines. No data gives the frame and "no data".

    Charts are drawn here rather than by a JavaScript library so that the page needs
    nothing from the network and shows the same in a browser, a mail client or a PDF.
    """
    width, plot_height, top, bottom, left = 1040, 300, 16, 48, 72
    rules = [rule for rule in rules if abs(rule.y) < _PLOTTABLE]
    legend_width = 270
    right_margin = 64 if y_label_right else 20
    legend_rows = [(s.label, s.colour, s.dash) for s in series] + [
        (r.label, r.colour, _SLO_DASH) for r in rules
    ]
    height = max(top + plot_height + bottom, top + 18 * len(legend_rows) + 16)
    x0, x1 = left, width - legend_width - right_margin
    y0, y1 = top + plot_height, top  # pixels grow downwards
    drawn = [s for s in series if s.points]
    label = escape(f"{y_label} against {x_label}")
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{label}" font-size="12">',
        f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{plot_height}" class="plot"/>',
    ]
    if not drawn:
        out.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{top + plot_height / 2:.1f}" '
            'text-anchor="middle" class="nodata">no data</text>'
        )
    else:
        xs = [x for s in drawn for x, _ in s.points]
        x_axis = _x_axis(xs, x0, x1)
        left_ys = [p[1] for s in drawn if not s.right for p in s.points]
        left_ys += [r.y for r in rules if not r.right]
        right_ys = [p[1] for s in drawn if s.right for p in s.points]
        right_ys += [r.y for r in rules if r.right]
        y_axis = _y_axis(left_ys or [0.0], y0, y1)
        y_right = _y_axis(right_ys or [0.0], y0, y1)
        out += _draw_axes(x_axis, y_axis, y_right if y_label_right else None)
        for rule in rules:
            axis = y_right if rule.right else y_axis
            if axis.low <= rule.y <= axis.high:
                y = axis(rule.y)
                out.append(
                    f'<line x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}" stroke="{rule.colour}" '
                    f'stroke-width="1.5" stroke-dasharray="{_SLO_DASH}" class="rule" '
                    f'data-rule="{escape(rule.label)}"/>'
                )
        for one in drawn:
            out += _draw_series(one, x_axis, y_right if one.right else y_axis, describe)
    out.append(
        f'<text x="{(x0 + x1) / 2:.1f}" y="{y0 + 38}" '
        f'text-anchor="middle" class="axis-label">{escape(x_label)}</text>'
    )
    mid = top + plot_height / 2
    out.append(
        f'<text x="16" y="{mid:.1f}" transform="rotate(-90 16 {mid:.1f})" '
        f'text-anchor="middle" class="axis-label">{escape(y_label)}</text>'
    )
    if y_label_right:
        xr = x1 + right_margin - 8
        out.append(
            f'<text x="{xr}" y="{mid:.1f}" transform="rotate(90 {xr} {mid:.1f})" '
            f'text-anchor="middle" class="axis-label">{escape(y_label_right)}</text>'
        )
    out += _draw_legend(legend_rows, width - legend_width + 12, top + 6)
    out.append("</svg>")
    figcaption = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{''.join(out)}{figcaption}</figure>"


def _draw_axes(x_axis: _Axis, y_axis: _Axis, y_right: _Axis | None) -> list[str]:
    """Grid lines and tick labels (the grid follows the left axis)."""
    out = []
    bottom, top = y_axis.start, y_axis.end
    for tick in y_axis.ticks():
        y = y_axis(tick)
        out.append(
            f'<line x1="{x_axis.start}" x2="{x_axis.end}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
        )
        out.append(
            f'<text x="{x_axis.start - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">'
            f"{_tick_label(tick, y_axis.step)}</text>"
        )
    for tick in x_axis.ticks():
        x = x_axis(tick)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bottom}" y2="{bottom + 5}" class="axis"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="middle" class="tick">'
            f"{_tick_label(tick, x_axis.step)}</text>"
        )
    out.append(
        f'<line x1="{x_axis.start}" x2="{x_axis.end}" y1="{bottom}" y2="{bottom}" class="axis"/>'
    )
    out.append(
        f'<line x1="{x_axis.start}" x2="{x_axis.start}" y1="{bottom}" y2="{top}" class="axis"/>'
    )
    if y_right is not None:
        out.append(
            f'<line x1="{x_axis.end}" x2="{x_axis.end}" y1="{bottom}" y2="{top}" class="axis"/>'
        )
        for tick in y_right.ticks():
            y = y_right(tick)
            out.append(
                f'<text x="{x_axis.end + 6}" y="{y + 4:.1f}" text-anchor="start" class="tick">'
                f"{_tick_label(tick, y_right.step)}</text>"
            )
    return out


def _draw_series(
    one: Series,
    x_axis: _Axis,
    y_axis: _Axis,
    describe: Callable[[float, float, Series], str] | None,
) -> list[str]:
    """The line, then a marker per point with its value as a tooltip (no script needed)."""
    coords = [(x_axis(x), y_axis(y)) for x, y in one.points]
    dash = f' stroke-dasharray="{one.dash}"' if one.dash else ""
    points = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    out = [
        f'<polyline points="{points}" fill="none" stroke="{one.colour}" stroke-width="2"'
        f'{dash} data-series="{escape(one.label)}"/>'
    ]
    for (x, y), (px, py) in zip(one.points, coords, strict=True):
        tip = describe(x, y, one) if describe else f"{one.label}: {x:g}, {y:g}"
        out.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{one.marker}" fill="{one.colour}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    return out


def _draw_legend(rows: Sequence[tuple[str, str, str]], x: float, y: float) -> list[str]:
    out = ['<g class="legend">']
    for i, (label, colour, dash) in enumerate(rows):
        row_y = y + 18 * i
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<line x1="{x}" x2="{x + 26}" y1="{row_y:.1f}" y2="{row_y:.1f}" stroke="{colour}" '
            f'stroke-width="2.5"{dash_attr}/>'
        )
        out.append(
            f'<text x="{x + 32}" y="{row_y + 4:.1f}">{escape(_short(label))}'
            f"<title>{escape(label)}</title></text>"
        )
    out.append("</g>")
    return out


def _action_colours(report: Mapping[str, Any]) -> dict[str, str]:
    """One colour per action, the same in every chart and table of the page."""
    names: set[str] = set()
    for item in [*report["steps"], *report["timeline"], report["totals"] or {}]:
        names.update(item.get("actions") or {})
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(names))}


def _chart_source(report: Mapping[str, Any]) -> tuple[list[dict[str, Any]], str, str]:
    """What the per-load charts plot: the steps against their target, or without steps
    the timeline windows against the chargers connected in them."""
    if report["steps"]:
        return report["steps"], "chargers", "chargers (each step's target)"
    return report["timeline"], "connected", "chargers connected (timeline windows)"


def _latency_chart(report: Mapping[str, Any], colours: Mapping[str, str]) -> str:
    source, x_key, x_label = _chart_source(report)
    actions = sorted({name for item in source for name in item["actions"]})
    series = []
    for action in actions:
        for key, dash, marker in (("p95_ms", "", 3.0), ("p99_ms", _P99_DASH, 2.0)):
            points = _points(
                (item[x_key], item["actions"][action][key])
                for item in source
                if action in item["actions"]
            )
            label = f"{action} {key[:3]}"
            series.append(Series(label, points, colours[action], dash=dash, marker=marker))
    config = (report["capacity"] or {}).get("config") or {}
    overrides = config.get("p95_ms_by_action")
    overrides = overrides if isinstance(overrides, dict) else {}
    rules = []
    default = _number(config.get("p95_ms"))
    if default is not None and (not actions or any(a not in overrides for a in actions)):
        rules.append(Rule(f"p95 SLO {_ms(default)} ms", default, "#333333"))
    for action in actions:
        slo = _number(overrides.get(action))
        if slo is not None:
            rules.append(Rule(f"p95 SLO {action} {_ms(slo)} ms", slo, colours[action]))

    def describe(x: float, y: float, one: Series) -> str:
        return f"{one.label}: {_ms(y)} ms at {x:,.0f} chargers"

    return svg_chart(
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


def _error_chart(report: Mapping[str, Any]) -> str:
    source, x_key, x_label = _chart_source(report)
    config = (report["capacity"] or {}).get("config") or {}
    figures = (
        ("CALL error ratio", "call_errors", "calls", "max_call_error_ratio", PALETTE[2]),
        (
            "connect failure ratio",
            "connect_failures",
            "connect_attempts",
            "max_connect_failure_ratio",
            PALETTE[0],
        ),
        (
            "unexpected disconnect ratio",
            "unexpected_disconnects",
            "chargers",
            "max_disconnect_ratio",
            PALETTE[1],
        ),
    )
    series, rules = [], []
    for label, part, whole, slo_key, colour in figures:
        points = _points(
            (item[x_key], _percent(_ratio(item[part], item[whole]))) for item in source
        )
        series.append(Series(label, points, colour))
        slo = _number(config.get(slo_key))
        if slo is not None and points:
            rules.append(Rule(f"SLO {label} {_pct(slo)}", slo * 100, colour))

    def describe(x: float, y: float, one: Series) -> str:
        return f"{one.label}: {y:.3g}% at {x:,.0f} chargers"

    return svg_chart(
        series=series,
        rules=rules,
        x_label=x_label,
        y_label="% of CALLs / attempts / chargers",
        describe=describe,
        caption="CALLs not answered with a CALLRESULT, failed connection attempts and "
        "connections the CSMS closed, as ratios; dotted lines are their SLOs.",
    )


def _timeline_chart(report: Mapping[str, Any]) -> str:
    timeline = report["timeline"]
    longest = max((_number(w["t_s"]) or 0 for w in timeline), default=0)
    scale, unit = (60.0, "min") if longest > 1200 else (1.0, "s")

    def at(window: Mapping[str, Any]) -> float | None:
        t = _number(window["t_s"])
        return None if t is None else t / scale

    series = [
        Series(
            "chargers connected", _points((at(w), w["connected"]) for w in timeline), PALETTE[0]
        ),
        Series(
            "chargers target",
            _points((at(w), w["chargers"]) for w in timeline),
            PALETTE[9],
            dash=_P99_DASH,
            marker=2.0,
        ),
        Series(
            "messages/s (right axis)",
            _points((at(w), w["messages_per_s"]) for w in timeline),
            PALETTE[4],
            right=True,
        ),
    ]

    def describe(x: float, y: float, one: Series) -> str:
        return f"{one.label}: {y:,.4g} at {x:,.4g} {unit}"

    return svg_chart(
        series=series,
        x_label=f"time since the start ({unit})",
        y_label="chargers",
        y_label_right="messages/s",
        describe=describe,
        caption="Chargers connected (and asked for) and messages per second, per window.",
    )


def _rate_chart(report: Mapping[str, Any]) -> str:
    """The connect-rate steps: what the CSMS booted against what was offered, and the
    ramp's BootNotification p95 against its SLO."""
    capacity = report["capacity"] or {}
    steps = sorted(
        (s for s in capacity.get("connect_rate_steps") or [] if s["rate"] is not None),
        key=lambda s: s["rate"],
    )
    series = []
    for label, ok, colour in (
        ("kept pace: booted/s", True, PALETTE[0]),
        ("did not: booted/s", False, PALETTE[2]),
    ):
        points = _points((s["rate"], s["admitted_per_s"]) for s in steps if s["ok"] is ok)
        series.append(Series(label, points, colour, dash="2 6", marker=5.0))
    offered = _points((s["rate"], s["rate"]) for s in steps)
    series.append(Series("offered", offered, PALETTE[9], dash=_P99_DASH, marker=2.0))
    series.append(
        Series(
            "p95 BootNotification ms (right axis)",
            _points((s["rate"], s["boot_p95_ms"]) for s in steps),
            PALETTE[4],
            right=True,
        )
    )
    slo = _number((capacity.get("config") or {}).get("boot_p95_ms"))
    rules = [Rule(f"SLO boot p95 {_ms(slo)} ms", slo, PALETTE[4], right=True)] if slo else []

    def describe(x: float, y: float, one: Series) -> str:
        return f"{one.label}: {y:,.4g} at {x:,.4g} chargers/s offered"

    return svg_chart(
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


# -- the page -------------------------------------------------------------------------------

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
            f"OCPP {_e(run['ocpp_version'])}" if run.get("ocpp_version") else "",
            f"profile {_e(run['profile'])}" if run.get("profile") else "",
            f"{_count(run.get('workers'))} workers" if _int(run.get("workers")) else "",
            f"ran {_duration(run.get('duration_s'))}" if _number(run.get("duration_s")) else "",
            f"exit code {run['exit_code']}" if _int(run.get("exit_code")) is not None else "",
        )
        if fact
    )
    lines: list[str] = []
    if capacity is None:
        css = "none"
        lines.append('<p class="answer-line">No capacity search in this run</p>')
        totals = report["totals"]
        if totals:
            error = _pct(_ratio(totals["call_errors"], totals["calls"]))
            lines.append(
                f'<p class="why">{_count(totals["calls"])} CALLs, CALL error ratio {error}.</p>'
            )
    else:
        why = _e(capacity["stopped_because"] or "unknown")
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
    why = _e(capacity.get("connect_rate_stopped_because") or "not searched")
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
        shown = _duration(value) if key == "duration_s" else _value(value)
        pairs.append((_e(names.get(key, key)), _e(shown)))
    settings = report["settings"]
    setting_pairs = [(_e(key), _e(_value(value))) for key, value in settings.items()]
    settings_html = (
        _key_values(setting_pairs) if setting_pairs else '<p class="note">none recorded</p>'
    )
    return (
        '<section id="run"><h2>Run and settings</h2><div class="grid2">'
        f"<div><h3>Run</h3>{_key_values(pairs)}</div>"
        f"<div><h3>Settings</h3>{settings_html}</div></div></section>"
    )


def _limit(value: Any, unit: str = "") -> str:
    number = _number(value)
    return "off" if number is None else f"{_float(number, 6)}{unit}"


def _ratio_limit(value: Any) -> str:
    number = _number(value)
    return "off" if number is None else _pct(number)


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
        shown = _duration(value) if key == "hold_seconds" else _value(value)
        search.append((search_names.get(key, key), shown))

    def table(pairs: list[tuple[str, str]]) -> str:
        return _key_values((_e(name), _e(value)) for name, value in pairs)

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
    if isinstance(overrides, dict) and _number(overrides.get(action)) is not None:
        return _number(overrides[action])
    return _number(config.get("p95_ms"))


def _latency_cells(action: str, stats: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    slo = _p95_slo(config, action)
    p95 = stats["p95_ms"]
    over = slo is not None and p95 is not None and p95 > slo
    p95_cell = f'<td class="over">{_ms(p95)}</td>' if over else f"<td>{_ms(p95)}</td>"
    return (
        f"<td>{_count(stats['count'])}</td><td>{_count(stats['errors'])}</td>"
        f"<td>{_ms(stats['p50_ms'])}</td>{p95_cell}<td>{_ms(stats['p99_ms'])}</td>"
    )


def _codes(codes: Mapping[str, Any]) -> str:
    if not codes:
        return ""
    text = ", ".join(f"{code} {_count(n)}" for code, n in codes.items())
    return f'<span class="codes">{_e(text)}</span>'


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
    label, css = _verdict(step)
    answer = step["ok"] is True and step["chargers"] == capacity.get("max_chargers")
    chargers = _count(step["chargers"]) + ('<span class="badge">answer</span>' if answer else "")
    error_ratio = _pct(_ratio(step["call_errors"], step["calls"]))
    failure_ratio = _pct(_ratio(step["connect_failures"], step["connect_attempts"]))
    actions = list(step["actions"].items()) or [("", None)]
    span = f' rowspan="{len(actions)}"' if len(actions) > 1 else ""
    shared = "".join(
        f"<td{span}{cls}>{cell}</td>"
        for cell, cls in (
            (str(index), ""),
            (_e(step["phase"] or _DASH), ' class="text"'),
            (chargers, ""),
            (_count(step["connected"]), ""),
            (f'<span class="verdict {css}">{label}</span>', ' class="text"'),
            (_float(step["messages_per_s"]), ""),
            (_count(step["calls"]), ""),
            (f"{_count(step['call_errors'])} ({error_ratio}){_codes(step['error_codes'])}", ""),
            (
                f"{_count(step['connect_failures'])}/{_count(step['connect_attempts'])}"
                f" ({failure_ratio})",
                "",
            ),
            (_count(step["unexpected_disconnects"]), ""),
            (_ms(step["schedule_lag_p99_ms"]), ""),
            (_float(step["cpu"]), ""),
        )
    )
    rows = []
    for i, (action, stats) in enumerate(actions):
        if stats is None:
            cells = '<td class="text action-start" colspan="6">no CALLs</td>'
        else:
            swatch = f'<span class="swatch" style="background:{colours[action]}"></span>'
            cells = f'<td class="text action-start">{swatch}{_e(action)}</td>'
            cells += _latency_cells(action, stats, config)
        rows.append(f"<tr>{shared if i == 0 else ''}{cells}</tr>")
    if step["reasons"]:
        reasons = "; ".join(_e(reason) for reason in step["reasons"])
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
    summary = [
        ("measured", _duration(totals["seconds"])),
        ("CALLs", _count(totals["calls"])),
        (
            "CALL errors",
            f"{_count(totals['call_errors'])} "
            f"({_pct(_ratio(totals['call_errors'], totals['calls']))})",
        ),
        (
            "connect failures",
            f"{_count(totals['connect_failures'])} of {_count(totals['connect_attempts'])} "
            f"attempts ({_pct(_ratio(totals['connect_failures'], totals['connect_attempts']))})",
        ),
        ("unexpected disconnects", _count(totals["unexpected_disconnects"])),
        ("messages/s", _float(totals["messages_per_s"])),
        ("schedule lag p99", _with_unit(_ms(totals["schedule_lag_p99_ms"]), " ms")),
        ("load-generator CPU", _float(totals["cpu"])),
    ]
    rows = []
    for action, stats in totals["actions"].items():
        swatch = f'<span class="swatch" style="background:{colours[action]}"></span>'
        slo = _p95_slo(config, action)
        rows.append(
            [
                f"{swatch}{_e(action)}",
                _count(stats["count"]),
                _count(stats["errors"]),
                _pct(_ratio(stats["errors"], stats["count"])),
                _ms(stats["p50_ms"]),
                _ms(stats["p95_ms"]),
                _ms(stats["p99_ms"]),
                _DASH if slo is None else _ms(slo),
            ]
        )
    head = ["action", "CALLs", "errors", "error %", "p50 ms", "p95 ms", "p99 ms", "p95 SLO ms"]
    actions = _table(head, rows, "actions") if rows else '<p class="note">No CALLs.</p>'
    codes = [(_e(code), _count(n)) for code, n in totals["error_codes"].items()]
    codes_html = (
        f"<div><h3>CALL errors by code</h3>{_table(['code', 'CALLs'], codes)}</div>"
        if codes
        else ""
    )
    return (
        '<section id="totals"><h2>Totals over the run</h2><div class="grid2">'
        f"<div><h3>Summary</h3>{_key_values((_e(k), _e(v)) for k, v in summary)}</div>"
        f"<div><h3>Per action</h3>{actions}</div>{codes_html}</div></section>"
    )


def _charts_section(report: Mapping[str, Any], colours: Mapping[str, str]) -> str:
    basis = "each capacity step" if report["steps"] else "the timeline windows"
    parts = [
        '<section id="charts"><h2>Charts</h2>',
        f"<h3>Latency against chargers ({basis})</h3>",
        _latency_chart(report, colours),
        f"<h3>Errors against chargers ({basis})</h3>",
        _error_chart(report),
    ]
    if (report["capacity"] or {}).get("connect_rate_steps"):
        parts += ["<h3>Connect rate (each rate step)</h3>", _rate_chart(report)]
    if report["timeline"]:
        parts += ["<h3>Over time</h3>", _timeline_chart(report)]
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
            _duration(item["at_s"]),
            f"{_count(item['lost'])} of {_count(item['booted_before'])}",
            _duration(item["recovered_s"])
            if item["recovered_s"] is not None
            else f"not by the end ({_count(item['rebooted'])} back)",
            _count(item["peak_reboots_per_s"]),
            _count(item["connect_failures"]),
            _count(item["boot_failures"]),
        )
        for item in events
    ]
    head = ("at", "chargers lost", "99 % booted again after", "peak boots/s")
    return (
        '<section id="recovery"><h2>Recovery after mass disconnects</h2>'
        + _table((*head, "connect failures", "boot failures"), rows)
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
        f'<p class="why">{_count(rejected)} rejections of {_count(total)} verdicts on idTokens '
        "(a rejected Authorize starts no transaction; a rejected TransactionEvent / "
        "StartTransaction ends it, DeAuthorized).</p>"
        + _table(
            ("message", "status", "count"),
            ((_e(row["message"]), _e(row["status"]), _count(row["count"])) for row in ordered),
        )
        + "</section>"
    )


def render_html(report: Mapping[str, Any]) -> str:
    """The report as one HTML page that needs nothing else: open it from a file, offline.

    Takes :func:`build_report`'s result, or the same read back from the JSON file.
    """
    report = build_report(
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
    colours = _action_colours(report)
    run_id = _e(run["run_id"] or "(no run id)")
    host = _e(run["host"] or "(unknown CSMS)")
    versions = f"ocpp-loadgen {_e(run['loadgen_version'] or '?')}"
    if run["locust_version"]:
        versions += f" on Locust {_e(run['locust_version'])}"
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
            f"{' · started ' + _e(run['started']) if run['started'] else ''}</p></header>",
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
            f"<footer>{versions} · report format {REPORT_KIND} v{REPORT_VERSION}</footer>",
            "</body>",
            "</html>",
            "",
        ]
    )
