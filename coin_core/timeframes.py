"""Timeframes and UTC candle boundaries.

All times are integer milliseconds since the Unix epoch (UTC), the unit exchanges and ccxt use;
a candle is identified by its *open* time. Weeks start Monday 00:00 UTC and months on the 1st,
so ``1M`` has no fixed length and every boundary helper goes through the calendar for it.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterator, Literal

import numpy as np
import pandas as pd

from .errors import ConfigError

__all__ = [
    "Timeframe",
    "TIMEFRAMES",
    "parse_timeframe",
    "interval_ms",
    "floor",
    "add",
    "next_open",
    "close_time",
    "is_aligned",
    "last_closed_open",
    "expected_opens",
    "count_between",
    "to_datetime",
    "from_datetime",
    "aligned_mask",
    "close_times",
]

Timeframe = Literal["1m", "1h", "1d", "1w", "1M"]
TIMEFRAMES: tuple[Timeframe, ...] = ("1m", "1h", "1d", "1w", "1M")

_MINUTE = 60_000
_FIXED_MS: dict[str, int] = {"1m": _MINUTE, "1h": 60 * _MINUTE, "1d": 1440 * _MINUTE, "1w": 7 * 1440 * _MINUTE}
# 1970-01-01 was a Thursday; Monday-aligned weeks are offset by 4 days.
_WEEK_OFFSET = 4 * 1440 * _MINUTE


def parse_timeframe(text: str) -> Timeframe:
    """Validate a timeframe string (case matters: ``1m`` is a minute, ``1M`` a month).

    Only ASCII spaces/tabs around it are trimmed: ``str.strip()`` would also accept Unicode
    spaces, and a case fold would turn ``1M`` (month) into ``1m`` (minute).
    """
    value = str(text).strip(" \t")
    if value not in TIMEFRAMES:
        raise ConfigError(f"unknown timeframe {str(text)[:20]!r}: expected one of {', '.join(TIMEFRAMES)}")
    return value  # type: ignore[return-value]


def interval_ms(tf: Timeframe) -> int:
    """Nominal length of one candle. ``1M`` is 30 days: use :func:`add` for exact months."""
    return _FIXED_MS.get(tf, 30 * 1440 * _MINUTE)


def to_datetime(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)


def from_datetime(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def floor(ts_ms: int, tf: Timeframe) -> int:
    """Open time of the candle that contains ``ts_ms``."""
    if tf == "1M":
        dt = to_datetime(ts_ms)
        return from_datetime(datetime(dt.year, dt.month, 1, tzinfo=timezone.utc))
    step = _FIXED_MS[tf]
    offset = _WEEK_OFFSET if tf == "1w" else 0
    return (ts_ms - offset) // step * step + offset


def add(ts_ms: int, tf: Timeframe, n: int = 1) -> int:
    """Move an aligned open time by ``n`` candles (negative goes back)."""
    if tf != "1M":
        return ts_ms + n * _FIXED_MS[tf]
    dt = to_datetime(ts_ms)
    months = dt.year * 12 + (dt.month - 1) + n
    return from_datetime(datetime(months // 12, months % 12 + 1, 1, tzinfo=timezone.utc))


def next_open(ts_ms: int, tf: Timeframe) -> int:
    """Open time of the candle after the one that contains ``ts_ms``."""
    return add(floor(ts_ms, tf), tf, 1)


def close_time(open_ms: int, tf: Timeframe) -> int:
    """Exclusive close time: the candle is closed once ``now >= close_time``."""
    return add(open_ms, tf, 1)


def is_aligned(ts_ms: int, tf: Timeframe) -> bool:
    return floor(ts_ms, tf) == ts_ms


def last_closed_open(now_ms: int, tf: Timeframe) -> int:
    """Open time of the newest candle that is closed at ``now_ms``."""
    return add(floor(now_ms, tf), tf, -1)


def expected_opens(start_ms: int, end_ms: int, tf: Timeframe) -> Iterator[int]:
    """Every aligned open time in ``[start_ms, end_ms]`` (both inclusive)."""
    ts = floor(start_ms, tf)
    if ts < start_ms:
        ts = add(ts, tf, 1)
    while ts <= end_ms:
        yield ts
        ts = add(ts, tf, 1)


def count_between(start_ms: int, end_ms: int, tf: Timeframe) -> int:
    """Number of aligned open times in ``[start_ms, end_ms]``."""
    if end_ms < start_ms:
        return 0
    if tf != "1M":
        first = floor(start_ms, tf)
        if first < start_ms:
            first += _FIXED_MS[tf]
        return 0 if first > end_ms else (floor(end_ms, tf) - first) // _FIXED_MS[tf] + 1
    return sum(1 for _ in expected_opens(start_ms, end_ms, tf))


def aligned_mask(ts: pd.Series, tf: Timeframe) -> pd.Series:
    """Vectorised :func:`is_aligned` over int64 open times (hot path of validation)."""
    values = ts.astype("int64")
    if tf != "1M":
        offset = _WEEK_OFFSET if tf == "1w" else 0
        return (values - offset) % _FIXED_MS[tf] == 0
    dt = pd.DatetimeIndex(pd.to_datetime(values.to_numpy(), unit="ms"))
    return pd.Series(np.asarray((dt.day == 1) & (dt.normalize() == dt)), index=ts.index)


def close_times(ts: pd.Series, tf: Timeframe) -> pd.Series:
    """Vectorised :func:`close_time` over int64 open times."""
    values = ts.astype("int64")
    if tf != "1M":
        return values + _FIXED_MS[tf]
    dt = pd.DatetimeIndex(pd.to_datetime(values.to_numpy(), unit="ms")).floor("D") + pd.offsets.MonthBegin(1)
    return pd.Series(np.asarray(dt.as_unit("ms").asi8), index=ts.index)
