"""Pre-serialised klines rows, so the simulated exchange is never a benchmark's bottleneck.

A closed candle never changes, so its 12-field wire row is built (Decimal arithmetic, hashing,
JSON) once and kept as bytes; a page is then the join of cached rows. A candle still in
progress is built fresh every time (it changes as the clock moves). The cache is bounded (LRU
by row), so a long soak against the simulator does not grow its memory without end.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Callable

from .series import Kline

__all__ = ["WireCache", "DEFAULT_MAX_ROWS"]

#: ~200 bytes a row: 200,000 rows is ~40 MB, a year of 1h candles for 20 series.
DEFAULT_MAX_ROWS = 200_000


def _row_bytes(kline: Kline) -> bytes:
    return json.dumps(kline.wire(), separators=(",", ":")).encode()


class WireCache:
    """Wire rows of closed candles by (symbol, timeframe, open time), least recently used out."""

    def __init__(self, max_rows: int = DEFAULT_MAX_ROWS) -> None:
        self.max_rows = max_rows
        self._rows: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def row(self, key: tuple[str, str, int], closed: bool, build: Callable[[], Kline | None]) -> bytes | None:
        """The row of ``key``; ``build`` makes the kline when it is not cached (or not closed)."""
        if closed:
            with self._lock:
                found = self._rows.get(key)
                if found is not None:
                    self._rows.move_to_end(key)
                    return found
        kline = build()
        if kline is None:
            return None
        data = _row_bytes(kline)
        if closed:
            with self._lock:
                self._rows[key] = data
                while len(self._rows) > self.max_rows:
                    self._rows.popitem(last=False)
        return data

    def rows(self, symbol: str, tf: str, opens: list[int], closed_before: int,
             build: Callable[[int], Kline | None]) -> list[bytes | None]:
        """:meth:`row` of each of ``opens`` of one series, looked up under one lock (a page is a
        thousand rows): a candle opening before ``closed_before`` is closed (cached), a later
        one is built fresh by ``build(open_ms)``; None where ``build`` makes nothing."""
        with self._lock:
            found = [self._rows.get((symbol, tf, ts)) if ts < closed_before else None for ts in opens]
            for ts, row in zip(opens, found):
                if row is not None:
                    self._rows.move_to_end((symbol, tf, ts))
        return [row if row is not None else self.row((symbol, tf, ts), ts < closed_before, lambda ts=ts: build(ts))
                for ts, row in zip(opens, found)]

    def make_room(self, rows: int) -> None:
        """Raise the bound so ``rows`` more fit beside those cached: rows built ahead of a
        benchmark must not evict each other before they are served."""
        with self._lock:
            self.max_rows = max(self.max_rows, len(self._rows) + rows)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
