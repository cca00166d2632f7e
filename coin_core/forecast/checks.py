"""The pure checks and helpers every model shares: inputs (history, targets, a recent tail),
the output contract (finite, matching targets, band not inverted), candle spacing and z-scores.

Re-exported by ``base.py``; numpy only on the serving path (``check_points``).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import ModelError

__all__ = [
    "PREDICTION_COLUMNS", "BAND_TOLERANCE", "z_score", "step_ms_of", "steps_ahead", "check_history", "check_targets",
    "check_points", "check_prediction", "check_recent", "points_to_frame",
]

PREDICTION_COLUMNS = ("ts", "yhat", "yhat_lower", "yhat_upper")


def z_score(width: float) -> float:
    """Two-sided normal quantile: 0.8 -> 1.2816."""
    if not 0 < width < 1:
        raise ModelError(f"interval width must be in (0, 1), got {width}")
    return NormalDist().inv_cdf(0.5 + width / 2)


def step_ms_of(ts: np.ndarray) -> int:
    """The series' candle length: the median spacing (robust to exchange gaps; ~30.4 d for 1M)."""
    if len(ts) < 2:
        raise ModelError("need at least 2 observations to infer the candle spacing")
    step = int(np.median(np.diff(ts)))
    if step <= 0:
        raise ModelError("history timestamps are not strictly increasing")
    return step


def steps_ahead(target_ts: np.ndarray, anchor_ts: int, step_ms: int) -> np.ndarray:
    """How many candles after the anchor each target is (at least 1; rounding absorbs 1M)."""
    return np.maximum(1, np.rint((target_ts - anchor_ts) / step_ms)).astype("int64")


def check_history(history: pd.DataFrame, min_rows: int = 2) -> pd.DataFrame:
    """Validated ``ts``/``y`` frame: int64 ascending unique ts, finite y."""
    missing = [c for c in ("ts", "y") if c not in history.columns]
    if missing:
        raise ModelError(f"history lacks column(s): {', '.join(missing)}")
    frame = history[["ts", "y"]].astype({"ts": "int64", "y": "float64"}).reset_index(drop=True)
    if len(frame) < min_rows:
        raise ModelError(f"history has {len(frame)} row(s); at least {min_rows} needed")
    if not np.isfinite(frame["y"].to_numpy()).all():
        raise ModelError("history contains non-finite values")
    if not (np.diff(frame["ts"].to_numpy()) > 0).all():
        raise ModelError("history timestamps must be strictly increasing")
    return frame


def check_targets(target_ts: Sequence[int]) -> np.ndarray:
    values = np.asarray(list(target_ts), dtype="int64")
    if values.ndim != 1 or len(values) == 0:
        raise ModelError("predict needs at least one target timestamp")
    return values


BAND_TOLERANCE = 1e-9  # float noise allowed in lower <= upper, relative to the price


def check_points(values: np.ndarray, target_ts: np.ndarray) -> np.ndarray:
    """:func:`check_prediction` on a ``(n, 3)`` array of yhat, lower, upper (the serving path)."""
    values = np.array(values, dtype="float64")  # a copy: the widening below must not leak back
    if values.ndim != 2 or values.shape != (len(target_ts), 3):
        raise ModelError("prediction does not match the requested target timestamps")
    if not np.isfinite(values).all():
        raise ModelError("prediction contains non-finite values")
    _reject_inverted_band(target_ts, values)
    # Sampled bands (Prophet) can miss yhat by sampling noise; widen them to contain it.
    values[:, 1] = np.minimum(values[:, 1], values[:, 0])
    values[:, 2] = np.maximum(values[:, 2], values[:, 0])
    return values


def check_prediction(frame: pd.DataFrame, target_ts: np.ndarray) -> pd.DataFrame:
    """Enforce the output contract; a model that breaks it raises instead of publishing junk."""
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise ModelError(f"prediction lacks column(s): {', '.join(missing)}")
    ts = frame["ts"].to_numpy(dtype="int64")
    if len(ts) != len(target_ts) or not (ts == target_ts).all():
        raise ModelError("prediction does not match the requested target timestamps")
    values = check_points(np.column_stack([frame[c].to_numpy(dtype="float64") for c in PREDICTION_COLUMNS[1:]]), ts)
    return points_to_frame(ts, values)


def points_to_frame(target_ts: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """The ``PREDICTION_COLUMNS`` frame of checked ``(n, 3)`` points."""
    return pd.DataFrame({"ts": np.asarray(target_ts, dtype="int64"), "yhat": values[:, 0],
                         "yhat_lower": values[:, 1], "yhat_upper": values[:, 2]})


def _reject_inverted_band(target_ts: np.ndarray, values: np.ndarray) -> None:
    """lower > upper is a broken model, not noise: raise. The tolerance is relative to the price
    scale, so a BTC band and a SHIB band are judged alike."""
    scale = np.maximum(np.abs(values).max(axis=1), np.finfo("float64").tiny)
    inverted = (values[:, 1] - values[:, 2]) > BAND_TOLERANCE * scale
    if inverted.any():
        first = int(np.argmax(inverted))
        raise ModelError(
            f"prediction band is inverted at ts={int(target_ts[first])}: lower "
            f"{float(values[first, 1])!r} > upper {float(values[first, 2])!r}"
        )


def check_recent(ts: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`check_history` (at least one row) for a ``recent`` tail given as arrays."""
    ts, y = np.asarray(ts, dtype="int64"), np.asarray(y, dtype="float64")
    if ts.ndim != 1 or ts.shape != y.shape or len(ts) < 1:
        raise ModelError("recent tail needs matching ts and y arrays with at least 1 row")
    if not np.isfinite(y).all():
        raise ModelError("history contains non-finite values")
    if not (np.diff(ts) > 0).all():
        raise ModelError("history timestamps must be strictly increasing")
    return ts, y
