"""Geometry of the inline SVG chart, computed at publish time (the page runs no script).

The template only draws what :func:`build_chart` returns: one candle group per recent candle,
the forecast line with one marker per point, its interval band, and a vertical boundary where the
forecast starts. Coordinates are rounded to 0.1 px so unchanged data renders to unchanged bytes.

Which forecast points are drawn is decided by the caller (``SeriesState.shown_points``, the
same rows as the page's forecast table); the chart puts them in the slots after the last candle.

Text sizes: the SVG scales with the page width, so its text does too. The stylesheet sets
:data:`PHONE_FONT` user units on narrow screens (about 11.5 px at 390 px wide) and
:data:`DESKTOP_FONT` elsewhere; the margins here are sized for the larger one, so no label is
cut at the edges, and the time axis carries three labels (start, middle, end) that cannot overlap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from .format import format_change, format_price, format_ts
from .models import ForecastPoint
from ..timeframes import Timeframe, to_datetime

__all__ = ["CHART_MAX_CANDLES", "PHONE_FONT", "DESKTOP_FONT", "ChartCandle", "ChartPoint", "Chart", "build_chart", "nice_ticks",
           "candles_markup", "points_markup", "forecast_rows_markup"]

CHART_MAX_CANDLES = 120
WIDTH, HEIGHT = 960.0, 400.0
PHONE_FONT, DESKTOP_FONT = 32.0, 14.0
CHAR_EM = 0.62  # advance of a digit/comma in system-ui, in em (generous: tabular digits ~0.55)
PAD_LEFT, PAD_TOP, PAD_BOTTOM = 12.0, 24.0, PHONE_FONT + 14.0
TICK_TARGET = 6  # a nice step is < 2x the raw one: 3 to 7 ticks
_AXIS_FORMATS = {"1m": "%m-%d %H:%M", "1h": "%m-%d %H:%M", "1d": "%Y-%m-%d", "1w": "%Y-%m-%d", "1M": "%Y-%m"}


@dataclass(frozen=True)
class ChartCandle:
    ts: int
    x: float
    body_x: float
    body_w: float
    body_y: float
    body_h: float
    wick_top: float
    wick_bottom: float
    up: bool
    title: str


@dataclass(frozen=True)
class ChartPoint:
    ts: int
    x: float
    y: float
    title: str


@dataclass
class Chart:
    width: float = WIDTH
    height: float = HEIGHT
    candles: list[ChartCandle] = field(default_factory=list)
    points: list[ChartPoint] = field(default_factory=list)
    line: str = ""
    band: str = ""
    boundary_x: float | None = None
    grid: list[tuple[float, str]] = field(default_factory=list)  # y, price label (round values)
    x_labels: list[tuple[float, str, str]] = field(default_factory=list)  # x, text, text-anchor
    plot_top: float = PAD_TOP
    plot_bottom: float = HEIGHT - PAD_BOTTOM
    plot_right: float = WIDTH - 100.0


def _r(value: float) -> float:
    return round(value, 1)


def nice_ticks(low: float, high: float, target: int = TICK_TARGET) -> tuple[list[float], int]:
    """Round tick values inside [low, high] (step 1, 2, 2.5 or 5 x 10^k) and the decimals they need."""
    span = high - low
    if not (math.isfinite(span) and span > 0):
        return [], 0
    raw = span / target
    power = 10.0 ** math.floor(math.log10(raw))
    mantissa = next(m for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw * (1 - 1e-9))
    step = mantissa * power
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) + (1 if mantissa == 2.5 else 0)
    first = math.ceil(low / step - 1e-9)
    values = []
    for i in range(first, math.floor(high / step + 1e-9) + 1):
        values.append(round(i * step, decimals + 2))
    return values, decimals


def _tick_label(value: float, decimals: int) -> str:
    return f"{value:,.{decimals}f}"


class _Scale:
    """Slot index -> x and price -> y over the plot area; ``xs``/``ys`` do a whole column at once
    (a page has ~600 coordinates: one ``round`` each was a fifth of rendering it)."""

    def __init__(self, slots: int, low: float, high: float, plot_right: float) -> None:
        self.low, self.high = low, high
        self.step = (plot_right - PAD_LEFT) / max(slots, 1)

    def x(self, slot: int) -> float:
        return _r(PAD_LEFT + (slot + 0.5) * self.step)

    def y(self, price: float) -> float:
        span = self.high - self.low
        return _r(PAD_TOP + (self.high - price) / span * (HEIGHT - PAD_TOP - PAD_BOTTOM))

    def xs(self, first: int, n: int) -> list[float]:
        """:meth:`x` of ``n`` slots from ``first`` (the same arithmetic, element-wise)."""
        return _rounded(PAD_LEFT + (np.arange(first, first + n) + 0.5) * self.step)

    def ys(self, prices: np.ndarray) -> list[float]:
        """:meth:`y` of every price."""
        span = self.high - self.low
        return _rounded(PAD_TOP + (self.high - prices) / span * (HEIGHT - PAD_TOP - PAD_BOTTOM))


def _rounded(values: np.ndarray) -> list[float]:
    """``round(v, 1)`` of each value, as Python floats, bit for bit.

    numpy rounds ``v * 10`` half to even, Python the exact binary value of ``v``: they differ
    only next to a half (13.05 is 13.0500000000000007 in binary, so Python gives 13.1 and
    numpy 13.0), and such values get Python's own ``round``.
    """
    values = np.asarray(values, dtype="float64")
    out = np.round(values, 1)
    scaled = values * 10
    for i in np.flatnonzero(np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6):
        out[i] = round(float(values[i]), 1)
    return out.tolist()  # type: ignore[no-any-return]


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    return frame[name].to_numpy(dtype="int64" if name == "ts" else "float64")


def _candles(frame: pd.DataFrame, scale: _Scale, tf: Timeframe, unit: str) -> list[ChartCandle]:
    body_w = _r(max(1.0, scale.step * 0.64))
    ts, open_, high, low, close = (_column(frame, c) for c in ("ts", "open", "high", "low", "close"))
    xs = scale.xs(0, len(ts))
    body_x = _rounded(np.asarray(xs) - body_w / 2)
    tops, bottoms = np.asarray(scale.ys(np.maximum(open_, close))), np.asarray(scale.ys(np.minimum(open_, close)))
    body_h = _rounded(np.maximum(bottoms - tops, 0.8))
    wick_tops, wick_bottoms = scale.ys(high), scale.ys(low)
    out = []
    for i, (t, o, h, lo, c) in enumerate(zip(ts.tolist(), open_.tolist(), high.tolist(), low.tolist(), close.tolist())):
        title = (f"candle opening {format_ts(t, tf)}: O {format_price(o)} H {format_price(h)} "
                 f"L {format_price(lo)} C {format_price(c, unit)}")
        out.append(ChartCandle(ts=t, x=xs[i], body_x=body_x[i], body_w=body_w, body_y=float(tops[i]), body_h=body_h[i],
                               wick_top=wick_tops[i], wick_bottom=wick_bottoms[i], up=c >= o, title=title))
    return out


def _forecast(points: pd.DataFrame, first_slot: int, scale: _Scale, tf: Timeframe, unit: str, chart: Chart) -> None:
    ts, yhat, lower, upper = (_column(points, c) for c in ("ts", "yhat", "yhat_lower", "yhat_upper"))
    xs, ys = scale.xs(first_slot, len(ts)), scale.ys(yhat)
    for t, x, y, mid, lo, hi in zip(ts.tolist(), xs, ys, yhat.tolist(), lower.tolist(), upper.tolist()):
        title = (f"candle opening {format_ts(t, tf)}: forecast {format_price(mid, unit)} "
                 f"({format_price(lo)} – {format_price(hi, unit)})")
        chart.points.append(ChartPoint(ts=t, x=x, y=y, title=title))
    upper_xy = [f"{x},{y}" for x, y in zip(xs, scale.ys(upper))]
    lower_xy = [f"{x},{y}" for x, y in zip(xs, scale.ys(lower))]
    chart.line = " ".join(f"{p.x},{p.y}" for p in chart.points)
    chart.band = " ".join(upper_xy + lower_xy[::-1])
    chart.boundary_x = _r(PAD_LEFT + first_slot * scale.step)


def _time_labels(chart: Chart, scale: _Scale, stamps: list[int], tf: Timeframe) -> None:
    last, fmt = len(stamps) - 1, _AXIS_FORMATS.get(tf, "%Y-%m-%d %H:%M")
    for slot in sorted({0, last // 2, last}) if stamps else []:
        # The outer labels hang inwards so they are not clipped at the chart's edges.
        anchor = "start" if slot == 0 else "end" if slot == last else "middle"
        x = PAD_LEFT if slot == 0 else chart.plot_right if slot == last else scale.x(slot)
        chart.x_labels.append((x, to_datetime(stamps[slot]).strftime(fmt), anchor))


def build_chart(candles: pd.DataFrame, points: pd.DataFrame | None, tf: Timeframe, unit: str = "") -> Chart:
    """Chart of the latest :data:`CHART_MAX_CANDLES` candles and, if given, the forecast points."""
    recent = candles.tail(CHART_MAX_CANDLES).reset_index(drop=True)
    forecast = points.reset_index(drop=True) if points is not None and not points.empty and not recent.empty else None
    lows = list(recent["low"]) + ([] if forecast is None else list(forecast["yhat_lower"]))
    highs = list(recent["high"]) + ([] if forecast is None else list(forecast["yhat_upper"]))
    chart = Chart()
    if not lows:
        return chart
    low, high = _padded(float(min(lows)), float(max(highs)))
    ticks, decimals = nice_ticks(low, high)
    labels = [_tick_label(v, decimals) for v in ticks]
    chart.plot_right = _r(WIDTH - 10 - CHAR_EM * PHONE_FONT * max((len(t) for t in labels), default=6) - 8)
    slots = len(recent) + (0 if forecast is None else len(forecast))
    scale = _Scale(slots, low, high, chart.plot_right)
    chart.grid = [(scale.y(v), label) for v, label in zip(ticks, labels)]
    chart.candles = _candles(recent, scale, tf, unit)
    if forecast is not None:
        _forecast(forecast, len(recent), scale, tf, unit, chart)
    stamps = [int(t) for t in recent["ts"]] + ([] if forecast is None else [int(t) for t in forecast["ts"]])
    _time_labels(chart, scale, stamps, tf)
    return chart


def _padded(low: float, high: float) -> tuple[float, float]:
    """The price range the plot spans: the data's plus 6 % each side (a flat series gets 1 %)."""
    pad = (high - low) * 0.06 or abs(high) * 0.01 or 1.0
    return low - pad, high + pad


# The two per-candle/per-point loops of the chart are drawn here rather than in _chart.html: a
# Jinja loop over 120 candles made ~30k template calls per page. Only numbers (formatted by
# Python) and escaped text go in, so the markup is as safe as the template's autoescape made it.
_CANDLE = ('    <g class="candle {cls}" data-ts="{c.ts}"><title>{title}</title><line class="wick" x1="{c.x}" x2="{c.x}" '
           'y1="{c.wick_top}" y2="{c.wick_bottom}"/><rect class="body" x="{c.body_x}" y="{c.body_y}" '
           'width="{c.body_w}" height="{c.body_h}"/></g>\n')
_POINT = ('    <circle class="forecast-point" data-ts="{p.ts}" cx="{p.x}" cy="{p.y}" r="2.6">'
          '<title>{title}</title></circle>\n')


def candles_markup(chart: Chart) -> Markup:
    """The ``<g class="candle">`` elements of the chart, one line each."""
    return Markup("".join(_CANDLE.format(c=c, cls="up" if c.up else "down", title=escape(c.title)) for c in chart.candles))


def points_markup(chart: Chart) -> Markup:
    """The ``<circle class="forecast-point">`` elements of the chart, one line each."""
    return Markup("".join(_POINT.format(p=p, title=escape(p.title)) for p in chart.points))


_ROW = ('    <tr data-ts="{ts}"><td>{when}</td><td>{yhat}</td><td>{low}</td><td>{high}</td>'
        '<td>{change}</td></tr>\n')


def forecast_rows_markup(rows: list[ForecastPoint], last_close: float | None) -> Markup:
    """The forecast table's ``<tr>`` rows, one line each (a Jinja loop cost a third of a page)."""
    return Markup("".join(_ROW.format(
        ts=int(r.ts), when=escape(format_ts(r.ts, "1m")), yhat=escape(format_price(r.yhat)),
        low=escape(format_price(r.yhat_lower)), high=escape(format_price(r.yhat_upper)),
        change=escape(format_change(r.yhat, last_close))) for r in rows))
