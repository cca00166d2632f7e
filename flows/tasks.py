"""Prefect tasks: one-line wrappers over coin_core, plus the retry and cache policies.

Retries are only on I/O tasks and only for errors that retrying can fix (transient exchange
errors, an unreachable store); delays are whole seconds (Prefect 2.20 crashes on sub-second
delays with jitter). CPU tasks (fit, forecast) never retry: the same input fails the same way.

Cached tasks take an explicit ``cache_key`` parameter that is both their Prefect cache key and
their result file name. Prefect 2.20 fails a run whose cached result file was deleted instead of
recomputing it; :func:`cached` therefore asks for a cache refresh when the file is gone, so the
task recomputes and writes it again (Prefect 3 recomputes on its own; this stays harmless).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from prefect import task
from prefect.context import TaskRunContext
from prefect.settings import PREFECT_LOCAL_STORAGE_PATH
from prefect.tasks import Task

from coin_core.config import Settings
from coin_core.errors import StorageUnavailableError, TransientExchangeError
from coin_core.exchange import ExchangeClient
from coin_core.forecast.base import ModelSpec
from coin_core.forecast.events import Actor, ModelEvent
from coin_core.forecast.registry import rollback
from coin_core.forecast.training import TrainResult, fit_keys
from coin_core.lifecycle import GateOutcome, ScoreBook, run_gate
from coin_core.lifecycle.triggers import TriggerCheck, check_triggers
from coin_core.pipeline import run_forecast, train_candidates
from coin_core.cycle import SeriesRun, UnitDone, run_series
from coin_core.publish import PublishReport, publish_site
from coin_core.publish.early import EarlyPublish
from coin_core.storage import CandleStore
from coin_core.workers import Workers

__all__ = [
    "RETRYABLE", "MARKETS_TTL", "retry_transient", "by_cache_key", "result_exists", "cached",
    "markets_cache_key", "exchange_markets", "units_task", "forecast_task", "publish_task",
    "fit_keys_task", "train_task", "gate_task", "triggers_task", "rollback_task",
]

RETRYABLE: tuple[type[BaseException], ...] = (TransientExchangeError, StorageUnavailableError)
#: Exchange market lists change rarely (a listing, a delisting): one load an hour is plenty.
MARKETS_TTL = timedelta(hours=1)
# The exchange client already retried with exponential backoff inside one attempt; these are
# for an outage that outlasts it. The next scheduled cycle catches up whatever is still missed.
IO_RETRIES = 2
IO_RETRY_DELAYS = [1, 30]

F = TypeVar("F", bound=Task)


def retry_transient(task: Task, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only what retrying can fix."""
    return isinstance(state.result(raise_on_failure=False), RETRYABLE)


def by_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """Prefect ``cache_key_fn``: the task's explicit ``cache_key`` parameter (None = no cache)."""
    return parameters.get("cache_key")


def result_exists(cache_key: str) -> bool:
    """Is the persisted result of ``cache_key`` still in the local result storage?"""
    return (Path(PREFECT_LOCAL_STORAGE_PATH.value()).expanduser() / cache_key).is_file()


def cached(fn: F, cache_key: str | None, refresh: bool = False) -> F:
    """``fn``, told to recompute (refresh its cache) when the result file of the key is gone
    or when the caller knows the cached result no longer holds (``refresh``)."""
    # with_options() drops task_run_name unless it is given again (Prefect 2.20).
    if cache_key is None:
        return fn.with_options(persist_result=False, result_storage_key=None,  # type: ignore[return-value]
                               task_run_name=fn.task_run_name)
    return fn.with_options(refresh_cache=refresh or not result_exists(cache_key),  # type: ignore[return-value]
                           task_run_name=fn.task_run_name)


_KEYED: dict[str, Any] = dict(
    cache_key_fn=by_cache_key, result_storage_key="{parameters[cache_key]}", persist_result=True
)


def markets_cache_key(settings: Settings) -> str:
    """One market snapshot per exchange endpoint and symbol set (the simulated one differs)."""
    ident = f"{settings.exchange_api_url or 'default'}|{','.join(settings.target_symbols)}"
    return f"markets-{settings.exchange_id}-{hashlib.sha256(ident.encode()).hexdigest()[:12]}"


@task(name="exchange-markets", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_condition_fn=retry_transient, cache_expiration=MARKETS_TTL, **_KEYED)
def exchange_markets(settings: Settings, cache_key: str) -> dict[str, dict[str, Any]]:
    with ExchangeClient(settings) as client:
        return client.market_snapshot(settings.target_symbols)


# One task for every series' unit (not one task run per series): orchestrating a task run costs
# Prefect tens of milliseconds of API calls, more than a series' whole unit of work. Per-series
# failures are rows of the result (the exchange client already retried with backoff); the next
# cycle catches up, so the step itself has no retries.
@task(name="series-units", task_run_name="{step} {n_series} series")
def units_task(store: CandleStore, settings: Settings, markets: dict[str, dict[str, Any]], step: str,
               n_series: int, workers: Workers | None = None, on_unit: UnitDone | None = None) -> SeriesRun:
    return run_series(store, settings, markets=markets, forecast=step == "cycle", score=step == "cycle",
                      workers=workers, on_unit=on_unit)


# Opens its own store: it may run in a Dask worker process (a store's connections do not travel).
@task(name="forecast-series", task_run_name="forecast {symbol} {tf}")
def forecast_task(settings: Settings, symbol: str, tf: str, now_ms: int) -> str:
    return run_forecast(settings, now_ms=now_ms, symbols=[symbol], timeframes=[tf])[f"{symbol} {tf}"]


@task(name="publish-site", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_condition_fn=retry_transient)
def publish_task(store: CandleStore, settings: Settings, now_ms: int, workers: Workers | None = None,
                 early: EarlyPublish | None = None) -> PublishReport:
    return publish_site(store, settings, now_ms=now_ms, workers=workers, early=early)


@task(name="fit-cache-keys", retries=IO_RETRIES, retry_delay_seconds=IO_RETRY_DELAYS,
      retry_condition_fn=retry_transient, task_run_name="fit keys {n_series} series")
def fit_keys_task(store: CandleStore, series: list[tuple[str, str, int | None, list[ModelSpec]]],
                  n_series: int) -> list[list[str] | None]:
    """Per series, each candidate's fit identity (series, training data range, spec); None: no data."""
    return [fit_keys(store, symbol, tf, lookback, specs) for symbol, tf, lookback, specs in series]


# One task per series, not per candidate: a task run costs Prefect ~0.3 s of API calls and
# result handling, more than a baseline's whole fit, and on Dask it competes with the fits.
@task(name="train-series", task_run_name="train {symbol} {tf}", **_KEYED)
def train_task(settings: Settings, symbol: str, tf: str, lookback: int | None, specs: list[ModelSpec], actor: Actor,
               cache_key: str | None) -> list[TrainResult | str]:
    return train_candidates(settings, symbol, tf, lookback, specs, actor)


@task(name="gate-series", task_run_name="gate {symbol} {tf}")
def gate_task(store: CandleStore, settings: Settings, book: ScoreBook, symbol: str, tf: str, actor: Actor,
              now_ms: int) -> GateOutcome:
    return run_gate(store, settings, symbol, tf, actor=actor, now_ms=now_ms, book=book)


@task(name="retrain-triggers", task_run_name="triggers {symbol} {tf}")
def triggers_task(store: CandleStore, settings: Settings, book: ScoreBook, symbol: str, tf: str, now_ms: int) -> TriggerCheck:
    return check_triggers(store, settings, book, symbol, tf, now_ms=now_ms)


@task(name="rollback-series", task_run_name="rollback {symbol} {tf}")
def rollback_task(settings: Settings, symbol: str, tf: str, actor: Actor, reason: str) -> ModelEvent:
    return rollback(settings, symbol, tf, actor=actor, reason=reason)
