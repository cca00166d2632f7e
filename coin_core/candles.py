"""Candle frames and their validation.

A *candle frame* is a pandas DataFrame with exactly the columns of :data:`COLUMNS`: ``ts`` is the
candle's open time in UTC milliseconds (int64), prices and volume are float64. Every candle is
validated before it is stored; a rejected candle is counted with its reason, never stored.

Sanity bounds (values no market can have, rejected): a price must be finite, > 0 and at most
:data:`MAX_PRICE`; a volume finite, >= 0 and at most :data:`MAX_VOLUME`; an open time an integer
between 0 and :data:`MAX_TS` (year 9999), on the timeframe's grid, and not after ``now``. A
plausible but suspicious value (a tenfold jump) is not judged here: ingest flags it for review.

Validation works on a float64 matrix of the six columns (one row a candle), so a page costs a few
numpy operations whatever its size, and its outcome is a :class:`CheckedCandles`: read-only
columns that only this module makes. A store writes one without validating it again (ingest
validated it, in this process, with the same rules); any other frame a store is given is
validated there (:meth:`coin_core.storage.CandleStore.write_candles`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import timeframes as tfs
from .errors import DataValidationError

__all__ = [
    "COLUMNS", "PRICE_COLUMNS", "MAX_PRICE", "MAX_VOLUME", "MAX_TS", "Rejection", "ValidationReport",
    "CheckedCandles", "empty_frame", "to_frame", "rows_matrix", "validate_candles", "validate_matrix",
]

COLUMNS = ("ts", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
# BTC priced in the weakest quote Binance lists (IDR-like, ~1e9) stays 1000x below this.
MAX_PRICE = 1e12
# Above the total supply of any token (the largest are ~1e15 units): no candle trades more.
MAX_VOLUME = 1e18
MAX_TS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
FUTURE = "open time in the future"
"""Reason of a candle that opens after ``now`` (not the in-progress one, which is left out)."""


@dataclass(frozen=True)
class Rejection:
    ts: int | None
    reason: str


_MADE_HERE = object()  # only this module builds CheckedCandles


@dataclass(frozen=True, eq=False)
class CheckedCandles:
    """Valid closed candles of one timeframe: ascending unique open times, read-only columns.

    ``values`` holds open, high, low, close, volume (float64, shape ``(n, 5)``). Built only by
    :func:`validate_matrix`, so holding one proves the rows passed validation in this process;
    the arrays cannot be written, so they cannot change after it either.
    """

    tf: tfs.Timeframe
    ts: np.ndarray
    values: np.ndarray
    token: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.token is not _MADE_HERE:
            raise TypeError("CheckedCandles come only from coin_core.candles.validate_matrix")
        self.ts.setflags(write=False)
        self.values.setflags(write=False)

    def __len__(self) -> int:
        return len(self.ts)

    def select(self, mask: np.ndarray) -> "CheckedCandles":
        """The candles where ``mask`` holds (a subset of valid candles is valid)."""
        return CheckedCandles(self.tf, self.ts[mask], self.values[mask], _MADE_HERE)

    def column(self, name: str) -> np.ndarray:
        return self.ts if name == "ts" else self.values[:, COLUMNS.index(name) - 1]

    def frame(self) -> pd.DataFrame:
        """A candle frame (a copy: changing it changes nothing here)."""
        data = {"ts": self.ts.copy()}
        data.update({name: self.values[:, i].copy() for i, name in enumerate(COLUMNS[1:])})
        return pd.DataFrame(data)


@dataclass
class ValidationReport:
    """Outcome of validation: the candles to store, and what was left out and why."""

    checked: CheckedCandles
    rejected: list[Rejection] = field(default_factory=list)
    in_progress: int = 0

    @property
    def rejected_count(self) -> int:
        return len(self.rejected)

    @cached_property
    def valid(self) -> pd.DataFrame:
        """The valid candles as a frame (ascending open times)."""
        return self.checked.frame()


def empty_frame() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="int64" if c == "ts" else "float64") for c in COLUMNS})
    return frame


def to_frame(rows: Iterable[Sequence[object]]) -> pd.DataFrame:
    """Build a frame from ``[ts, open, high, low, close, volume]`` rows (ccxt's OHLCV shape).

    Values that are not numbers become NaN here and are rejected by :func:`validate_candles`.
    """
    rows = list(rows)
    if not rows:
        return empty_frame()
    if any(len(r) < 6 for r in rows):
        raise DataValidationError("OHLCV row with fewer than 6 fields")
    frame = pd.DataFrame([list(r[:6]) for r in rows], columns=list(COLUMNS))
    for col in PRICE_COLUMNS + ("volume",):
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    frame["ts"] = pd.to_numeric(frame["ts"], errors="coerce")
    return frame


def rows_matrix(rows: Sequence[Sequence[object]]) -> np.ndarray:
    """``[ts, o, h, l, c, v]`` rows (at least 6 values each) as an ``(n, 6)`` float64 matrix.

    Numbers (and numeric strings) convert as :func:`float` would; anything else becomes NaN, for
    validation to reject. Open times stay exact: every one validation accepts is below 2**53.
    """
    if not rows:
        return np.empty((0, 6))
    try:
        return np.array([r[:6] for r in rows], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):  # a value that is not a number: column by column
        return to_frame(rows).to_numpy(dtype=np.float64, na_value=np.nan)


def _aligned(ts: np.ndarray, tf: tfs.Timeframe) -> np.ndarray:
    if tf == "1M":  # calendar months: pandas' calendar
        return tfs.aligned_mask(pd.Series(ts), tf).to_numpy(dtype=bool)
    step = tfs.add(0, tf, 1)
    return (ts - tfs.floor(0, tf)) % step == 0  # floor(0): the grid's origin (1w opens on Mondays)


def _close_times(ts: np.ndarray, tf: tfs.Timeframe) -> np.ndarray:
    if tf == "1M":
        return tfs.close_times(pd.Series(ts), tf).to_numpy()
    return ts + tfs.add(0, tf, 1)


def _reasons(m: np.ndarray, tf: tfs.Timeframe) -> np.ndarray:
    """One reason per row ('' when valid); the first failing check wins."""
    ts, o, h, l, c, v = m.T
    with np.errstate(invalid="ignore"):
        checks: list[tuple[np.ndarray, str]] = [
            (~np.isfinite(ts) | (ts % 1 != 0), "timestamp missing or not an integer"),
            ((ts < 0) | (ts > MAX_TS), "timestamp out of range"),
            (~np.isfinite(m[:, 1:]).all(axis=1), "non-finite value"),
            ((m[:, 1:5] <= 0).any(axis=1), "non-positive price"),
            ((m[:, 1:5] > MAX_PRICE).any(axis=1), f"price above {MAX_PRICE:.0e}"),
            (v < 0, "negative volume"),
            (v > MAX_VOLUME, f"volume above {MAX_VOLUME:.0e}"),
            (l > np.minimum(o, c), "low above open/close"),
            (h < np.maximum(o, c), "high below open/close"),
        ]
    reasons = np.full(len(m), "", dtype=object)
    bad = np.zeros(len(m), dtype=bool)
    for mask, reason in checks:
        if mask.any():
            reasons[mask & ~bad] = reason
            bad |= mask
    ok = np.flatnonzero(~bad)
    misaligned = ok[~_aligned(ts[ok].astype(np.int64), tf)]
    reasons[misaligned] = f"timestamp not aligned to {tf}"
    return reasons


def _unique(m: np.ndarray) -> tuple[np.ndarray, list[Rejection]]:
    """Identical repeats collapse; rows sharing an open time with different values are all rejected."""
    if len(m) < 2:
        return m, []
    m = m[np.lexsort(m.T[::-1])]  # by open time, then by every value: identical rows are adjacent
    m = m[np.r_[True, (m[1:] != m[:-1]).any(axis=1)]]
    same = m[1:, 0] == m[:-1, 0]
    clash = np.r_[same, False] | np.r_[False, same]
    return m[~clash], [Rejection(int(t), "conflicting duplicate timestamp") for t in m[clash, 0]]


def validate_matrix(m: np.ndarray, tf: tfs.Timeframe, now_ms: int | None = None) -> ValidationReport:
    """Validate an ``(n, 6)`` float64 matrix of ``[ts, o, h, l, c, v]`` rows (see :func:`validate_candles`)."""
    m = np.asarray(m, dtype=np.float64).reshape(-1, 6)
    reasons = _reasons(m, tf)
    bad = reasons != ""
    rejected = [Rejection(_ts(m[i, 0]), reasons[i]) for i in np.flatnonzero(bad)]
    good, clashes = _unique(m[~bad])
    rejected += clashes
    in_progress = 0
    if now_ms is not None and len(good):
        future = good[:, 0] > now_ms
        rejected += [Rejection(int(t), FUTURE) for t in good[future, 0]]
        good = good[~future]
        opens = _close_times(good[:, 0].astype(np.int64), tf) > now_ms
        in_progress = int(opens.sum())
        good = good[~opens]
    checked = CheckedCandles(tf, good[:, 0].astype(np.int64), np.ascontiguousarray(good[:, 1:]), _MADE_HERE)
    return ValidationReport(checked, rejected, in_progress)


def validate_candles(frame: pd.DataFrame, tf: tfs.Timeframe, now_ms: int | None = None) -> ValidationReport:
    """Split a frame into valid closed candles and rejections.

    The in-progress candle (open at or before ``now_ms``, close after it) is dropped without
    counting as rejected; a candle opening after ``now_ms`` cannot exist yet and is rejected
    (:data:`FUTURE`). Duplicate timestamps that disagree are all rejected; identical repeats collapse.
    """
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataValidationError(f"candle frame lacks columns: {', '.join(missing)}")
    matrix = np.column_stack([_floats(frame[c]) for c in COLUMNS]) if len(frame) else np.empty((0, 6))
    return validate_matrix(matrix, tf, now_ms)


def _floats(column: pd.Series) -> np.ndarray:
    try:
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):  # an object column holding text: not a number, rejected
        return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _ts(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None
