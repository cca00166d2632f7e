"""Scores of scored forecast points: small pure functions over one long frame.

The frame has one row per (origin, step) with columns :data:`POINT_COLUMNS`. Accuracy and
coverage come from utilsforecast's losses (grouped by ``step`` for the per-step table, by a
constant for the overall figure); the proper interval score is scoringrules' weighted interval
score (Bracher et al. 2021) built on scoringrules' interval score; with the median and the 50 %
and 80 % intervals it approximates the CRPS. WIS and band width are taken in *fractions of the origin's price*, so origins years apart
weigh alike and series compare with each other.

MASE here is the relative MAE against the naive forecast (the last close at the origin) on the
same points: 1.00 ties "no change", below 1 beats it. This is the comparison the promotion gate
needs; utilsforecast's ``mase`` scales by an in-sample seasonal naive instead, which says how a
model did against a baseline that was never issued.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scoringrules as sr
from utilsforecast import losses

__all__ = ["POINT_COLUMNS", "mae", "mase", "coverage", "wis", "width", "by_step"]

POINT_COLUMNS = ("origin", "step", "y", "yhat", "naive", "price0",
                 "yhat_lower_50", "yhat_upper_50", "yhat_lower", "yhat_upper")
_ALL = "_all"


def _grouped(points: pd.DataFrame, per_step: bool) -> tuple[pd.DataFrame, str]:
    if per_step:
        return points, "step"
    return points.assign(**{_ALL: 0}), _ALL


def _column(result: pd.DataFrame, key: str, model: str) -> pd.Series:
    return result.set_index(key)[model].astype("float64").sort_index()


def mae(points: pd.DataFrame, per_step: bool = False) -> pd.Series:
    """Mean absolute error of ``yhat`` (price units)."""
    frame, key = _grouped(points, per_step)
    return _column(losses.mae(frame, ["yhat"], id_col=key, target_col="y"), key, "yhat")


def mase(points: pd.DataFrame, per_step: bool = False) -> pd.Series:
    """MAE of ``yhat`` over MAE of ``naive`` on the same points (1.0 = ties no-change)."""
    frame, key = _grouped(points, per_step)
    result = losses.rmae(frame, ["yhat"], baseline="naive", id_col=key, target_col="y")
    return _column(result, key, "yhat")


def coverage(points: pd.DataFrame, level: int, per_step: bool = False) -> pd.Series:
    """Share of realised closes inside the ``level`` % band (``level`` 50 or 80)."""
    lower, upper = ("yhat_lower", "yhat_upper") if level == 80 else (f"yhat_lower_{level}", f"yhat_upper_{level}")
    frame, key = _grouped(points, per_step)
    frame = frame[[key, "y"]].assign(**{f"b-lo-{level}": frame[lower], f"b-hi-{level}": frame[upper]})
    return _column(losses.coverage(frame, ["b"], level=level, id_col=key, target_col="y"), key, "b")


def wis(points: pd.DataFrame, per_step: bool = False) -> pd.Series:
    """Weighted interval score of the median + 50 % + 80 % bands, in fractions of price.

    Composed from scoringrules' interval score with Bracher et al.'s weights: scoringrules
    0.10.0's own ``weighted_interval_score`` adds ``w_median * median`` where the paper has
    ``w_median * |y - median|`` (a WIS of 0.47 for a perfect forecast of 1.0 in [0, 2]).
    """
    scale = points["price0"].to_numpy(dtype="float64")
    y = points["y"].to_numpy(dtype="float64") / scale
    total = 0.5 * np.abs(y - points["yhat"].to_numpy(dtype="float64") / scale)
    for alpha, lower, upper in ((0.5, "yhat_lower_50", "yhat_upper_50"), (0.2, "yhat_lower", "yhat_upper")):
        score = sr.interval_score(y, points[lower].to_numpy(dtype="float64") / scale,
                                  points[upper].to_numpy(dtype="float64") / scale, alpha, backend="numpy")
        total = total + alpha / 2 * np.asarray(score, dtype="float64")
    frame, key = _grouped(points.assign(_wis=total / 2.5), per_step)
    return frame.groupby(key)["_wis"].mean().sort_index()


def width(points: pd.DataFrame, level: int = 80, per_step: bool = False) -> pd.Series:
    """Mean band width as a fraction of the point forecast."""
    lower, upper = ("yhat_lower", "yhat_upper") if level == 80 else (f"yhat_lower_{level}", f"yhat_upper_{level}")
    frame, key = _grouped(points.assign(_w=(points[upper] - points[lower]) / points["yhat"]), per_step)
    return frame.groupby(key)["_w"].mean().sort_index()


def by_step(points: pd.DataFrame) -> pd.DataFrame:
    """Every metric per horizon step: one row per step."""
    return pd.DataFrame({
        "mae": mae(points, True), "mase": mase(points, True), "wis": wis(points, True),
        "coverage50": coverage(points, 50, True), "coverage80": coverage(points, 80, True),
        "width80": width(points, 80, True),
    }).rename_axis("step").reset_index()
