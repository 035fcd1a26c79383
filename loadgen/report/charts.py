"""Line charts as inline SVG, drawn in Python: axes, ticks, legend, tooltips.

Charts are drawn here rather than by a JavaScript library so that the page needs nothing
from the network and shows the same in a browser, a mail client or a PDF.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from loadgen.report import format as fmt
from loadgen.report import model

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
P99_DASH = "7 4"
SLO_DASH = "2 3"
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


def plottable(pairs: Iterable[tuple[Any, Any]]) -> tuple[tuple[float, float], ...]:
    """The plottable pairs (both finite numbers), sorted by x."""
    kept = []
    for x, y in pairs:
        x, y = model.as_number(x), model.as_number(y)
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
        return f"{value:,.0f}"
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
        (r.label, r.colour, SLO_DASH) for r in rules
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
                    f'stroke-width="1.5" stroke-dasharray="{SLO_DASH}" class="rule" '
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
        if describe is not None:
            tip = describe(x, y, one)
        else:
            tip = f"{one.label}: {fmt.figure(x, 6)}, {fmt.figure(y, 6)}"
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
