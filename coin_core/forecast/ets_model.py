"""Exponential smoothing (statsmodels ``ETSModel``) on log prices: the fast challenger.

* Log prices: an additive error on ``log y`` is a multiplicative one on price, so the model's
  behaviour does not change as the price moves by orders of magnitude.
* Automatic choice (AutoETS style) between simple exponential smoothing ``A,N,N`` and a damped
  additive trend ``A,Ad,N`` by AICc; seasonal forms are left out (crypto has no stable season
  strong enough to pay for 24 or 7 extra states, and a season fitted on noise hurts forecasts).
* The state saved is the fitted smoothing parameters and the final level/trend, so predict
  needs no refit: candles newer than the fit (``recent=``) are filtered through the same
  recursions, and steps the tail does not cover advance the state without an update.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import ModelError
from .base import Model, step_ms_of, steps_ahead, z_score
from .naive import width_param

__all__ = ["EtsModel", "EtsState", "ets_path"]

_KINDS = ("ANN", "AAdN")


class EtsState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(pattern=r"^(ANN|AAdN)$")
    alpha: float = Field(ge=0, le=1, allow_inf_nan=False)
    beta: float = Field(ge=0, le=1, allow_inf_nan=False)
    phi: float = Field(ge=0, le=1, allow_inf_nan=False)
    level: float = Field(allow_inf_nan=False)
    trend: float = Field(allow_inf_nan=False)
    sigma: float = Field(ge=0, allow_inf_nan=False)
    last_ts: int
    step_ms: int = Field(gt=0)
    n: int = Field(ge=2)
    aicc: float
    interval_width: float = Field(gt=0, lt=1)


def _fit_one(log_y: np.ndarray, kind: str) -> Any:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    trend = {"trend": "add", "damped_trend": True} if kind == "AAdN" else {"trend": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter from scipy's optimiser
        return ETSModel(log_y, error="add", **trend).fit(disp=False)


def _advance(s: EtsState, log_obs: float | None) -> tuple[float, float]:
    """One step of the ETS recursion (no observation: the forecast becomes the state)."""
    pred = s.level + s.phi * s.trend
    if log_obs is None:
        return pred, s.phi * s.trend
    err = log_obs - pred
    return pred + s.alpha * err, s.phi * s.trend + s.beta * err


def ets_path(s: EtsState, h: np.ndarray) -> np.ndarray:
    """Log forecast ``h`` steps after the state: level + trend * (phi + ... + phi^h)."""
    if s.phi >= 1 - 1e-12:
        damp = h.astype("float64")
    else:
        damp = s.phi * (1 - s.phi ** h.astype("float64")) / (1 - s.phi)
    return s.level + s.trend * damp


class EtsModel(Model):
    name = "ets"

    def _check_params(self, params: dict[str, Any]) -> None:
        unknown = set(params) - {"interval_width", "kind"}
        if unknown:
            raise ModelError(f"unknown ets parameter(s): {', '.join(sorted(unknown))}")
        if params.get("kind", "auto") not in ("auto", *_KINDS):
            raise ModelError("ets kind must be auto, ANN or AAdN")
        width_param(params)

    def _fit(self, history: pd.DataFrame) -> dict[str, Any]:
        ts, y = history["ts"].to_numpy(), history["y"].to_numpy()
        if (y <= 0).any():
            raise ModelError("ets fits log prices: every value must be positive")
        log_y = np.log(y)
        wanted = self.spec.params.get("kind", "auto")
        fits = {k: _fit_one(log_y, k) for k in (_KINDS if wanted == "auto" else (wanted,))}
        kind, res = min(fits.items(), key=lambda kv: kv[1].aicc if np.isfinite(kv[1].aicc) else math.inf)
        p = dict(zip(res.model.param_names, np.asarray(res.params, dtype="float64")))
        level = float(res.states.iloc[-1, 0] if hasattr(res.states, "iloc") else res.states[-1, 0])
        trend = float(res.states.iloc[-1, 1] if hasattr(res.states, "iloc") else res.states[-1, 1]) if kind == "AAdN" else 0.0
        state = EtsState(
            kind=kind, alpha=float(p["smoothing_level"]), beta=float(p.get("smoothing_trend", 0.0)),
            phi=float(p.get("damping_trend", 1.0)), level=level, trend=trend,
            sigma=float(np.std(np.asarray(res.resid)[1:], ddof=1)), last_ts=int(ts[-1]), step_ms=step_ms_of(ts),
            n=len(y), aicc=float(res.aicc) if np.isfinite(res.aicc) else 0.0,
            interval_width=width_param(dict(self.spec.params)),
        )
        return state.model_dump()

    def _predict_arrays(self, state: dict[str, Any], target_ts: np.ndarray,
                        recent: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        s = EtsState.model_validate(state)
        anchor = s.last_ts
        if recent is not None:
            for ts, y in zip(recent[0].tolist(), recent[1].tolist()):
                if int(ts) <= anchor or not y > 0:
                    continue
                for _ in range(int(steps_ahead(np.array([int(ts)]), anchor, s.step_ms)[0]) - 1):
                    s.level, s.trend = _advance(s, None)
                s.level, s.trend = _advance(s, math.log(float(y)))
                anchor = int(ts)
        h = steps_ahead(target_ts, anchor, s.step_ms)
        path = ets_path(s, h)
        half = z_score(s.interval_width) * s.sigma * np.sqrt(h)
        return np.column_stack([np.exp(path), np.exp(path - half), np.exp(path + half)])

    def _validate_state(self, state: dict[str, Any]) -> dict[str, Any]:
        try:
            return EtsState.model_validate(state).model_dump()
        except ValidationError as exc:
            raise ModelError(f"invalid ets state: {exc.errors()[0]['msg']}") from exc
