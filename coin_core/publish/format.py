"""Number and time formatting for the pages (also registered as Jinja2 filters).

Crypto prices span ten orders of magnitude (BTC ~1e5, SHIB ~1e-5): large prices get thousands
separators and cents, small ones keep four significant digits instead of rounding to ``0.00``.
A price may carry its unit, the pair's quote currency (``60,123.45 USDT``).

A candle is always named by its *opening* time, and says so (:func:`format_candle`): exchanges
and the data files key candles by open time; ages and staleness are measured from close time
and are worded as such ("closed … ago").
"""

from __future__ import annotations

import math
from functools import lru_cache

from ..freshness import format_age
from ..timeframes import Timeframe, to_datetime

__all__ = ["format_share", "format_price", "format_change", "format_ts", "format_candle", "format_age_s", "sentence"]

_TS_FORMATS: dict[str, str] = {
    "1m": "%Y-%m-%d %H:%M UTC",
    "1h": "%Y-%m-%d %H:%M UTC",
    "1d": "%Y-%m-%d",
    "1w": "%Y-%m-%d",
    "1M": "%Y-%m",
}


def format_price(value: float | None, unit: str = "") -> str:
    """A price at the precision its magnitude needs, followed by ``unit`` when given."""
    text = _price(value)
    return f"{text} {unit}" if unit and text != "—" else text


def _price(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    size = abs(value)
    if size == 0:
        return "0"
    if size >= 100:
        return f"{value:,.2f}"
    if size >= 1:
        return f"{value:,.4f}"
    decimals = min(12, 3 - math.floor(math.log10(size)))
    return f"{value:.{decimals}f}"


def format_change(new: float | None, old: float | None) -> str:
    """Signed percent change, e.g. ``+1.25%``."""
    if new is None or old is None or not old or not (math.isfinite(new) and math.isfinite(old)):
        return "—"
    return f"{(new - old) / old * 100:+.2f}%"


def format_ts(ts_ms: int | None, tf: Timeframe | None = None) -> str:
    """A candle time at the precision its timeframe needs (minutes for 1m/1h, days above)."""
    if ts_ms is None:
        return "—"
    return _ts_text(int(ts_ms), tf or "1m")


@lru_cache(maxsize=8192)
def _ts_text(ts_ms: int, tf: str) -> str:
    # Every series of a timeframe charts the same candle times: a publish formats each once.
    return to_datetime(ts_ms).strftime(_TS_FORMATS.get(tf, _TS_FORMATS["1m"]))


def format_candle(ts_ms: int | None, tf: Timeframe | None = None) -> str:
    """``opening 2024-05-01 11:00 UTC``: a candle named by its open time, to the minute, always."""
    if ts_ms is None:
        return "—"
    return "opening " + _ts_text(int(ts_ms), "1h")


def format_age_s(seconds: float | None) -> str:
    return "—" if seconds is None else format_age(seconds)


def sentence(text: str) -> str:
    """Upper-case the first letter only (``str.capitalize`` would lower-case the rest)."""
    return text[:1].upper() + text[1:]


def format_share(value: float | None) -> str:
    """A share (0..1) as a whole percentage; ``—`` when there is none yet."""
    return "—" if value is None or not math.isfinite(value) else f"{value * 100:.0f} %"
