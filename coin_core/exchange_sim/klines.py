"""GET /api/v3/klines selection: which candles a query returns, exactly as Binance documents.

* no ``startTime``/``endTime``: the most recent ``limit`` klines;
* ``startTime``: the oldest klines with ``openTime >= startTime``, up to ``limit``;
* ``endTime`` only: the most recent klines with ``openTime <= endTime``;
* both: like ``startTime`` but never past ``endTime``.

The newest candle the exchange has is the in-progress one (``openTime <= now < closeTime``),
as on the real exchange. A missing range (an outage) simply has no rows: the next rows after it
fill the page, as a database query on the real exchange would.
"""

from __future__ import annotations

import threading
from itertools import islice, takewhile
from typing import Iterator

from .. import timeframes as tfs
from .series import Kline, Series

__all__ = ["MissingRanges", "select", "select_opens", "newest_open", "forward_opens", "backward_opens"]


class MissingRanges:
    """Permanent holes per (symbol, timeframe): open times in ``[start, end]`` do not exist."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ranges: dict[tuple[str, str], list[tuple[int, int]]] = {}

    def add(self, symbol: str, tf: str, start_ms: int, end_ms: int) -> None:
        if end_ms < start_ms:
            raise ValueError(f"missing range ends before it starts: {start_ms} > {end_ms}")
        with self._lock:
            self._ranges.setdefault((symbol, tf), []).append((start_ms, end_ms))

    def get(self, symbol: str, tf: str) -> list[tuple[int, int]]:
        with self._lock:
            return list(self._ranges.get((symbol, tf), ()))

    def clear(self) -> None:
        with self._lock:
            self._ranges.clear()


def newest_open(now_ms: int, tf: tfs.Timeframe, in_progress: bool) -> int:
    """Open time of the newest candle that exists at ``now_ms``."""
    return tfs.floor(now_ms, tf) if in_progress else tfs.last_closed_open(now_ms, tf)


def _hole(ts: int, holes: list[tuple[int, int]]) -> tuple[int, int] | None:
    return next(((a, b) for a, b in holes if a <= ts <= b), None)


def forward_opens(series: Series, start: int, holes: list[tuple[int, int]]) -> Iterator[int]:
    """Ascending open times >= start, jumping over holes instead of walking through them."""
    if not holes:  # the common case: no per-candle hole check
        yield from series.opens_from(start)
        return
    while True:
        for ts in series.opens_from(start):
            hole = _hole(ts, holes)
            if hole is None:
                yield ts
                continue
            start = hole[1] + 1
            break
        else:
            return


def backward_opens(series: Series, end: int, holes: list[tuple[int, int]]) -> Iterator[int]:
    """Descending open times <= end, jumping over holes."""
    if not holes:
        yield from series.opens_until(end)
        return
    while True:
        for ts in series.opens_until(end):
            hole = _hole(ts, holes)
            if hole is None:
                yield ts
                continue
            end = hole[0] - 1
            break
        else:
            return


def select(
    series: Series,
    start_ms: int | None,
    end_ms: int | None,
    limit: int,
    last_open: int,
    holes: list[tuple[int, int]],
    now_ms: int | None = None,
) -> list[Kline]:
    """The klines a query returns, oldest first; ``last_open`` is the newest existing open.

    A candle still open at ``now_ms`` is returned as seen at ``now_ms`` (partial).
    """
    out = [series.candle(ts, now_ms) for ts in select_opens(series, start_ms, end_ms, limit, last_open, holes)]
    return [k for k in out if k is not None]


def select_opens(series: Series, start_ms: int | None, end_ms: int | None, limit: int, last_open: int,
                 holes: list[tuple[int, int]]) -> list[int]:
    """The open times :func:`select` returns, oldest first (candles not built)."""
    upper = last_open if end_ms is None else min(end_ms, last_open)
    if start_ms is not None:
        return list(islice(takewhile(lambda ts: ts <= upper, forward_opens(series, start_ms, holes)), limit))
    opens = list(islice(backward_opens(series, upper, holes), limit))
    opens.reverse()
    return opens
