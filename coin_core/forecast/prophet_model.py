"""Prophet forecaster (prophet 1.5, MAP fit through cmdstanpy), kept quiet and cheap.

* Quiet: prophet logs an error at import when plotly is absent and cmdstanpy logs two INFO lines
  per fit; a cycle over many series would flood the logs, so both are held at WARNING.
* Cheap: ``uncertainty_samples`` defaults to 0. Served bands come from the calibrated band layer
  (``bands.py``) for every model, so Prophet's own sampled band (most of a cycle's predict cost)
  is not drawn; the model's own band is then its observation noise ``z * sigma_obs`` (the
  contract's band). A spec may still ask for 10..2000 samples.
* Deterministic: prophet samples its bands from numpy's *global* RNG, so predict seeds it under
  a lock and restores it; the same artifact always gives the same forecast.
* Prophet sees naive UTC datetimes (it has no time-zone support).
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from typing import Any

import numpy as np
import pandas as pd

from pydantic import ValidationError

from ..errors import ModelError
from .base import DEFAULT_INTERVAL_WIDTH, Model, check_history, check_prediction, check_targets, step_ms_of, z_score
from .prophet_fast import ProphetParams, compact_params, predict_yhat

__all__ = ["ProphetModel", "PANDAS_LOCK", "seasonality_for", "prophet_kwargs", "to_ds"]

_DAY_MS = 86_400_000
_YEAR_MS = 365 * _DAY_MS
_RNG_LOCK = threading.Lock()
#: prophet's model_from_json (pandas.read_json) and predict run pandas code that wraps itself in
#: ``warnings.catch_warnings``, which swaps process-wide state: one thread at a time (see the
#: soak section of docs/benchmarks.md). The compact predict path takes no lock.
PANDAS_LOCK = threading.RLock()
_SEASONALITIES = ("daily_seasonality", "weekly_seasonality", "yearly_seasonality")
_PASSTHROUGH = {
    "changepoint_prior_scale": (int, float), "seasonality_prior_scale": (int, float),
    "changepoint_range": (int, float), "n_changepoints": (int,), "seasonality_mode": (str,),
    "growth": (str,), "interval_width": (int, float), "uncertainty_samples": (int,),
}
DEFAULT_SAMPLES = 0


def _quiet_prophet() -> Any:
    """Import prophet with its loggers held at WARNING (see module docstring)."""
    logging.getLogger("prophet.plot").setLevel(logging.CRITICAL)  # before import: plotly notice
    import cmdstanpy  # noqa: F401
    from cmdstanpy.utils import get_logger
    import prophet

    get_logger().setLevel(logging.WARNING)  # its own handler would otherwise print INFO
    logging.getLogger("prophet").setLevel(logging.WARNING)
    # prophet 1.5 calls pandas APIs that pandas 3 deprecates; that is prophet's to fix, not ours
    # to repeat in every cycle's log. Scoped to warnings raised from prophet's own modules.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"prophet(\.|$)")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"prophet(\.|$)")
    return prophet


def seasonality_for(step_ms: int, span_ms: int) -> dict[str, bool]:
    """Sensible seasonalities per candle length: a cycle must be resolvable and observed twice."""
    two_years = span_ms >= 2 * _YEAR_MS
    if step_ms < _DAY_MS:  # intraday: the daily cycle exists; yearly needs years of hours
        return {"daily_seasonality": True, "weekly_seasonality": True, "yearly_seasonality": False}
    if step_ms < 7 * _DAY_MS:
        return {"daily_seasonality": False, "weekly_seasonality": True, "yearly_seasonality": two_years}
    if step_ms < 28 * _DAY_MS:
        return {"daily_seasonality": False, "weekly_seasonality": False, "yearly_seasonality": two_years}
    return {"daily_seasonality": False, "weekly_seasonality": False, "yearly_seasonality": False}


def prophet_kwargs(params: dict[str, Any], step_ms: int, span_ms: int) -> dict[str, Any]:
    """Constructor arguments: explicit params win; ``"auto"`` seasonality follows the data."""
    kwargs: dict[str, Any] = {"interval_width": DEFAULT_INTERVAL_WIDTH, "uncertainty_samples": DEFAULT_SAMPLES}
    kwargs.update({k: v for k, v in params.items() if k in _PASSTHROUGH})
    auto = seasonality_for(step_ms, span_ms)
    for key in _SEASONALITIES:
        value = params.get(key, "auto")
        kwargs[key] = auto[key] if value == "auto" else value
    return kwargs


def to_ds(ts: np.ndarray) -> pd.Series:
    """Epoch ms -> naive UTC datetimes, the form prophet expects."""
    return pd.Series(pd.to_datetime(np.asarray(ts, dtype="int64"), unit="ms"))


def _with_band(raw: pd.DataFrame, m: Any) -> pd.DataFrame:
    """``yhat``/``yhat_lower``/``yhat_upper``; unsampled: +- z * the fitted observation noise."""
    if "yhat_lower" in raw.columns:
        return raw[["yhat", "yhat_lower", "yhat_upper"]]
    half = z_score(float(m.interval_width)) * float(np.ravel(m.params["sigma_obs"])[0]) * float(m.y_scale)
    return pd.DataFrame({"yhat": raw["yhat"], "yhat_lower": raw["yhat"] - half, "yhat_upper": raw["yhat"] + half})


class ProphetModel(Model):
    name = "prophet"

    def __init__(self, spec: Any = None) -> None:
        super().__init__(spec)
        self._cache: tuple[dict[str, Any], Any] | None = None  # (state_, Prophet): parse JSON once
        self._params: tuple[dict[str, Any], ProphetParams | None] | None = None  # (state_, compact block)

    def _check_params(self, params: dict[str, Any]) -> None:
        allowed = set(_PASSTHROUGH) | set(_SEASONALITIES) | {"seed"}
        unknown = set(params) - allowed
        if unknown:
            raise ModelError(f"unknown prophet parameter(s): {', '.join(sorted(unknown))}")
        for key, types in _PASSTHROUGH.items():
            if key in params and (isinstance(params[key], bool) or not isinstance(params[key], types)):
                raise ModelError(f"prophet parameter {key} has the wrong type")
        samples = int(params.get("uncertainty_samples", DEFAULT_SAMPLES))
        if samples != 0 and not 10 <= samples <= 2000:  # a handful of samples gives a random band
            raise ModelError("uncertainty_samples must be 0 or between 10 and 2000")
        for key in _SEASONALITIES:
            value = params.get(key, "auto")
            if value != "auto" and not isinstance(value, (bool, int)):
                raise ModelError(f"{key} must be 'auto', a bool or a Fourier order")

    def _fit(self, history: pd.DataFrame) -> dict[str, Any]:
        prophet = _quiet_prophet()
        from prophet.serialize import model_to_json

        ts = history["ts"].to_numpy()
        kwargs = prophet_kwargs(dict(self.spec.params), step_ms_of(ts), int(ts[-1] - ts[0]))
        m = prophet.Prophet(**kwargs)
        m.fit(pd.DataFrame({"ds": to_ds(ts), "y": history["y"].to_numpy()}))
        state = {"prophet": json.loads(model_to_json(m)), "seed": int(self.spec.params.get("seed") or 0)}
        self._cache, self._params = None, None
        return state

    def _samples(self) -> int:
        return int(self.spec.params.get("uncertainty_samples", DEFAULT_SAMPLES))

    def _compact(self, state: dict[str, Any]) -> ProphetParams | None:
        """The parameter block ``predict`` runs on (None: prophet's own predict is needed)."""
        if self._params is None or self._params[0] is not state:
            raw = state.get("compact")
            if raw is None and isinstance(state.get("prophet"), dict):
                raw = compact_params(state["prophet"])
            self._params = (state, None if raw is None else ProphetParams.model_validate(raw))
        return self._params[1] if self._samples() == 0 else None

    def serving_state(self) -> dict[str, Any] | None:
        """The compact state a cycle loads instead of the ~1.4 MB artifact (``serving.py``)."""
        params = self._compact(self.state_) if self.state_ is not None else None
        if params is None or self.state_ is None:
            return None
        return {"compact": params.model_dump(), "seed": int(self.state_.get("seed", 0))}

    def _fitted(self, state: dict[str, Any]) -> Any:
        if self._cache is None or self._cache[0] is not state:
            if not isinstance(state.get("prophet"), dict):
                raise ModelError("this prophet model was loaded for serving only (no full prophet state)")
            _quiet_prophet()
            from prophet.serialize import model_from_json

            with PANDAS_LOCK:  # read_json + warnings.catch_warnings: not thread-safe (cycle.py)
                m = model_from_json(json.dumps(state["prophet"]))
            # the spec decides, not the artifact: champions fitted when 200 was the default stop
            # sampling a band nobody serves any more
            m.uncertainty_samples = self._samples()
            self._cache = (state, m)
        return self._cache[1]

    def _prophet_yhat_band(self, state: dict[str, Any], stamps: np.ndarray) -> np.ndarray:
        """``(n, 3)`` yhat, lower, upper at ``stamps``: the compact form when it applies, else prophet."""
        params = self._compact(state)
        if params is not None:
            yhat = predict_yhat(params, stamps)
            half = z_score(params.interval_width) * params.sigma_obs * params.y_scale
            return np.column_stack([yhat, yhat - half, yhat + half])
        m = self._fitted(state)
        order = np.argsort(stamps, kind="stable")  # prophet sorts its input: map rows back
        with _RNG_LOCK, PANDAS_LOCK:
            saved = np.random.get_state()
            np.random.seed(int(state.get("seed", 0)))
            try:
                raw = m.predict(pd.DataFrame({"ds": to_ds(stamps[order])}))
            finally:
                np.random.set_state(saved)
        out = np.empty((len(stamps), 3))
        out[order] = _with_band(raw, m).to_numpy()
        return out

    def _predict_arrays(self, state: dict[str, Any], target_ts: np.ndarray,
                        recent: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        anchor = None if recent is None else (int(recent[0][-1]), float(recent[1][-1]))
        stamps = target_ts if anchor is None else np.append(target_ts, anchor[0])
        out = self._prophet_yhat_band(state, stamps)
        if anchor is not None:
            # Level correction: the fit may be days older than the latest candle (weekly
            # retrain); shift trend+seasonality so the path starts from the latest close.
            out = out[:-1] + (anchor[1] - out[-1, 0])
        return out

    def predict_many(self, requests: Any) -> list[pd.DataFrame]:
        """One predict over every stamp of every request, then each request's level correction:
        identical to one ``predict`` per request when no band is sampled."""
        if self.state_ is None or self._samples():
            return super().predict_many(requests)
        checked = [(check_targets(t), check_history(r, min_rows=1) if r is not None and len(r) else None) for t, r in requests]
        stamps = np.unique(np.concatenate([np.append(t, [] if r is None else [int(r["ts"].iloc[-1])]) for t, r in checked]).astype("int64"))
        table = pd.DataFrame(self._prophet_yhat_band(self.state_, stamps), index=stamps, columns=["yhat", "yhat_lower", "yhat_upper"])
        out = []
        for targets, recent in checked:
            rows = table.loc[targets].to_numpy()
            if recent is not None:
                rows = rows + (float(recent["y"].iloc[-1]) - float(table.loc[int(recent["ts"].iloc[-1]), "yhat"]))
            frame = pd.DataFrame({"ts": targets, "yhat": rows[:, 0], "yhat_lower": rows[:, 1], "yhat_upper": rows[:, 2]})
            out.append(check_prediction(frame, targets))
        return out

    def _validate_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """A full state (``prophet``: the artifact) or a serving one (``compact`` only).

        The block predict runs on is checked now, so a broken artifact fails at load, not at
        predict; prophet's own model is rebuilt now only when predict will need it.
        """
        full, compact = state.get("prophet"), state.get("compact")
        if not isinstance(state.get("seed", 0), int) or not (isinstance(full, dict) or isinstance(compact, dict)):
            raise ModelError("invalid prophet state")
        self._cache, self._params = None, None
        try:
            params = self._compact(state)
        except (ValidationError, KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"invalid prophet parameters: {str(exc).splitlines()[0]}") from exc
        if params is None:
            self._fitted(state)
        return state
