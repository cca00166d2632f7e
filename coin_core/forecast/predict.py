"""Issue the forecast of one series from its champion and its shadows, never letting one failure
stop a cycle.

* Targets are the next ``horizon`` candle open times after the latest *stored closed* candle
  (``timeframes.add(latest, tf, k)``), never "now".
* Shadow inference: every registered challenger and both baselines forecast the same targets from
  the same snapshot; they are stored with their role and never served. A shadow's failure is
  logged and counted, never a degraded series.
* No champion yet: the baselines (naive, drift: instant fits) are registered and naive serves
  through the promotion gate's bootstrap rule, so a fresh install serves on its first cycle
  without fitting anything expensive; a candidate replaces it once the gate passes one.
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

import numpy as np

from ..config import Settings
from ..errors import CoinPredictError, DataValidationError, LockError, ModelError, StorageError
from ..health import PredictionHealth, read_prediction_health, write_prediction_health
from ..storage import kept_store
from ..storage.base import CandleStore, Forecast
from ..symbols import parse_symbol
from ..timeframes import Timeframe, add, parse_timeframe
from . import registry
from .bands import VOL_ROWS, serve_bands
from .base import Model, ModelSpec
from .decision import bootstrap_decision
from .events import Actor
from .registry import RegisteredModel
from .specs import default_lookback
from .training import require_trained, train_series

__all__ = ["RECENT_ROWS", "PredictOutcome", "forecast_series", "target_times", "short_error", "ensure_champion",
           "needs_forecast", "forecast_one", "forecast_apart"]

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
    shadows: int = 0
    shadow_errors: tuple[str, ...] = ()


def target_times(latest_ts: int, tf: Timeframe, horizon: int) -> list[int]:
    """Open times of the ``horizon`` candles after ``latest_ts`` (calendar-exact for 1M)."""
    return [add(latest_ts, tf, k) for k in range(1, horizon + 1)]


def short_error(exc: BaseException, limit: int = 200) -> str:
    """One line for status files: the type and the first line of our (secret-free) message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    line = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return line[:limit]


def ensure_champion(store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, now_ms: int, *,
                    heal: bool = False, actor: Actor = "schedule") -> bool:
    """Bootstrap a series that has no champion: register the baselines, naive serves. True if done here.

    First finishes any champion change a killed run left half-done (``registry.settle``).
    ``heal`` (the train flow) also replaces a champion whose artifact cannot be read; a cycle
    instead keeps the last good forecast and reports ``degraded``.
    """
    try:
        registry.settle(settings, symbol, tf)
    except DataValidationError as exc:  # a damaged event log blocks model changes, not serving
        log.error("%s %s: %s", symbol, tf, exc)
    found = registry.registered(settings, symbol, tf, intact=heal)
    champion = next((m for m in found if m.role == "champion"), None)
    if champion is not None:
        return False
    broken = registry.read_pointer(settings, symbol, tf)
    present = {m.metadata.spec.name for m in found if m.role == "baseline"}
    for name in registry.BASELINES:
        if name not in present:
            require_trained(train_series(store, settings, symbol, tf, lookback=default_lookback(tf),
                                         spec=ModelSpec(name=name), now_ms=now_ms, actor=actor))
    naive = next(m for m in registry.registered(settings, symbol, tf, intact=heal)
                 if m.role == "baseline" and m.metadata.spec.name == "naive")
    decision = bootstrap_decision(naive, now_ms, replacing=broken.version if broken else None)
    try:
        registry.promote(settings, decision, actor=actor, now_ms=now_ms)
    except LockError:
        log.info("%s %s: a concurrent run bootstrapped the champion", symbol, tf)
    return True


def _models(settings: Settings, symbol: str, tf: Timeframe) -> list[tuple[RegisteredModel, Model | None, str | None]]:
    """Every registered model, champion first, loaded (or with the reason it cannot be)."""
    loaded: list[tuple[RegisteredModel, Model | None, str | None]] = []
    for entry in registry.registered(settings, symbol, tf):
        try:
            loaded.append((entry, registry.load_serving(settings, symbol, tf, entry.version), None))
        except ModelError as exc:
            loaded.append((entry, None, short_error(exc)))
    return loaded


def _health(settings: Settings, symbol: str, tf: Timeframe, health: PredictionHealth) -> None:
    write_prediction_health(settings.data_dir, symbol, tf, health)


def forecast_series(
    store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, *,
    now_ms: int | None = None,
) -> PredictOutcome:
    """Forecast one series with its champion and shadows and store them; never raises."""
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
        trained = ensure_champion(store, settings, symbol, tf, now_ms)
        models = _models(settings, symbol, tf)
        champion, model, problem = models[0]
        version = champion.version
        if model is None or champion.role != "champion":
            raise ModelError(problem or "no champion registered")
        history = store.tail(symbol, tf, max(RECENT_ROWS, VOL_ROWS))
        stamps, closes = history["ts"].to_numpy(dtype="int64"), history["close"].to_numpy(dtype="float64")
        recent = (stamps[-RECENT_ROWS:], closes[-RECENT_ROWS:])
        latest = int(stamps[-1])
        targets = np.asarray(target_times(latest, tf, policy.horizon), dtype="int64")
        points = _banded(settings, symbol, tf, model, targets, recent, closes)
        store.write_forecast(Forecast(symbol, tf, now_ms, version, latest, points, "champion", champion.metadata.spec.name))
    except Exception as exc:  # noqa: BLE001 - the cycle must go on for the other series
        error = short_error(exc)
        log.warning("prediction of %s %s degraded (last good kept): %s", symbol, tf, error)
        _health(settings, symbol, tf, PredictionHealth(
            status="degraded", updated_at=now_ms, last_success_at=last_ok, last_error=error, model_version=version))
        return PredictOutcome(symbol, tf, "degraded", version, error=error)
    _health(settings, symbol, tf, PredictionHealth(status="ok", updated_at=now_ms, last_success_at=now_ms, model_version=version))
    errors = _shadows(store, settings, symbol, tf, models[1:], (now_ms, latest, targets, recent, closes))
    _prune(store, settings, symbol, tf, now_ms)
    return PredictOutcome(symbol, tf, "ok", version, latest, tuple(int(t) for t in targets), trained, None,
                          len(models) - 1 - len(errors), tuple(errors))


def _banded(settings: Settings, symbol: str, tf: Timeframe, model: Model, targets: np.ndarray,
            recent: tuple[np.ndarray, np.ndarray], closes: np.ndarray) -> dict[str, np.ndarray]:
    """The model's checked point forecast with the calibrated bands of ``bands.py``."""
    values = model.predict_points(targets, *recent)
    return serve_bands(settings, symbol, tf, model.name, targets, values[:, 0], closes)


def _shadows(store: CandleStore, settings: Settings, symbol: str, tf: Timeframe,
             models: list[tuple[RegisteredModel, Model | None, str | None]], snapshot: tuple) -> list[str]:
    """Forecast with every shadow from the champion's snapshot (same targets, same closes, bands
    from the same layer); failures are returned, not raised."""
    now_ms, latest, targets, recent, closes = snapshot
    errors: list[str] = []
    for entry, model, problem in models:
        try:
            if model is None:
                raise ModelError(problem or "unloadable")
            points = _banded(settings, symbol, tf, model, targets, recent, closes)
            store.write_forecast(Forecast(symbol, tf, now_ms, entry.version, latest, points, entry.role,
                                          entry.metadata.spec.name))
        except Exception as exc:  # noqa: BLE001 - a shadow never degrades the served forecast
            errors.append(f"{entry.version}: {short_error(exc)}")
            log.warning("shadow %s of %s %s failed: %s", entry.version, symbol, tf, errors[-1])
    return errors


def _prune(store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, now_ms: int) -> None:
    """Keep FORECAST_RETENTION_DAYS of forecast runs; a store that refuses only logs a warning."""
    try:
        store.prune_forecasts(symbol, tf, now_ms - settings.forecast_retention_days * 86_400_000)
    except StorageError as exc:
        log.warning("old forecasts of %s %s not pruned: %s", symbol, tf, exc)


def needs_forecast(store: CandleStore, symbol: str, tf: Timeframe) -> bool:
    """Causal gate: forecast only when the stored input moved past the last issued forecast."""
    latest = store.latest_ts(symbol, tf)
    issued = store.latest_input_ts(symbol, tf)
    return latest is not None and (issued is None or issued < latest)


def forecast_one(store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, now_ms: int) -> PredictOutcome | None:
    """Forecast a predicted series whose input moved; None when the gate skips it.

    Forecasts run on a cycle's series threads side by side, with no lock: their serving path builds
    no prophet model and calls no ``pandas.read_json``, whose ``catch_warnings(record=True)`` is
    not thread-safe (two at once left a warning recorder installed that re-recorded every
    warning; a soak's RSS grew from 190 MiB to 4 GiB). Prophet's own load and predict, kept for
    what the compact form cannot express (a sampled band), take ``prophet_model.PANDAS_LOCK``.
    """
    if not settings.policy(tf).predicted:
        return None
    try:
        if not needs_forecast(store, symbol, tf):
            return None
    except CoinPredictError as exc:  # the store is unreachable: report it, do not abort the others
        return PredictOutcome(symbol, tf, "degraded", error=short_error(exc))
    return forecast_series(store, settings, symbol, tf, now_ms=now_ms)


def forecast_apart(settings: Settings, symbol: str, tf: Timeframe, now_ms: int) -> PredictOutcome | None:
    """:func:`forecast_one` on a store connection of its own (what a worker process runs)."""
    try:
        with kept_store(settings) as store:
            return forecast_one(store, settings, symbol, tf, now_ms)
    except CoinPredictError as exc:  # as forecast_one reports an unreachable store
        return PredictOutcome(symbol, tf, "degraded", error=short_error(exc))
