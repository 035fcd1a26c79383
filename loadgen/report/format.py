"""Numbers and text for people: thousands separators, sensible decimals, units, a dash for
"no value", and the escaped HTML tables every section is made of."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from loadgen.report import model

DASH = "–"  # noqa: RUF001 (an en dash: "no value")


def esc(value: Any) -> str:
    return escape(str(value), quote=True)


def count(value: Any) -> str:
    number = model.as_int(value)
    return DASH if number is None else f"{number:,}"


def ms(value: Any) -> str:
    number = model.as_number(value)
    if number is None:
        return DASH
    if abs(number) >= 100:
        return f"{number:,.0f}"
    return f"{number:.1f}" if abs(number) >= 10 else f"{number:.2f}"


def pct(value: float | None) -> str:
    if value is None:
        return DASH
    return "0%" if value == 0 else f"{figure(value * 100)}%"


#: the most decimals a figure gets (a ratio of one in a billion still shows)
_MAX_DECIMALS = 12


def figure(value: Any, digits: int = 3) -> str:
    """A number with about ``digits`` significant digits, thousands separated and never in
    exponent notation: 1,550 (not 1.55e+03), 12.3, 0.0042; whole numbers stay whole."""
    number = model.as_number(value)
    if number is None:
        return DASH
    if isinstance(number, int) or number == 0:
        return f"{number:,.0f}"
    magnitude = math.floor(math.log10(abs(number)))
    decimals = min(_MAX_DECIMALS, max(0, digits - 1 - magnitude))
    text = f"{number:,.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def with_unit(text: str, unit: str) -> str:
    return text if text == DASH else text + unit


def ratio(part: Any, whole: Any) -> float | None:
    """``part / whole``; None when either is unknown or there is nothing to divide by."""
    part, whole = model.as_number(part), model.as_number(whole)
    if part is None or whole is None or whole <= 0:
        return None
    return part / whole


def duration(seconds: Any) -> str:
    number = model.as_number(seconds)
    if number is None:
        return DASH
    if number < 120:
        return f"{number:.1f} s"
    minutes, secs = divmod(round(number), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


def setting_text(value: Any) -> str:
    """Any setting as short text (escaped by the caller)."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return figure(value, 6)
    if isinstance(value, dict):
        return ", ".join(f"{key}={setting_text(item)}" for key, item in value.items()) or DASH
    if isinstance(value, list):
        return ", ".join(setting_text(item) for item in value) or DASH
    return str(value) if value != "" else '""'


def verdict(step: Mapping[str, Any]) -> tuple[str, str]:
    """(label, css class) of a step's verdict."""
    if step.get("generator_saturated"):
        return "SATURATED", "saturated"
    if step.get("ok") is True:
        return "OK", "ok"
    if step.get("ok") is False:
        return "FAIL", "fail"
    return DASH, ""


def table(head: Sequence[str], rows: Iterable[Sequence[str]], css: str = "") -> str:
    """A table of already-escaped cells."""
    cls = f' class="{css}"' if css else ""
    header = "".join(f"<th>{cell}</th>" for cell in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{cls}><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def key_values(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column table of (escaped name, escaped value)."""
    rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'
