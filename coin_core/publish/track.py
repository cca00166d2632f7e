"""Geometry of the track-record chart: past one-step forecasts against the closes that came true.

Same conventions as :mod:`coin_core.publish.chart` (computed at publish time, rounded to 0.1 px,
no script): the realised closes as a line, the served one-step forecasts as a second line with a
marker per point, and the served 80 % band around them, so a reader sees at a glance how often
the band held.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from markupsafe import Markup, escape

from ..lifecycle.report import ChartPoint as TrackPoint
from ..timeframes import Timeframe
from .chart import (
    CHAR_EM, HEIGHT, PAD_BOTTOM, PAD_TOP, PHONE_FONT, WIDTH, Chart, _padded, _r, _Scale, _tick_label, _time_labels,
    nice_ticks,
)
from .format import format_price, format_ts

__all__ = ["TrackMarker", "TrackChart", "build_track_chart", "markers_markup"]


@dataclass(frozen=True)
class TrackMarker:
    ts: int
    x: float
    y: float
    covered: bool
    title: str


@dataclass
class TrackChart:
    width: float = WIDTH
    height: float = HEIGHT
    actual: str = ""
    forecast: str = ""
    band: str = ""
    markers: list[TrackMarker] = field(default_factory=list)
    grid: list[tuple[float, str]] = field(default_factory=list)
    x_labels: list[tuple[float, str, str]] = field(default_factory=list)
    plot_top: float = PAD_TOP
    plot_bottom: float = HEIGHT - PAD_BOTTOM
    plot_right: float = WIDTH - 100.0

    @property
    def covered(self) -> int:
        return sum(1 for m in self.markers if m.covered)


def build_track_chart(points: list[TrackPoint], tf: Timeframe) -> TrackChart | None:
    """None when nothing has been scored yet."""
    if not points:
        return None
    low, high = _padded(min(min(p.y, p.lower80) for p in points), max(max(p.y, p.upper80) for p in points))
    ticks, decimals = nice_ticks(low, high)
    labels = [_tick_label(v, decimals) for v in ticks]
    chart = TrackChart()
    chart.plot_right = _r(WIDTH - 10 - CHAR_EM * PHONE_FONT * max((len(t) for t in labels), default=6) - 8)
    scale = _Scale(len(points), low, high, chart.plot_right)
    chart.grid = [(scale.y(v), label) for v, label in zip(ticks, labels)]
    upper, lower, actual, forecast = [], [], [], []
    for slot, p in enumerate(points):
        x = scale.x(slot)
        covered = p.lower80 <= p.y <= p.upper80
        title = (f"{format_ts(p.ts, tf)}: forecast {format_price(p.yhat)} ({format_price(p.lower80)} – "
                 f"{format_price(p.upper80)}), closed at {format_price(p.y)}{'' if covered else ', outside the band'}")
        chart.markers.append(TrackMarker(ts=p.ts, x=x, y=scale.y(p.y), covered=covered, title=title))
        upper.append(f"{x},{scale.y(p.upper80)}")
        lower.append(f"{x},{scale.y(p.lower80)}")
        actual.append(f"{x},{scale.y(p.y)}")
        forecast.append(f"{x},{scale.y(p.yhat)}")
    chart.band, chart.actual, chart.forecast = " ".join(upper + lower[::-1]), " ".join(actual), " ".join(forecast)
    labelled = Chart(plot_right=chart.plot_right)
    _time_labels(labelled, scale, [p.ts for p in points], tf)
    chart.x_labels = labelled.x_labels
    return chart


_MARKER = ('    <circle class="track-marker {cls}" data-ts="{m.ts}" cx="{m.x}" cy="{m.y}" r="2.6">'
           '<title>{title}</title></circle>\n')


def markers_markup(chart: TrackChart) -> Markup:
    """The chart's ``<circle class="track-marker">`` elements, one line each (see chart.candles_markup)."""
    return Markup("".join(_MARKER.format(m=m, cls="held" if m.covered else "missed", title=escape(m.title))
                          for m in chart.markers))
