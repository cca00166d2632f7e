"""The train flow: refit the champion spec of every series, never two train runs at once.

* One at a time: the whole run holds a slot of the global concurrency limit ``train`` (limit 1).
  The run first makes sure the limit exists and is ACTIVE (Prefect 2.20 would otherwise
  auto-create it inactive, limiting nothing) and frees a slot leaked by a dead run.
* No refit of what is already fitted: the fit task is cached under ``fit_cache_key`` (series,
  training data range, model spec), so a retried or re-triggered run reuses the result; a
  deleted result file means a refit, not a failed run (see ``flows.tasks.cached``).
* Chunked extraction (bounded memory) happens inside ``coin_core.forecast.training``.
* Fits fan out where ``flows.runners.task_runner`` says: in-process one at a time by default,
  or over Dask (``DASK_WORKERS`` / ``DASK_ADDRESS``) through a subflow ``fit-series`` that
  carries the chosen task runner. Each fit task opens its own store (it may run in another
  process); keys are computed in the flow, cheaply, before anything is submitted.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, runtime, task
from prefect.concurrency.sync import concurrency

from coin_core.config import Settings
from coin_core.forecast.specs import default_lookback
from coin_core.forecast.training import champion_fit_key
from coin_core.pipeline import NO_CANDLES
from coin_core.storage import CandleStore, open_store

from flows.artifacts import artifact_key, publish_table, train_row
from flows.common import fail_if_any, flow_settings, recorded_run, state_error
from flows.setup import TRAIN_LIMIT, ensure_concurrency_limits, release_stale_slots
from flows.runners import describe_runner, task_runner
from flows.tasks import cached, fit_key_task, train_task

__all__ = ["TRAIN_WAIT_S", "prepare_train_limit", "fit_series_flow", "train_flow"]

#: How long a train run waits for the one running before it gives up (and fails, saying so).
TRAIN_WAIT_S = 4 * 3600


@task(name="prepare-train-limit", retries=2, retry_delay_seconds=[1, 10])
def prepare_train_limit(current_run: str | None) -> bool:
    ensure_concurrency_limits()
    return release_stale_slots(TRAIN_LIMIT, "train", current_run)


def _key(store: CandleStore, settings: Settings, symbol: str, tf: str, lookback: int) -> tuple[str | None, bool, str | None]:
    """(fit key, refresh the cached fit?, error) of a series."""
    key_state = fit_key_task(store, symbol, tf, lookback, return_state=True)
    error = state_error(key_state)
    if error is not None:
        return None, False, error
    key = key_state.result()
    if key is None:  # nothing stored: a run asked for it must not end Completed with 0 models
        return None, False, f"{symbol} {tf}: {NO_CANDLES}"
    # Reuse a cached fit only while it is still the serving champion (not rolled back/corrupt).
    return key, champion_fit_key(settings, symbol, tf) != key, None


@flow(name="fit-series")
def fit_series_flow(symbols: list[str] | None = None, timeframes: list[str] | None = None,
                    lookback: int | None = None) -> list[dict[str, object]]:
    """Key every series, submit its (cached) fit to this flow's task runner, one row each."""
    settings = flow_settings(symbols, timeframes)
    pending: list[tuple[str, str, Any, str | None]] = []
    with open_store(settings) as store:
        for symbol, tf in settings.series(predicted_only=True):
            window = lookback if lookback is not None else default_lookback(tf)
            key, stale, error = _key(store, settings, symbol, tf, window)
            future = None if error else cached(train_task, key, refresh=stale).submit(settings, symbol, tf, window, cache_key=key)
            pending.append((symbol, tf, future, error))
    rows = []
    for symbol, tf, future, error in pending:
        state = future.wait() if future is not None else None
        error = error or (state_error(state) if state is not None else None)
        rows.append(train_row(symbol, tf, None if error else state.result(), state is not None and state.name == "Cached", error))
    return rows


@flow(name="train")
def train_flow(symbols: list[str] | None = None, timeframes: list[str] | None = None,
               lookback: int | None = None) -> list[dict[str, object]]:
    """Fit the champion model of every predicted series, one train run at a time.

    Args:
        symbols: Symbols to train, a subset of TARGET_SYMBOLS such as ["BTC/USDT"] (unset: all
            configured). A symbol that is not configured, or has no stored candle, fails the run.
        timeframes: Timeframes to train, a subset of INGEST_TIMEFRAMES among 1h, 1d, 1w, 1M
            (1m is never predicted; unset: all configured).
        lookback: Train on the latest N candles, N at least the timeframe's min samples (168 for
            1h) and at most 5,000,000 (unset: the timeframe's training window, a year of 1h).
    """
    settings = flow_settings(symbols, timeframes)
    settings.predicted_series()  # impossible parameters fail the run before any task
    lookback = settings.check_lookback(lookback)
    with recorded_run(settings, "train"):
        return _train(settings, symbols, timeframes, lookback)


def _train(settings: Settings, symbols: list[str] | None, timeframes: list[str] | None,
           lookback: int | None) -> list[dict[str, object]]:
    run_id = runtime.flow_run.id
    prepare_train_limit(str(run_id) if run_id else None)
    get_run_logger().info("fits run %s", describe_runner(settings))
    with concurrency(TRAIN_LIMIT, occupy=1, timeout_seconds=TRAIN_WAIT_S):
        rows = fit_series_flow.with_options(task_runner=task_runner(settings))(symbols, timeframes, lookback)
    publish_table(artifact_key("train", "summary"), rows,
                  f"Train: {len(rows)} series, {sum(1 for r in rows if r['status'] == 'trained')} fitted, "
                  f"{sum(1 for r in rows if r['cached'])} reused from cache.")
    get_run_logger().info("train run done: %s", [f"{r['series']}={r['status']}" for r in rows])
    fail_if_any("series", {str(r["series"]): str(r["error"]) for r in rows if r["status"] == "failed"})
    return rows
