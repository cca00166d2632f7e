"""Candle frames and their validation.

A *candle frame* is a pandas DataFrame with exactly the columns of :data:`COLUMNS`: ``ts`` is the
candle's open time in UTC milliseconds (int64), prices and volume are float64. Every candle is
validated before it is stored; a rejected candle is counted with its reason, never stored.

Sanity bounds (values no market can have, rejected): a price must be finite, > 0 and at most
:data:`MAX_PRICE`; a volume finite, >= 0 and at most :data:`MAX_VOLUME`; an open time an integer
between 0 and :data:`MAX_TS` (year 9999), on the timeframe's grid, and not after ``now``. A
plausible but suspicious value (a tenfold jump) is not judged here: ingest flags it for review.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from . import timeframes as tfs
from .errors import DataValidationError

__all__ = [
    "COLUMNS", "PRICE_COLUMNS", "MAX_PRICE", "MAX_VOLUME", "MAX_TS", "Rejection", "ValidationReport",
    "empty_frame", "to_frame", "validate_candles",
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


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_candles`: the frame to store, and what was left out and why."""

    valid: pd.DataFrame
    rejected: list[Rejection] = field(default_factory=list)
    in_progress: int = 0

    @property
    def rejected_count(self) -> int:
        return len(self.rejected)


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


def _reasons(frame: pd.DataFrame, tf: tfs.Timeframe) -> np.ndarray:
    """One reason per row ('' when valid); the first failing check wins."""
    ts = frame["ts"].to_numpy(dtype="float64", na_value=np.nan)
    o, h, l, c, v = (frame[col].to_numpy(dtype="float64", na_value=np.nan) for col in PRICE_COLUMNS + ("volume",))
    with np.errstate(invalid="ignore"):
        checks: list[tuple[np.ndarray, str]] = [
            (~np.isfinite(ts) | (ts % 1 != 0), "timestamp missing or not an integer"),
            ((ts < 0) | (ts > MAX_TS), "timestamp out of range"),
            (~(np.isfinite(o) & np.isfinite(h) & np.isfinite(l) & np.isfinite(c) & np.isfinite(v)), "non-finite value"),
            ((o <= 0) | (h <= 0) | (l <= 0) | (c <= 0), "non-positive price"),
            ((o > MAX_PRICE) | (h > MAX_PRICE) | (l > MAX_PRICE) | (c > MAX_PRICE), f"price above {MAX_PRICE:.0e}"),
            (v < 0, "negative volume"),
            (v > MAX_VOLUME, f"volume above {MAX_VOLUME:.0e}"),
            (l > np.minimum(o, c), "low above open/close"),
            (h < np.maximum(o, c), "high below open/close"),
        ]
    reasons = np.full(len(frame), "", dtype=object)
    for mask, reason in checks:
        reasons[mask & (reasons == "")] = reason
    ok = reasons == ""
    aligned = tfs.aligned_mask(pd.Series(ts[ok].astype("int64")), tf).to_numpy()
    reasons[np.flatnonzero(ok)[~aligned]] = f"timestamp not aligned to {tf}"
    return reasons


def validate_candles(frame: pd.DataFrame, tf: tfs.Timeframe, now_ms: int | None = None) -> ValidationReport:
    """Split a frame into valid closed candles and rejections.

    The in-progress candle (open at or before ``now_ms``, close after it) is dropped without
    counting as rejected; a candle opening after ``now_ms`` cannot exist yet and is rejected
    (:data:`FUTURE`). Duplicate timestamps that disagree are all rejected; identical repeats collapse.
    """
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataValidationError(f"candle frame lacks columns: {', '.join(missing)}")
    frame = frame[list(COLUMNS)].reset_index(drop=True)
    if frame.empty:
        return ValidationReport(valid=empty_frame())
    reasons = _reasons(frame, tf)
    bad = np.flatnonzero(reasons != "")
    rejected = [Rejection(_ts(frame.at[i, "ts"]), reasons[i]) for i in bad]
    good = frame[reasons == ""].astype({"ts": "int64"})
    good = good.drop_duplicates()
    clash = good["ts"].duplicated(keep=False)
    rejected += [Rejection(int(t), "conflicting duplicate timestamp") for t in good.loc[clash, "ts"]]
    good = good[~clash]
    in_progress = 0
    if now_ms is not None:
        future = good["ts"] > now_ms
        rejected += [Rejection(int(t), FUTURE) for t in good.loc[future, "ts"]]
        good = good[~future]
        open_mask = tfs.close_times(good["ts"], tf) > now_ms
        in_progress = int(open_mask.sum())
        good = good[~open_mask]
    good = good.sort_values("ts").reset_index(drop=True)
    return ValidationReport(valid=good, rejected=rejected, in_progress=in_progress)


def _ts(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
