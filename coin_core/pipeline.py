"""Whole-product steps the CLI runs in one process (the Prefect flows wire the same functions)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Iterable

from pydantic import BaseModel

from .config import Settings
from .errors import DataValidationError, ModelError
from .ingest import IngestReport, Progress, run_ingest
from .storage import open_store

if TYPE_CHECKING:
    from .publish import PublishReport

__all__ = ["CycleReport", "NO_CANDLES", "run_train", "run_forecast", "run_publish", "run_cycle"]

log = logging.getLogger(__name__)

#: The result of a series with nothing stored: no model, no forecast and no status file for it.
NO_CANDLES = "no candles stored: run `coin-predict ingest` first"


class CycleReport(BaseModel):
    ingest: IngestReport
    forecasts: dict[str, str]
    published_files: int
    seconds: float


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
    """ingest -> forecast (of ``symbols``/``timeframes``) -> publish (every configured series)."""
    began = time.monotonic()
    settings.narrowed(symbols, timeframes)  # a bad selection fails before anything is fetched
    ingest = run_ingest(settings, symbols=symbols, timeframes=timeframes, now_ms=now_ms, progress=progress)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    forecasts = run_forecast(settings, now_ms=now, symbols=symbols, timeframes=timeframes)
    report = run_publish(settings, now_ms=now)
    return CycleReport(ingest=ingest, forecasts=forecasts, published_files=len(report.written), seconds=time.monotonic() - began)
