"""Candle sources of the simulated exchange: synthetic (pure functions of time) and CSV replay.

A series answers three questions for one symbol and timeframe: its first candle, the candle at
an open time, and which open times exist on either side of a bound. Nothing here knows about
"now" or HTTP; :mod:`.klines` applies the clock, the limits and the missing ranges.

Synthetic prices are a pure function of (symbol, timeframe, open time): the log price is a sum
of smooth value-noise octaves keyed by a hash of the symbol, so the same candle is identical on
every fetch, consecutive candles chain (close == next open) and prices stay within a bounded
band around an anchor (always positive).
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import math
import struct
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Protocol

from .. import timeframes as tfs
from ..errors import DataValidationError

__all__ = [
    "Kline",
    "Series",
    "SyntheticSeries",
    "ReplaySeries",
    "DEFAULT_LISTING_MS",
    "fmt8",
    "load_replay_csv",
]

# 2017-08-17 04:00 UTC: the first BTCUSDT candle Binance has (first row of the real 1h file).
DEFAULT_LISTING_MS = 1_502_942_400_000

_Q8 = Decimal("0.00000001")
_MIN = 60_000
_DAY = 1440 * _MIN
# (period of the noise knots, amplitude of the log price): long swings plus short wiggles.
_OCTAVES = ((365 * _DAY, 0.35), (30 * _DAY, 0.15), (3 * _DAY, 0.05), (6 * 60 * _MIN, 0.02),
            (10 * _MIN, 0.004), (_MIN, 0.001))
# How far high/low reach beyond open/close, per timeframe (fraction of the price).
_WICK = {"1m": 0.0005, "1h": 0.004, "1d": 0.02, "1w": 0.05, "1M": 0.1}
_ANCHORS = {"BTC": 30_000.0, "ETH": 2_000.0, "BNB": 300.0, "SOL": 100.0, "XRP": 0.5, "ADA": 0.4}


def fmt8(value: Decimal | float | str) -> str:
    """Binance's wire form of a price or quantity: a string with exactly 8 decimals."""
    return str(Decimal(str(value)).quantize(_Q8))


@dataclass(frozen=True)
class Kline:
    """One candle as the exchange holds it; prices and quantities are 8-decimal strings."""

    open_ms: int
    close_ms: int  # inclusive, Binance style: next open - 1
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int
    taker_base: str
    taker_quote: str

    def wire(self) -> list[object]:
        """The 12-field row of GET /api/v3/klines."""
        return [self.open_ms, self.open, self.high, self.low, self.close, self.volume,
                self.close_ms, self.quote_volume, self.trades, self.taker_base, self.taker_quote, "0"]

    def ohlcv(self) -> list[float]:
        """``[ts, o, h, l, c, v]`` as ccxt parses the wire row (float of each string)."""
        return [self.open_ms, float(self.open), float(self.high), float(self.low),
                float(self.close), float(self.volume)]


class Series(Protocol):
    def first_open(self) -> int | None: ...
    def candle(self, open_ms: int, as_of_ms: int | None = None) -> Kline | None: ...
    def opens_from(self, start_ms: int) -> Iterator[int]: ...
    def opens_until(self, end_ms: int) -> Iterator[int]: ...


def _close_ms(open_ms: int, tf: tfs.Timeframe) -> int:
    return tfs.add(open_ms, tf, 1) - 1


@lru_cache(maxsize=131_072)
def _unit(key: str, scale: int, knot: int) -> float:
    """Deterministic pseudo-random number in [0, 1) for (key, scale, knot)."""
    digest = hashlib.blake2b(f"{key}|{scale}|{knot}".encode(), digest_size=8).digest()
    return struct.unpack(">Q", digest)[0] / 2**64


def _noise(key: str, scale: int, t: int) -> float:
    """Smooth value noise in [-1, 1]: hashed knots every ``scale`` ms, smoothstep between."""
    knot, rest = divmod(t, scale)
    frac = rest / scale
    s = frac * frac * (3 - 2 * frac)
    v0, v1 = _unit(key, scale, knot), _unit(key, scale, knot + 1)
    return 2 * (v0 + (v1 - v0) * s) - 1


class SyntheticSeries:
    """Deterministic candles from ``floor(listing_ms)`` on, forever (the clock bounds them)."""

    def __init__(self, symbol: str, tf: tfs.Timeframe, listing_ms: int = DEFAULT_LISTING_MS) -> None:
        self.symbol, self.tf = symbol, tf
        self._first = tfs.floor(listing_ms, tf)
        base = symbol.split("/")[0]
        self._anchor = _ANCHORS.get(base, 1.0 + 999.0 * _unit(symbol, 0, 0))
        self.price_decimals = 2 if self._anchor >= 100 else 6 if self._anchor < 1 else 4

    def first_open(self) -> int | None:
        return self._first

    def price(self, t_ms: int) -> float:
        """The synthetic mid price at any instant (pure function of symbol and time)."""
        log_p = sum(amp * _noise(self.symbol, scale, t_ms) for scale, amp in _OCTAVES)
        return self._anchor * math.exp(log_p)

    def candle(self, open_ms: int, as_of_ms: int | None = None) -> Kline | None:
        """The candle at ``open_ms``; seen at ``as_of_ms`` before its close it is partial.

        A partial candle is what the exchange shows while it trades: close is the price at
        ``as_of_ms``, volume and wicks grow with the elapsed fraction. It differs from the final
        candle, so a consumer that stores in-progress candles is caught by the ground truth.
        """
        if open_ms < self._first or not tfs.is_aligned(open_ms, self.tf):
            return None
        nxt = tfs.add(open_ms, self.tf, 1)
        seen = nxt if as_of_ms is None else max(open_ms, min(nxt, as_of_ms))
        frac = (seen - open_ms) / (nxt - open_ms)
        q = Decimal(1).scaleb(-self.price_decimals)
        o = Decimal(repr(self.price(open_ms))).quantize(q)
        c = Decimal(repr(self.price(seen))).quantize(q)
        wick = _WICK[self.tf] * frac
        key = f"{self.symbol}|{self.tf}"
        up = Decimal(repr(1 + wick * _unit(key, 1, open_ms)))
        down = Decimal(repr(1 - wick * _unit(key, 2, open_ms)))
        high = max(o, c, (max(o, c) * up).quantize(q))
        low = min(o, c, max(q, (min(o, c) * down).quantize(q)))
        minutes = (nxt - open_ms) / _MIN * frac
        volume = Decimal(repr(minutes * (0.5 + _unit(key, 3, open_ms)) * 500_000 / self._anchor)).quantize(_Q8)
        mid = (o + high + low + c) / 4
        taker = Decimal(repr(0.3 + 0.4 * _unit(key, 4, open_ms)))
        taker_base = (volume * taker).quantize(_Q8)
        return Kline(
            open_ms=open_ms, close_ms=nxt - 1, open=fmt8(o), high=fmt8(high), low=fmt8(low),
            close=fmt8(c), volume=fmt8(volume), quote_volume=fmt8(volume * mid),
            trades=int(minutes * 40 * _unit(key, 5, open_ms)) + (1 if frac > 0 else 0),
            taker_base=fmt8(taker_base), taker_quote=fmt8(taker_base * mid),
        )

    def opens_from(self, start_ms: int) -> Iterator[int]:
        ts = max(self._first, tfs.floor(start_ms, self.tf))
        if ts < start_ms:
            ts = tfs.add(ts, self.tf, 1)
        while True:
            yield ts
            ts = tfs.add(ts, self.tf, 1)

    def opens_until(self, end_ms: int) -> Iterator[int]:
        ts = tfs.floor(end_ms, self.tf)
        while ts >= self._first:
            yield ts
            ts = tfs.add(ts, self.tf, -1)


_CSV_FIELDS = ("timestamp_ms", "open", "high", "low", "close", "volume")
_Raw = tuple[str, str, str, str, str]


def load_replay_csv(path: Path) -> tuple[list[int], list[_Raw]]:
    """Read a ``timestamp_ms,open,high,low,close,volume`` file: sorted unique opens and values.

    Values stay text until a candle is served (a 1h file has ~50k rows: parsing them all to
    Decimals up front would make every start slow); each is checked to be a number here.
    """
    rows: dict[int, _Raw] = {}
    line_no = 1
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            if tuple(next(reader, ())) != _CSV_FIELDS:
                raise ValueError(f"header must be {','.join(_CSV_FIELDS)}")
            for line_no, rec in enumerate(reader, start=2):
                if len(rec) != 6:
                    raise ValueError(f"expected 6 fields, got {len(rec)}")
                for value in rec[1:]:
                    float(value)
                rows[int(rec[0])] = (rec[1], rec[2], rec[3], rec[4], rec[5])
    except (OSError, ValueError) as exc:
        raise DataValidationError(f"replay file {path.name}: unreadable at line {line_no}: {exc}") from exc
    opens = sorted(rows)
    return opens, [rows[t] for t in opens]


def _replay_kline(open_ms: int, raw: _Raw, tf: tfs.Timeframe) -> Kline:
    o, h, low, c, v = (Decimal(x) for x in raw)
    mid = (o + h + low + c) / 4
    return Kline(
        open_ms=open_ms, close_ms=_close_ms(open_ms, tf), open=fmt8(o), high=fmt8(h),
        low=fmt8(low), close=fmt8(c), volume=fmt8(v), quote_volume=fmt8(v * mid),
        trades=max(1, int(v)), taker_base=fmt8(v / 2), taker_quote=fmt8(v / 2 * mid),
    )


class ReplaySeries:
    """Candles of a recorded file: exactly its rows, its gaps included."""

    def __init__(self, opens: list[int], raw: list[_Raw], tf: tfs.Timeframe) -> None:
        self._opens, self._raw, self.tf = opens, raw, tf

    @classmethod
    def from_csv(cls, path: Path, tf: tfs.Timeframe) -> "ReplaySeries":
        opens, raw = load_replay_csv(path)
        return cls(opens, raw, tf)

    def first_open(self) -> int | None:
        return self._opens[0] if self._opens else None

    def candle(self, open_ms: int, as_of_ms: int | None = None) -> Kline | None:
        """The recorded row (a replay has no intra-candle history: shown whole even in progress)."""
        i = bisect.bisect_left(self._opens, open_ms)
        if i < len(self._opens) and self._opens[i] == open_ms:
            return _replay_kline(open_ms, self._raw[i], self.tf)
        return None

    def opens_from(self, start_ms: int) -> Iterator[int]:
        first = bisect.bisect_left(self._opens, start_ms)
        return (self._opens[i] for i in range(first, len(self._opens)))

    def opens_until(self, end_ms: int) -> Iterator[int]:
        last = bisect.bisect_right(self._opens, end_ms)
        return (self._opens[i] for i in range(last - 1, -1, -1))
