"""Naive forecaster: tomorrow looks like today (the honest baseline every model must beat).

yhat = last observed value; the band widens with the horizon as a random walk's does:
``z * sigma * sqrt(h)``, sigma the standard deviation of one-step differences.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ModelError
from .base import DEFAULT_INTERVAL_WIDTH, Model, step_ms_of, steps_ahead, z_score

__all__ = ["NaiveModel", "NaiveState", "naive_sigma", "naive_forecast", "anchor_of"]


class NaiveState(BaseModel):
    """Everything a naive fit learns (also the drift model's base)."""

    model_config = ConfigDict(extra="forbid")

    last_ts: int
    last_y: float
    sigma: float = Field(ge=0, allow_inf_nan=False)
    step_ms: int = Field(gt=0)
    n: int = Field(ge=2)
    interval_width: float = Field(gt=0, lt=1)


def naive_sigma(y: np.ndarray) -> float:
    """Std of one-step differences (0 for a flat series)."""
    diffs = np.diff(y)
    return float(np.std(diffs, ddof=1)) if len(diffs) > 1 else float(abs(diffs[0]))


def naive_forecast(last_y: float, sigma: float, h: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    yhat = np.full(len(h), last_y, dtype="float64")
    half = z * sigma * np.sqrt(h)
    return yhat, yhat - half, yhat + half


def anchor_of(last_ts: int, last_y: float, recent: tuple[np.ndarray, np.ndarray] | None) -> tuple[int, float]:
    """The newest observation: the fit's own or the ``recent`` (ts, y) tail's, whichever is later."""
    if recent is not None and int(recent[0][-1]) > last_ts:
        return int(recent[0][-1]), float(recent[1][-1])
    return last_ts, last_y


def width_param(params: dict[str, Any]) -> float:
    width = params.get("interval_width", DEFAULT_INTERVAL_WIDTH)
    if not isinstance(width, (int, float)) or isinstance(width, bool):
        raise ModelError("interval_width must be a number")
    z_score(float(width))  # range check
    return float(width)


class NaiveModel(Model):
    name = "naive"

    def _check_params(self, params: dict[str, Any]) -> None:
        unknown = set(params) - {"interval_width"}
        if unknown:
            raise ModelError(f"unknown naive parameter(s): {', '.join(sorted(unknown))}")
        width_param(params)

    def _fit(self, history: pd.DataFrame) -> dict[str, Any]:
        ts, y = history["ts"].to_numpy(), history["y"].to_numpy()
        state = NaiveState(
            last_ts=int(ts[-1]), last_y=float(y[-1]), sigma=naive_sigma(y), step_ms=step_ms_of(ts),
            n=len(y), interval_width=width_param(dict(self.spec.params)),
        )
        return state.model_dump()

    def _predict_arrays(self, state: dict[str, Any], target_ts: np.ndarray,
                        recent: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        s = NaiveState.model_validate(state)
        anchor_ts, anchor_y = anchor_of(s.last_ts, s.last_y, recent)
        h = steps_ahead(target_ts, anchor_ts, s.step_ms)
        return np.column_stack(naive_forecast(anchor_y, s.sigma, h, z_score(s.interval_width)))

    def _validate_state(self, state: dict[str, Any]) -> dict[str, Any]:
        try:
            return NaiveState.model_validate(state).model_dump()
        except ValidationError as exc:
            raise ModelError(f"invalid naive state: {exc.errors()[0]['msg']}") from exc
