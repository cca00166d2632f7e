"""The storage contract: one base class doing the shared work, a few raw methods per backend.

The base class validates, sorts and de-duplicates what is written, applies the storage budget
guard, and pages reads so memory stays bounded; a backend implements only the ``_raw`` methods
below (see ``sqlite.py`` and ``influx.py``). Writes are idempotent upserts keyed by
(symbol, timeframe, open time): writing the same candle twice stores it once.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Iterator

import pandas as pd

from ..candles import COLUMNS, empty_frame, validate_candles
from ..errors import DataValidationError, StorageBudgetExceeded
from ..symbols import parse_symbol
from ..timeframes import Timeframe, parse_timeframe

__all__ = ["CandleStore", "Forecast", "FORECAST_COLUMNS", "BUDGET_WARN_RATIO"]

log = logging.getLogger(__name__)

FORECAST_COLUMNS = ("ts", "yhat", "yhat_lower", "yhat_upper")
BUDGET_WARN_RATIO = 0.9
MAX_CHUNK = 50_000


@dataclass(frozen=True)
class Forecast:
    """One issued forecast of a series: ``points`` has :data:`FORECAST_COLUMNS`, ts = target open."""

    symbol: str
    timeframe: Timeframe
    issued_at: int
    model_version: str
    input_last_ts: int
    points: pd.DataFrame


class CandleStore(ABC):
    """Candles, known exchange gaps and forecasts of every series, behind one interface."""

    name: str = "abstract"

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget_bytes = budget_bytes

    # ---- candles -------------------------------------------------------------------------
    def write_candles(self, symbol: str, tf: Timeframe, frame: pd.DataFrame) -> int:
        """Validate and upsert candles; returns how many were written.

        Raises DataValidationError if any candle is invalid: callers validate (and report)
        first, so an invalid candle reaching the store is a programming error, not data.
        """
        symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
        report = validate_candles(frame, tf)
        if report.rejected:
            first = report.rejected[0]
            raise DataValidationError(
                f"refusing to store {report.rejected_count} invalid candle(s) of {symbol} {tf}: "
                f"{first.reason} at ts={first.ts}"
            )
        if report.valid.empty:
            return 0
        self.check_budget()
        self._write_candles(symbol, tf, report.valid)
        return len(report.valid)

    def iter_candles(
        self, symbol: str, tf: Timeframe, start: int | None = None, end: int | None = None,
        chunk_size: int = 10_000,
    ) -> Iterator[pd.DataFrame]:
        """Candles with ``start <= ts <= end`` in ascending pages of at most ``chunk_size``."""
        symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
        chunk_size = max(1, min(chunk_size, MAX_CHUNK))
        cursor = start
        while True:
            page = self._read_page(symbol, tf, cursor, end, chunk_size)
            if page.empty:
                return
            yield page.reset_index(drop=True)
            if len(page) < chunk_size:
                return
            cursor = int(page["ts"].iloc[-1]) + 1

    def read_candles(self, symbol: str, tf: Timeframe, start: int | None = None, end: int | None = None) -> pd.DataFrame:
        pages = list(self.iter_candles(symbol, tf, start, end))
        return pd.concat(pages, ignore_index=True) if pages else empty_frame()

    def tail(self, symbol: str, tf: Timeframe, n: int) -> pd.DataFrame:
        """The latest ``n`` candles, ascending."""
        symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
        return self._read_tail(symbol, tf, n).sort_values("ts").reset_index(drop=True)

    def bounds(self, symbol: str, tf: Timeframe) -> tuple[int, int] | None:
        """(first, latest) open time stored for the series, or None when empty."""
        return self._bounds(parse_symbol(symbol), parse_timeframe(tf))

    def latest_ts(self, symbol: str, tf: Timeframe) -> int | None:
        found = self.bounds(symbol, tf)
        return found[1] if found else None

    def count(self, symbol: str, tf: Timeframe, start: int | None = None, end: int | None = None) -> int:
        return self._count(parse_symbol(symbol), parse_timeframe(tf), start, end)

    def delete_range(self, symbol: str, tf: Timeframe, start: int | None, end: int) -> None:
        """Delete candles with ``start <= ts <= end`` (retention)."""
        self._delete(parse_symbol(symbol), parse_timeframe(tf), start, end)

    # ---- known exchange gaps ------------------------------------------------------------
    def add_known_gap(self, symbol: str, tf: Timeframe, start: int, end: int) -> None:
        """Record that the exchange has no candles for ``[start, end]`` (open times)."""
        if end < start:
            raise DataValidationError(f"gap end {end} before start {start}")
        self._write_gap(parse_symbol(symbol), parse_timeframe(tf), start, end)

    def known_gaps(self, symbol: str, tf: Timeframe) -> list[tuple[int, int]]:
        return sorted(self._read_gaps(parse_symbol(symbol), parse_timeframe(tf)))

    # ---- forecasts ----------------------------------------------------------------------
    def write_forecast(self, forecast: Forecast) -> None:
        missing = [c for c in FORECAST_COLUMNS if c not in forecast.points.columns]
        if missing:
            raise DataValidationError(f"forecast points lack columns: {', '.join(missing)}")
        self._write_forecast(forecast)

    def latest_forecast(self, symbol: str, tf: Timeframe) -> Forecast | None:
        return self._read_latest_forecast(parse_symbol(symbol), parse_timeframe(tf))

    def prune_forecasts(self, symbol: str, tf: Timeframe, issued_before: int) -> None:
        """Delete forecasts issued before ``issued_before`` (ms): one per cycle adds up."""
        self._delete_forecasts(parse_symbol(symbol), parse_timeframe(tf), int(issued_before))

    # ---- housekeeping -------------------------------------------------------------------
    def series(self) -> list[tuple[str, Timeframe]]:
        """Every (symbol, timeframe) that has at least one stored candle."""
        return sorted(self._series())

    def size_bytes(self) -> int:
        return self._size_bytes()

    def check_budget(self) -> None:
        """Warn near the budget; refuse to grow at or over it."""
        if not self.budget_bytes:
            return
        size = self._size_bytes()
        if size >= self.budget_bytes:
            raise StorageBudgetExceeded(
                f"{self.name} store uses {size / 1024**3:.2f} GiB, at or over its budget of "
                f"{self.budget_bytes / 1024**3:.2f} GiB: refusing to write. Raise "
                "STORAGE_BUDGET_GB or shorten retention (see docs/runbooks.md)."
            )
        if size >= BUDGET_WARN_RATIO * self.budget_bytes:
            log.warning("%s store at %.0f%% of its storage budget", self.name, 100 * size / self.budget_bytes)

    def ping(self) -> None:
        """Raise StorageUnavailableError when the store cannot be reached."""

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> "CandleStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- raw backend methods ------------------------------------------------------------
    @abstractmethod
    def _write_candles(self, symbol: str, tf: Timeframe, frame: pd.DataFrame) -> None:
        """Upsert a validated, sorted, de-duplicated frame."""

    @abstractmethod
    def _read_page(self, symbol: str, tf: Timeframe, start: int | None, end: int | None, limit: int) -> pd.DataFrame:
        """Up to ``limit`` candles with ``start <= ts <= end``, ascending, columns COLUMNS."""

    @abstractmethod
    def _read_tail(self, symbol: str, tf: Timeframe, n: int) -> pd.DataFrame: ...

    @abstractmethod
    def _bounds(self, symbol: str, tf: Timeframe) -> tuple[int, int] | None: ...

    @abstractmethod
    def _count(self, symbol: str, tf: Timeframe, start: int | None, end: int | None) -> int: ...

    @abstractmethod
    def _delete(self, symbol: str, tf: Timeframe, start: int | None, end: int) -> None: ...

    @abstractmethod
    def _write_gap(self, symbol: str, tf: Timeframe, start: int, end: int) -> None: ...

    @abstractmethod
    def _read_gaps(self, symbol: str, tf: Timeframe) -> list[tuple[int, int]]: ...

    @abstractmethod
    def _write_forecast(self, forecast: Forecast) -> None: ...

    @abstractmethod
    def _read_latest_forecast(self, symbol: str, tf: Timeframe) -> Forecast | None: ...

    @abstractmethod
    def _delete_forecasts(self, symbol: str, tf: Timeframe, issued_before: int) -> None: ...

    @abstractmethod
    def _series(self) -> list[tuple[str, Timeframe]]: ...

    @abstractmethod
    def _size_bytes(self) -> int: ...


def frame_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Project a backend's result onto COLUMNS with the contract's dtypes."""
    if frame.empty:
        return empty_frame()
    out = frame[list(COLUMNS)].astype({"ts": "int64", **{c: "float64" for c in COLUMNS[1:]}})
    return out.reset_index(drop=True)
