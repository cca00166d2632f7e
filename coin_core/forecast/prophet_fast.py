"""Prophet's point forecast from its fitted parameters, in numpy: what a cycle serves from.

``Prophet.predict`` builds a pandas frame of every seasonality feature and every component and
needs the model rebuilt from its ~1.4 MB JSON (the whole training history through
``pandas.read_json``): ~100 ms of CPU a series. With ``uncertainty_samples=0`` its ``yhat`` is a
closed form of a few hundred numbers, computed here exactly as prophet 1.5 defines it
(``forecaster.py``):

* time ``t = (ds - start) / t_scale``;
* trend: ``piecewise_linear`` (``k + sum(delta where t >= changepoint)``, offsets likewise) or
  ``flat_trend``, times ``y_scale``, plus the floor (0, or ``y_min`` under ``minmax`` scaling);
* seasonalities: ``fourier_series`` (``sin``/``cos`` of ``2 pi (i+1) t_days / period``, in the
  model's column order), one ``X @ (beta * mask).T`` per mode, the additive one times ``y_scale``;
* ``yhat = trend * (1 + multiplicative) + additive``.

What this form does not cover (logistic growth, holidays, extra regressors, conditional
seasonalities) makes :func:`compact_params` return None, and the model then keeps prophet's own
predict. ``tests/test_prophet_fast.py`` holds both equal on fitted models.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Seasonality", "ProphetParams", "compact_params", "predict_yhat"]

_NS_PER_MS = 1_000_000
_SECONDS_PER_DAY = 24 * 60 * 60


class Seasonality(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    period: float = Field(gt=0, allow_inf_nan=False)
    order: int = Field(ge=1, le=100)
    mode: Literal["additive", "multiplicative"]


class ProphetParams(BaseModel):
    """Everything ``predict`` needs from a fitted prophet model (a few hundred numbers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    growth: Literal["linear", "flat"]
    start_ns: int
    t_scale_ns: int = Field(gt=0)
    y_scale: float = Field(allow_inf_nan=False)
    floor: float = Field(allow_inf_nan=False)
    k: float = Field(allow_inf_nan=False)
    m: float = Field(allow_inf_nan=False)
    delta: list[float]
    changepoints_t: list[float]
    beta: list[float]
    sigma_obs: float = Field(ge=0, allow_inf_nan=False)
    interval_width: float = Field(gt=0, lt=1)
    seasonalities: list[Seasonality]

    @model_validator(mode="after")
    def _shapes(self) -> "ProphetParams":
        if len(self.delta) != len(self.changepoints_t):
            raise ValueError("delta and changepoints_t differ in length")
        width = sum(2 * s.order for s in self.seasonalities) or 1  # prophet's "zeros" placeholder
        if len(self.beta) != width:
            raise ValueError(f"beta has {len(self.beta)} values for {width} seasonal features")
        if not all(math.isfinite(v) for v in (*self.delta, *self.changepoints_t, *self.beta)):
            raise ValueError("non-finite parameter")
        return self


def _mean(value: Any) -> np.ndarray:
    """prophet's ``np.nanmean`` over posterior samples (one sample for a MAP fit)."""
    return np.nanmean(np.asarray(value, dtype="float64"), axis=0)


def _start_ns(seconds: float) -> int:
    """``start`` exactly as prophet's ``model_from_dict`` rebuilds it from epoch seconds."""
    import pandas as pd

    return int(pd.Timestamp.fromtimestamp(seconds, tz="UTC").tz_localize(None).as_unit("ns")._value)


def _t_scale_ns(seconds: float) -> int:
    import pandas as pd

    return int(pd.Timedelta(seconds=seconds).as_unit("ns")._value)


def _unsupported(d: dict[str, Any]) -> bool:
    seasonal = d["seasonalities"][1].values()
    return (d.get("growth") not in ("linear", "flat") or bool(d.get("logistic_floor"))
            or d.get("holidays") is not None or d.get("country_holidays") is not None
            or d.get("train_holiday_names") is not None or bool(d.get("extra_regressors", [[], {}])[0])
            or any(s.get("condition_name") is not None for s in seasonal))


def compact_params(prophet_dict: dict[str, Any]) -> dict[str, Any] | None:
    """The parameter block of a ``model_to_json`` dict, or None when this module cannot predict it."""
    d = prophet_dict
    if _unsupported(d) or d.get("scaling", "absmax") not in ("absmax", "minmax"):
        return None
    names, seasonalities = d["seasonalities"]
    params = d["params"]
    block = ProphetParams(
        growth=d["growth"], start_ns=_start_ns(float(d["start"])), t_scale_ns=_t_scale_ns(float(d["t_scale"])),
        y_scale=float(d["y_scale"]), floor=float(d["y_min"]) if d.get("scaling") == "minmax" else 0.0,
        k=float(np.nanmean(np.asarray(params["k"], dtype="float64"))),
        m=float(np.nanmean(np.asarray(params["m"], dtype="float64"))),
        delta=_mean(params["delta"]).ravel().tolist(), changepoints_t=[float(v) for v in d["changepoints_t"]],
        beta=_mean(params["beta"]).ravel().tolist(),
        sigma_obs=float(np.ravel(np.asarray(params["sigma_obs"], dtype="float64"))[0]),
        interval_width=float(d["interval_width"]),
        seasonalities=[Seasonality(name=n, period=float(seasonalities[n]["period"]),
                                   order=int(seasonalities[n]["fourier_order"]), mode=seasonalities[n]["mode"])
                       for n in names],
    )
    return block.model_dump()


def _trend(p: ProphetParams, t: np.ndarray) -> np.ndarray:
    if p.growth == "flat":
        return p.m * np.ones_like(t)
    changepoints = np.asarray(p.changepoints_t, dtype="float64")
    deltas_t = (changepoints[None, :] <= t[..., None]) * np.asarray(p.delta, dtype="float64")
    k_t = deltas_t.sum(axis=1) + p.k
    m_t = (deltas_t * -changepoints).sum(axis=1) + p.m
    return k_t * t + m_t


def _features(p: ProphetParams, ts_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The seasonal feature matrix and, per column, whether it is multiplicative."""
    days = ts_ms.astype("int64") / 1000 / _SECONDS_PER_DAY  # prophet: total_seconds() / (24 * 60 * 60)
    x_t = np.pi * 2 * days
    columns: list[np.ndarray] = []
    modes: list[bool] = []
    for s in p.seasonalities:
        for i in range(s.order):
            c = (i + 1) / s.period * x_t
            columns += [np.sin(c), np.cos(c)]
            modes += [s.mode == "multiplicative"] * 2
    if not columns:
        return np.zeros((len(ts_ms), 1)), np.zeros(1, dtype=bool)
    return np.column_stack(columns), np.asarray(modes)


def predict_yhat(params: ProphetParams, ts_ms: np.ndarray) -> np.ndarray:
    """prophet's ``yhat`` at candle open times ``ts_ms`` (epoch ms, naive UTC as prophet sees them)."""
    ts_ms = np.asarray(ts_ms, dtype="int64")
    t = (ts_ms * _NS_PER_MS - params.start_ns) / params.t_scale_ns
    trend = _trend(params, t) * params.y_scale + params.floor
    x, multiplicative = _features(params, ts_ms)
    beta = np.asarray(params.beta, dtype="float64")[None, :]
    additive = np.matmul(x, (beta * ~multiplicative).T)[:, 0] * params.y_scale
    mult = np.matmul(x, (beta * multiplicative).T)[:, 0]
    return trend * (1 + mult) + additive
