"""Random walk with drift: the naive forecast plus the history's average step.

yhat = last + h * slope, slope = (y_last - y_first) / steps; the band is the textbook drift
interval ``z * sigma * sqrt(h * (1 + h / (n - 1)))`` (Hyndman & Athanasopoulos, FPP3 §5.5),
sigma the std of one-step differences around the slope.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, ValidationError

from ..errors import ModelError
from .base import Model, step_ms_of, steps_ahead, z_score
from .naive import NaiveState, anchor_of, width_param

__all__ = ["DriftModel", "DriftState", "drift_slope", "drift_forecast"]


class DriftState(NaiveState):
    slope: float = Field(allow_inf_nan=False)


def drift_slope(ts: np.ndarray, y: np.ndarray, step_ms: int) -> float:
    """Average change per candle, counting candles by time so exchange gaps do not bias it."""
    steps = max(1, round((int(ts[-1]) - int(ts[0])) / step_ms))
    return float((y[-1] - y[0]) / steps)


def drift_sigma(y: np.ndarray, slope: float) -> float:
    resid = np.diff(y) - slope
    return float(np.std(resid, ddof=1)) if len(resid) > 1 else float(abs(resid[0]))


def drift_forecast(
    last_y: float, slope: float, sigma: float, n: int, h: np.ndarray, z: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yhat = last_y + slope * h.astype("float64")
    half = z * sigma * np.sqrt(h * (1 + h / max(1, n - 1)))
    return yhat, yhat - half, yhat + half


class DriftModel(Model):
    name = "drift"

    def _check_params(self, params: dict[str, Any]) -> None:
        unknown = set(params) - {"interval_width"}
        if unknown:
            raise ModelError(f"unknown drift parameter(s): {', '.join(sorted(unknown))}")
        width_param(params)

    def _fit(self, history: pd.DataFrame) -> dict[str, Any]:
        ts, y = history["ts"].to_numpy(), history["y"].to_numpy()
        step = step_ms_of(ts)
        slope = drift_slope(ts, y, step)
        state = DriftState(
            last_ts=int(ts[-1]), last_y=float(y[-1]), sigma=drift_sigma(y, slope), step_ms=step,
            n=len(y), interval_width=width_param(dict(self.spec.params)), slope=slope,
        )
        return state.model_dump()

    def _predict_arrays(self, state: dict[str, Any], target_ts: np.ndarray,
                        recent: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        s = DriftState.model_validate(state)
        anchor_ts, anchor_y = anchor_of(s.last_ts, s.last_y, recent)
        h = steps_ahead(target_ts, anchor_ts, s.step_ms)
        return np.column_stack(drift_forecast(anchor_y, s.slope, s.sigma, s.n, h, z_score(s.interval_width)))

    def _validate_state(self, state: dict[str, Any]) -> dict[str, Any]:
        try:
            return DriftState.model_validate(state).model_dump()
        except ValidationError as exc:
            raise ModelError(f"invalid drift state: {exc.errors()[0]['msg']}") from exc
