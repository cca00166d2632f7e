"""The storage contract: one base class doing the shared work, a few raw methods per backend.

The base class validates, sorts and de-duplicates what is written (a
:class:`~coin_core.candles.CheckedCandles`, which only validation makes, is written as it is:
it was validated in this process already), applies the storage budget guard, and pages reads so
memory stays bounded; a backend implements only the ``_raw`` methods
below (see ``sqlite.py`` and ``influx.py``). Writes are idempotent upserts keyed by
(symbol, timeframe, open time): writing the same candle twice stores it once.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Mapping, Union, get_args

import numpy as np
import pandas as pd

from ..candles import COLUMNS, CheckedCandles, empty_frame, validate_candles
from ..errors import DataValidationError, StorageBudgetExceeded
from ..symbols import parse_symbol
from ..timeframes import Timeframe, parse_timeframe

__all__ = [
    "CandleStore", "Forecast", "ForecastColumns", "ForecastRow", "FORECAST_COLUMNS", "BAND50_COLUMNS",
    "STORED_COLUMNS", "ROLES", "Role", "Points", "BUDGET_WARN_RATIO", "points_payload", "points_frame", "rows_frame",
]

log = logging.getLogger(__name__)

FORECAST_COLUMNS = ("ts", "yhat", "yhat_lower", "yhat_upper")
#: The 50 % band: nullable (forecasts issued before it existed, or a model without one).
BAND50_COLUMNS = ("yhat_lower_50", "yhat_upper_50")
STORED_COLUMNS = FORECAST_COLUMNS + BAND50_COLUMNS
Role = Literal["champion", "challenger", "baseline"]
#: Only ``champion`` forecasts are ever served; the others are shadows kept for scoring.
ROLES: tuple[Role, ...] = get_args(Role)
BUDGET_WARN_RATIO = 0.9
#: More than a stored candle can add to a store's size (row, index, WAL): an upper bound of growth
#: lets the budget guard skip measuring while the store is certainly below the warning line.
GROWTH_BOUND_BYTES = 1024
BUDGET_REMEASURE_S = 60.0
MAX_CHUNK = 50_000
_MODEL_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


#: Forecast points: a frame, or (what the serving path builds, no frame) equal-length columns by name.
Points = Union[pd.DataFrame, Mapping[str, np.ndarray]]


def point_columns(points: Points) -> list[str]:
    """The column names of ``points``, a frame or a mapping of columns."""
    return list(points.columns if isinstance(points, pd.DataFrame) else points.keys())


@dataclass(frozen=True)
class Forecast:
    """One issued forecast of a series: ``points`` has :data:`FORECAST_COLUMNS`, ts = target open.

    Identity in the store: (symbol, timeframe, issued_at, role, model). ``model`` is the model's
    name (``prophet``, ``naive``...; derived from ``model_version`` when empty); the registry
    holds at most one version per (role, name), so shadows of one snapshot never collide.
    """

    symbol: str
    timeframe: Timeframe
    issued_at: int
    model_version: str
    input_last_ts: int
    points: Points
    role: Role = "champion"
    model: str = ""

    def __post_init__(self) -> None:
        if not self.model:  # derived: a version that names no valid model (hand-written) -> "unknown"
            object.__setattr__(self, "model", _model_of(str(self.model_version)))


#: A stored forecast as a backend reads it: (issued_at, role, model, model_version,
#: input_last_ts, points as the JSON text :func:`points_payload` wrote).
ForecastRow = tuple[int, str, str, str, int, str]


@dataclass(frozen=True)
class ForecastColumns:
    """A stored forecast with its points as plain columns, no frame: what scoring reads each
    cycle (about a horizon's worth of runs of every model of every series)."""

    symbol: str
    timeframe: Timeframe
    issued_at: int
    model_version: str
    input_last_ts: int
    role: Role
    model: str
    columns: dict[str, list[Any]]  # ts (ints) and every STORED_COLUMNS value, None for a null

    def floats(self, column: str) -> list[float]:
        """One column as floats (NaN for a null, or for a column this run does not have)."""
        values = self.columns.get(column)
        if values is None:
            return [math.nan] * len(self.columns.get("ts", []))
        return [math.nan if v is None else float(v) for v in values]


def _decoded(symbol: str, tf: Timeframe, row: ForecastRow) -> Forecast:
    issued_at, role, model, version, last_ts, points = row
    return Forecast(symbol, tf, int(issued_at), str(version), int(last_ts), points_frame(json.loads(points)),
                    role or "champion", model or "")  # type: ignore[arg-type]


def _columns(symbol: str, tf: Timeframe, row: ForecastRow) -> ForecastColumns:
    issued_at, role, model, version, last_ts, points = row
    name = model or _model_of(str(version))
    return ForecastColumns(symbol, tf, int(issued_at), str(version), int(last_ts), role or "champion",  # type: ignore[arg-type]
                           name, json.loads(points))


def _model_of(version: str) -> str:
    """The model name a version starts with (``prophet-...``); ``unknown`` when it names none."""
    name = version.split("-", 1)[0]
    return name if _MODEL_NAME.fullmatch(name) else "unknown"


def points_payload(points: Points) -> dict[str, list[Any]]:
    """Points as JSON-able columns: the 50 % band is added as nulls when the model has none.

    Column by column through numpy (no reindexed copy of the frame): every cycle stores one
    run per model per series.
    """
    names = point_columns(points)
    ts = np.asarray(points["ts"], dtype="int64")
    payload: dict[str, list[Any]] = {"ts": ts.tolist()}
    for column in STORED_COLUMNS[1:]:
        values = np.asarray(points[column], dtype="float64") if column in names else np.full(len(ts), np.nan)
        listed = values.tolist()
        if np.isnan(values).any():
            listed = [None if v != v else v for v in listed]  # NaN is the only value unequal to itself
        payload[column] = listed
    return payload


def points_frame(payload: dict[str, list[Any]]) -> pd.DataFrame:
    """The stored JSON back as a frame with every :data:`STORED_COLUMNS` (NaN for nulls).

    Built from numpy arrays directly: scoring reads a day of runs of every model each cycle.
    """
    n = len(payload.get("ts", []))
    columns: dict[str, np.ndarray] = {"ts": np.asarray(payload.get("ts", []), dtype="int64")}
    for column in STORED_COLUMNS[1:]:
        values = payload.get(column)
        columns[column] = np.asarray(values, dtype="float64") if values is not None else np.full(n, np.nan)
    return pd.DataFrame(columns)


class CandleStore(ABC):
    """Candles, known exchange gaps and forecasts of every series, behind one interface."""

    name: str = "abstract"

    def __init__(self, budget_bytes: int | None = None) -> None:
        self.budget_bytes = budget_bytes
        self._measured: tuple[float, int, int] | None = None  # (when, size, candles written since)
        self._measure_lock = threading.Lock()

    # ---- candles -------------------------------------------------------------------------
    def write_candles(self, symbol: str, tf: Timeframe, frame: pd.DataFrame | CheckedCandles) -> int:
        """Validate and upsert candles; returns how many were written.

        A :class:`CheckedCandles` of the same timeframe is written as it is (validation made it);
        a frame is validated here, and raises DataValidationError if any candle is invalid:
        callers validate (and report) first, so an invalid candle reaching the store is a
        programming error, not data.
        """
        symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
        checked = frame if isinstance(frame, CheckedCandles) and frame.tf == tf else self._validated(symbol, tf, frame)
        if not len(checked):
            return 0
        self.check_budget(adding=len(checked))
        self._write_candles(symbol, tf, checked)
        return len(checked)

    @staticmethod
    def _validated(symbol: str, tf: Timeframe, frame: pd.DataFrame | CheckedCandles) -> CheckedCandles:
        report = validate_candles(frame.frame() if isinstance(frame, CheckedCandles) else frame, tf)
        if report.rejected:
            first = report.rejected[0]
            raise DataValidationError(
                f"refusing to store {report.rejected_count} invalid candle(s) of {symbol} {tf}: "
                f"{first.reason} at ts={first.ts}"
            )
        return report.checked

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
        if len(pages) < 2:
            return pages[0] if pages else empty_frame()
        return pd.concat(pages, ignore_index=True)

    def read_closes(self, symbol: str, tf: Timeframe, start: int, end: int) -> tuple[list[int], list[float]]:
        """Open times and closes of the candles with ``start <= ts <= end``, ascending, no frame
        built (scoring reads a window of every series each cycle)."""
        symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
        ts: list[int] = []
        closes: list[float] = []
        cursor = int(start)
        while True:
            rows = self._read_rows(symbol, tf, cursor, int(end), MAX_CHUNK)
            ts.extend(int(row[0]) for row in rows)
            closes.extend(float(row[4]) for row in rows)
            if len(rows) < MAX_CHUNK:
                return ts, closes
            cursor = ts[-1] + 1

    def close_at(self, symbol: str, tf: Timeframe, ts: int) -> float | None:
        """Close of the stored candle opening at ``ts`` (None when there is none); no frame built."""
        rows = self._read_rows(parse_symbol(symbol), parse_timeframe(tf), int(ts), int(ts), 1)
        return float(rows[0][4]) if rows else None

    def tail(self, symbol: str, tf: Timeframe, n: int) -> pd.DataFrame:
        """The latest ``n`` candles, ascending."""
        symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
        frame = self._read_tail(symbol, tf, n)
        if frame["ts"].is_monotonic_increasing and isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0:
            return frame  # the backends read it in order: sorting a tail costs more than reading it
        return frame.sort_values("ts").reset_index(drop=True)

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
        names = point_columns(forecast.points)
        missing = [c for c in FORECAST_COLUMNS if c not in names]
        if missing:
            raise DataValidationError(f"forecast points lack columns: {', '.join(missing)}")
        if len({len(forecast.points[c]) for c in names}) > 1:
            raise DataValidationError("forecast points have columns of different lengths")
        if forecast.role not in ROLES:
            raise DataValidationError(f"forecast role {forecast.role!r} is not one of {', '.join(ROLES)}")
        if not _MODEL_NAME.fullmatch(forecast.model):
            raise DataValidationError(f"invalid forecast model name {forecast.model!r}")
        self._write_forecast(forecast)

    def latest_forecast(self, symbol: str, tf: Timeframe, role: Role = "champion") -> Forecast | None:
        """The latest forecast of ``role``: the default, ``champion``, is the only one served."""
        symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
        row = self._read_latest_forecast(symbol, tf, role)
        return None if row is None else _decoded(symbol, tf, row)

    def latest_input_ts(self, symbol: str, tf: Timeframe, role: Role = "champion") -> int | None:
        """The input candle of the latest forecast of ``role`` (its points are not decoded: the
        forecast gate of every series asks this each cycle)."""
        found = self.latest_forecast_id(symbol, tf, role)
        return None if found is None else found[2]

    def latest_forecast_id(self, symbol: str, tf: Timeframe, role: Role = "champion") -> tuple[int, str, int] | None:
        """(issued_at, model_version, input_last_ts) of the latest forecast of ``role``, its points
        not decoded: what tells whether a forecast read earlier is still the latest."""
        row = self._read_latest_forecast(parse_symbol(symbol), parse_timeframe(tf), role)
        return None if row is None else (int(row[0]), str(row[3]), int(row[4]))

    def read_forecasts(
        self, symbol: str, tf: Timeframe, issued_from: int | None = None, issued_to: int | None = None,
        role: Role | None = None,
    ) -> list[Forecast]:
        """Every stored forecast (all roles unless ``role``) issued in the window, oldest first."""
        symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
        found = [_decoded(symbol, tf, row) for row in self._read_forecasts(symbol, tf, issued_from, issued_to, role)]
        return sorted(found, key=lambda f: (f.issued_at, ROLES.index(f.role), f.model))

    def read_forecast_columns(
        self, symbol: str, tf: Timeframe, issued_from: int | None = None, issued_to: int | None = None,
    ) -> list[ForecastColumns]:
        """:meth:`read_forecasts` (every role) with plain columns instead of frames: building a
        frame costs ~0.2 ms, and scoring reads ~100 runs per series every cycle."""
        symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
        found = [_columns(symbol, tf, row) for row in self._read_forecasts(symbol, tf, issued_from, issued_to, None)]
        return sorted(found, key=lambda f: (f.issued_at, ROLES.index(f.role), f.model))

    def prune_forecasts(self, symbol: str, tf: Timeframe, issued_before: int) -> None:
        """Delete forecasts issued before ``issued_before`` (ms): one per cycle adds up."""
        self._delete_forecasts(parse_symbol(symbol), parse_timeframe(tf), int(issued_before))

    # ---- housekeeping -------------------------------------------------------------------
    def series(self) -> list[tuple[str, Timeframe]]:
        """Every (symbol, timeframe) that has at least one stored candle."""
        return sorted(self._series())

    def size_bytes(self) -> int:
        return self._size_bytes()

    def check_budget(self, adding: int = 0) -> None:
        """Warn near the budget; refuse to grow at or over it (``adding``: candles about to be written).

        The size is measured (a query) unless a measurement of the last minute plus
        :data:`GROWTH_BOUND_BYTES` for every candle written since stays below the warning line:
        then no exact figure could warn or refuse either. Near the line it is measured every time.
        """
        if not self.budget_bytes:
            return
        line = BUDGET_WARN_RATIO * self.budget_bytes
        with self._measure_lock:
            known = self._measured
            if known and time.monotonic() - known[0] < BUDGET_REMEASURE_S:
                written = known[2] + adding
                if known[1] + written * GROWTH_BOUND_BYTES < line:
                    self._measured = (known[0], known[1], written)
                    return
        size = self._size_bytes()
        with self._measure_lock:
            self._measured = (time.monotonic(), size, adding)
        if size >= self.budget_bytes:
            raise StorageBudgetExceeded(
                f"{self.name} store uses {size / 1024**3:.2f} GiB, at or over its budget of "
                f"{self.budget_bytes / 1024**3:.2f} GiB: refusing to write. Raise "
                "STORAGE_BUDGET_GB or shorten retention (see docs/runbooks.md)."
            )
        if size >= line:
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
    def _write_candles(self, symbol: str, tf: Timeframe, candles: CheckedCandles) -> None:
        """Upsert validated, sorted, de-duplicated candles."""

    @abstractmethod
    def _read_page(self, symbol: str, tf: Timeframe, start: int | None, end: int | None, limit: int) -> pd.DataFrame:
        """Up to ``limit`` candles with ``start <= ts <= end``, ascending, columns COLUMNS."""

    def _read_rows(self, symbol: str, tf: Timeframe, start: int | None, end: int | None, limit: int) -> list[Any]:
        """As :meth:`_read_page`, as ``(ts, open, high, low, close, volume)`` rows."""
        return self._read_page(symbol, tf, start, end, limit).to_numpy().tolist()

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
    def _read_latest_forecast(self, symbol: str, tf: Timeframe, role: Role) -> ForecastRow | None: ...

    @abstractmethod
    def _read_forecasts(
        self, symbol: str, tf: Timeframe, start: int | None, end: int | None, role: Role | None
    ) -> list[ForecastRow]:
        """Stored rows of the forecasts with ``start <= issued_at <= end`` (any order)."""

    @abstractmethod
    def _delete_forecasts(self, symbol: str, tf: Timeframe, issued_before: int) -> None: ...

    @abstractmethod
    def _series(self) -> list[tuple[str, Timeframe]]: ...

    @abstractmethod
    def _size_bytes(self) -> int: ...


def rows_frame(rows: list[tuple] | list[list]) -> pd.DataFrame:
    """``(ts, open, high, low, close, volume)`` rows of a backend as a candle frame, column-wise
    (a backend's rows are stored candles: numbers, open times exact in float64)."""
    if not rows:
        return empty_frame()
    columns = list(zip(*rows))  # one array per column: no row matrix to slice and copy again
    data = {"ts": np.array(columns[0], dtype=np.float64).astype(np.int64)}
    data.update({name: np.array(columns[i], dtype=np.float64) for i, name in enumerate(COLUMNS[1:], start=1)})
    return pd.DataFrame(data, copy=False)
