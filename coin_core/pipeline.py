"""Whole-product steps the CLI runs in one process (the Prefect flows wire the same functions)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Iterable

from pydantic import BaseModel

from .config import Settings
from .errors import DataValidationError, ModelError
from .ingest import IngestReport, Progress
from .storage import open_store

if TYPE_CHECKING:
    from .forecast.training import TrainResult
    from .publish import PublishReport

__all__ = ["CycleReport", "NO_CANDLES", "train_one", "run_train", "run_forecast", "run_publish", "run_cycle"]

log = logging.getLogger(__name__)

#: The result of a series with nothing stored: no model, no forecast and no status file for it.
NO_CANDLES = "no candles stored: run `coin-predict ingest` first"


class CycleReport(BaseModel):
    ingest: IngestReport
    forecasts: dict[str, str]
    published_files: int
    seconds: float
    units_seconds: float = 0.0
    requests: int = 0


def train_one(settings: Settings, symbol: str, tf: str, lookback: int | None) -> "TrainResult":
    """Fit one series with its own store connection (what a Dask worker process runs)."""
    from .forecast.training import train_series

    with open_store(settings) as store:
        return train_series(store, settings, symbol, tf, lookback=lookback)


def run_train(settings: Settings, *, symbols: Iterable[str] | None = None, timeframes: Iterable[str] | None = None,
              lookback: int | None = None) -> dict[str, str]:
    """Fit and register the champion spec for every series; returns series -> version or reason."""
    from .forecast.training import train_series

    settings = settings.narrowed(symbols, timeframes)
    lookback = settings.check_lookback(lookback)
    results: dict[str, str] = {}
    with open_store(settings) as store:
        for symbol, tf in settings.predicted_series():
            if store.count(symbol, tf) == 0:
                results[f"{symbol} {tf}"] = NO_CANDLES
                continue
            try:
                result = train_series(store, settings, symbol, tf, lookback=lookback)
            except (ModelError, DataValidationError) as exc:  # one series' failure never stops the others
                results[f"{symbol} {tf}"] = f"failed: {exc}"
                continue
            results[f"{symbol} {tf}"] = f"{result.status} {result.model_version or ''}".strip()
    return results


def run_forecast(settings: Settings, *, now_ms: int, symbols: Iterable[str] | None = None,
                 timeframes: Iterable[str] | None = None) -> dict[str, str]:
    """Forecast every predicted series from its latest closed candle; returns series -> status.

    A series with no stored candle is reported as :data:`NO_CANDLES` and leaves no status record.
    """
    from .forecast.predict import forecast_series

    results: dict[str, str] = {}
    with open_store(settings) as store:
        for symbol, tf in settings.narrowed(symbols, timeframes).series(predicted_only=True):
            if store.count(symbol, tf) == 0:
                results[f"{symbol} {tf}"] = NO_CANDLES
                continue
            outcome = forecast_series(store, settings, symbol, tf, now_ms=now_ms)
            results[f"{symbol} {tf}"] = outcome.status + (f" ({outcome.error})" if outcome.error else "")
    return results


def run_publish(settings: Settings, *, now_ms: int) -> "PublishReport":
    from .publish import publish_site

    with open_store(settings) as store:
        return publish_site(store, settings, now_ms=now_ms)


def run_cycle(settings: Settings, *, symbols: Iterable[str] | None = None, timeframes: Iterable[str] | None = None,
              now_ms: int | None = None, progress: Progress | None = None) -> CycleReport:
    """The per-series unit (ingest -> gate -> forecast) for every series, then publish: the
    same chain as the Prefect ``cycle`` flow. Publish covers every configured series."""
    from .cycle import run_series

    began = time.monotonic()
    chosen = settings.narrowed(symbols, timeframes)  # a bad selection fails before anything is fetched
    with open_store(settings) as store:
        run = run_series(store, chosen, now_ms=now_ms, progress=progress)
        from .publish import publish_site

        report = publish_site(store, settings, now_ms=run.now_ms)
    forecasts = {name: out.status + (f" ({out.error})" if out.error else "") for name, out in run.forecasts.items()}
    return CycleReport(ingest=run.ingest, forecasts=forecasts, published_files=len(report.written),
                       seconds=time.monotonic() - began, units_seconds=run.seconds, requests=run.requests)
