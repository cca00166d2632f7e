"""Geometry of the inline SVG chart, computed at publish time (the page runs no script).

The template only draws what :func:`build_chart` returns: one candle group per recent candle,
the forecast line with one marker per point, its interval band, and a vertical boundary where the
forecast starts. Coordinates are rounded to 0.1 px so unchanged data renders to unchanged bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from .format import format_price, format_ts
from ..timeframes import Timeframe

__all__ = ["CHART_MAX_CANDLES", "ChartCandle", "ChartPoint", "Chart", "build_chart"]

CHART_MAX_CANDLES = 120
WIDTH, HEIGHT = 960.0, 400.0
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 12.0, 86.0, 16.0, 28.0
GRID_LINES = 5


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
    grid: list[tuple[float, str]] = field(default_factory=list)
    x_labels: list[tuple[float, str, str]] = field(default_factory=list)  # x, text, text-anchor
    plot_top: float = PAD_TOP
    plot_bottom: float = HEIGHT - PAD_BOTTOM
    plot_right: float = WIDTH - PAD_RIGHT


def _r(value: float) -> float:
    return round(value, 1)


class _Scale:
    """Slot index -> x and price -> y over the plot area."""

    def __init__(self, slots: int, low: float, high: float) -> None:
        pad = (high - low) * 0.06 or abs(high) * 0.01 or 1.0
        self.low, self.high = low - pad, high + pad
        self.step = (WIDTH - PAD_LEFT - PAD_RIGHT) / max(slots, 1)

    def x(self, slot: int) -> float:
        return _r(PAD_LEFT + (slot + 0.5) * self.step)

    def y(self, price: float) -> float:
        span = self.high - self.low
        return _r(PAD_TOP + (self.high - price) / span * (HEIGHT - PAD_TOP - PAD_BOTTOM))


def _candles(frame: pd.DataFrame, scale: _Scale, tf: Timeframe) -> list[ChartCandle]:
    body_w = _r(max(1.0, scale.step * 0.64))
    out = []
    for slot, row in enumerate(frame.itertuples(index=False)):
        x = scale.x(slot)
        top, bottom = scale.y(max(row.open, row.close)), scale.y(min(row.open, row.close))
        title = (f"{format_ts(int(row.ts), tf)} O {format_price(row.open)} H {format_price(row.high)} "
                 f"L {format_price(row.low)} C {format_price(row.close)}")
        out.append(ChartCandle(
            ts=int(row.ts), x=x, body_x=_r(x - body_w / 2), body_w=body_w, body_y=top,
            body_h=_r(max(bottom - top, 0.8)), wick_top=scale.y(row.high), wick_bottom=scale.y(row.low),
            up=row.close >= row.open, title=title,
        ))
    return out


def _forecast(points: pd.DataFrame, first_slot: int, scale: _Scale, tf: Timeframe, chart: Chart) -> None:
    upper, lower = [], []
    for i, row in enumerate(points.itertuples(index=False)):
        x = scale.x(first_slot + i)
        title = (f"{format_ts(int(row.ts), tf)} forecast {format_price(row.yhat)} "
                 f"({format_price(row.yhat_lower)} – {format_price(row.yhat_upper)})")
        chart.points.append(ChartPoint(ts=int(row.ts), x=x, y=scale.y(row.yhat), title=title))
        upper.append(f"{x},{scale.y(row.yhat_upper)}")
        lower.append(f"{x},{scale.y(row.yhat_lower)}")
    chart.line = " ".join(f"{p.x},{p.y}" for p in chart.points)
    chart.band = " ".join(upper + lower[::-1])
    chart.boundary_x = _r(PAD_LEFT + first_slot * scale.step)


def _labels(chart: Chart, scale: _Scale, stamps: list[int], tf: Timeframe) -> None:
    for i in range(GRID_LINES):
        price = scale.low + (scale.high - scale.low) * (i + 0.5) / GRID_LINES
        chart.grid.append((scale.y(price), format_price(price)))
    last = len(stamps) - 1
    for slot in sorted({0, len(stamps) // 3, 2 * len(stamps) // 3, last}) if stamps else []:
        # The outer labels hang inwards so they are not clipped at the chart's edges.
        anchor = "start" if slot == 0 else "end" if slot == last else "middle"
        x = PAD_LEFT if slot == 0 else chart.plot_right if slot == last else scale.x(slot)
        chart.x_labels.append((x, format_ts(stamps[slot], tf), anchor))


def build_chart(candles: pd.DataFrame, points: pd.DataFrame | None, tf: Timeframe) -> Chart:
    """Chart of the latest :data:`CHART_MAX_CANDLES` candles and, if given, the forecast."""
    recent = candles.tail(CHART_MAX_CANDLES).reset_index(drop=True)
    if points is not None and not recent.empty:
        # Points are drawn in the slots after the last candle, so only future ones belong
        # there (a kept, degraded forecast can start at candles that have closed since).
        points = points[points["ts"] > int(recent["ts"].iloc[-1])].reset_index(drop=True)
    forecast = points if points is not None and not points.empty else None
    lows = list(recent["low"]) + ([] if forecast is None else list(forecast["yhat_lower"]))
    highs = list(recent["high"]) + ([] if forecast is None else list(forecast["yhat_upper"]))
    chart = Chart()
    if not lows:
        return chart
    slots = len(recent) + (0 if forecast is None else len(forecast))
    scale = _Scale(slots, float(min(lows)), float(max(highs)))
    chart.candles = _candles(recent, scale, tf)
    if forecast is not None:
        _forecast(forecast, len(recent), scale, tf, chart)
    stamps = [int(t) for t in recent["ts"]] + ([] if forecast is None else [int(t) for t in forecast["ts"]])
    _labels(chart, scale, stamps, tf)
    return chart
