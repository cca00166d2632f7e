"""Issue the forecast of one series from its champion, never letting one failure stop a cycle.

* Targets are the next ``horizon`` candle open times after the latest *stored closed* candle
  (``timeframes.add(latest, tf, k)``), never "now".
* No champion yet: one is fitted on the fly with the timeframe's shared spec (and the default
  training lookback) and registered, so a fresh install serves forecasts on its first cycle.
* A champion fitted before the latest candle still forecasts the new targets: the model is given
  the recent tail (``recent=``); naive/drift re-anchor on the latest close, Prophet's fitted
  trend is evaluated at the target times.
* Bands: every served band is the calibrated 80 % / 50 % band of ``bands.py`` (the model's own
  realised errors, volatility-normalised), never the model's own interval.
* Any failure (unloadable artifact, fit error, non-finite output, store write) keeps the last
  good forecast untouched and records ``degraded`` with a short error; the call returns.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from ..config import Settings
from ..errors import ModelError, StorageError
from ..health import PredictionHealth, read_prediction_health, write_prediction_health
from ..storage.base import CandleStore, Forecast
from ..symbols import parse_symbol
from ..timeframes import Timeframe, add, parse_timeframe
from . import registry
from .bands import VOL_ROWS, serve_bands
from .base import Model, ModelMetadata, ModelSpec
from .specs import default_lookback
from .training import require_trained, train_series

__all__ = ["RECENT_ROWS", "PredictOutcome", "forecast_series", "target_times", "short_error"]

log = logging.getLogger(__name__)

RECENT_ROWS = 8
PredictStatus = Literal["ok", "degraded", "insufficient_data", "not_predicted"]


@dataclass(frozen=True)
class PredictOutcome:
    symbol: str
    timeframe: Timeframe
    status: PredictStatus
    model_version: str | None = None
    input_last_ts: int | None = None
    targets: tuple[int, ...] = field(default_factory=tuple)
    trained_now: bool = False
    error: str | None = None


def target_times(latest_ts: int, tf: Timeframe, horizon: int) -> list[int]:
    """Open times of the ``horizon`` candles after ``latest_ts`` (calendar-exact for 1M)."""
    return [add(latest_ts, tf, k) for k in range(1, horizon + 1)]


def short_error(exc: BaseException, limit: int = 200) -> str:
    """One line for status files: the type and the first line of our (secret-free) message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line[:limit]


def _champion(
    store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, now_ms: int, spec: ModelSpec | None
) -> tuple[Model, ModelMetadata, bool]:
    found = registry.load_champion(settings, symbol, tf)
    if found is not None:
        return found[0], found[1], False
    require_trained(train_series(store, settings, symbol, tf, lookback=default_lookback(tf), spec=spec, now_ms=now_ms))
    found = registry.load_champion(settings, symbol, tf)
    if found is None:
        raise ModelError("training registered no champion")
    return found[0], found[1], True


def _health(settings: Settings, symbol: str, tf: Timeframe, health: PredictionHealth) -> None:
    write_prediction_health(settings.data_dir, symbol, tf, health)


def forecast_series(
    store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, *,
    now_ms: int | None = None, spec: ModelSpec | None = None,
) -> PredictOutcome:
    """Forecast one series and store it; returns what happened instead of raising.

    ``spec`` is only used when the series has no champion yet (default: the shared spec).
    """
    symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    policy = settings.policy(tf)
    if not policy.predicted or policy.horizon < 1:
        return PredictOutcome(symbol, tf, "not_predicted")
    before = read_prediction_health(settings.data_dir, symbol, tf)
    last_ok = before.last_success_at if before else None
    count = store.count(symbol, tf)
    if count < policy.min_samples or count < 2:
        msg = f"{count} candle(s) < minimum {policy.min_samples}"
        _health(settings, symbol, tf, PredictionHealth(status="insufficient_data", updated_at=now_ms, last_success_at=last_ok, last_error=msg))
        return PredictOutcome(symbol, tf, "insufficient_data", error=msg)
    version: str | None = None
    try:
        model, meta, trained = _champion(store, settings, symbol, tf, now_ms, spec)
        version = meta.model_version
        history = store.tail(symbol, tf, max(RECENT_ROWS, VOL_ROWS))[["ts", "close"]].rename(columns={"close": "y"})
        recent = history.tail(RECENT_ROWS).reset_index(drop=True)
        latest = int(recent["ts"].iloc[-1])
        targets = target_times(latest, tf, policy.horizon)
        points = serve_bands(settings, symbol, tf, model.name, model.predict(targets, recent=recent), history["y"].to_numpy())
        store.write_forecast(Forecast(symbol, tf, now_ms, version, latest, points))
    except Exception as exc:  # noqa: BLE001 - the cycle must go on for the other series
        error = short_error(exc)
        log.warning("prediction of %s %s degraded (last good kept): %s", symbol, tf, error)
        _health(settings, symbol, tf, PredictionHealth(
            status="degraded", updated_at=now_ms, last_success_at=last_ok, last_error=error, model_version=version))
        return PredictOutcome(symbol, tf, "degraded", version, error=error)
    _health(settings, symbol, tf, PredictionHealth(status="ok", updated_at=now_ms, last_success_at=now_ms, model_version=version))
    _prune(store, settings, symbol, tf, now_ms)
    return PredictOutcome(symbol, tf, "ok", version, latest, tuple(targets), trained)


def _prune(store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, now_ms: int) -> None:
    """Keep FORECAST_RETENTION_DAYS of forecast runs; a store that refuses only logs a warning."""
    try:
        store.prune_forecasts(symbol, tf, now_ms - settings.forecast_retention_days * 86_400_000)
    except StorageError as exc:
        log.warning("old forecasts of %s %s not pruned: %s", symbol, tf, exc)
