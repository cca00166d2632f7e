"""The train flow: train -> evaluate -> gate -> promote -> publish, never two train runs at once.

* One at a time: the whole run holds a slot of the global concurrency limit ``train`` (limit 1).
  The run first makes sure the limit exists and is ACTIVE (Prefect 2.20 would otherwise
  auto-create it inactive, limiting nothing) and frees a slot leaked by a dead run.
* Every candidate of a series (both baselines, the shared spec, the challengers) is fitted and
  registered as a shadow; nothing serves until the gate passes it (``coin_core.lifecycle``).
* No refit of what is already fitted: each fit task is cached under ``fit_cache_key`` (series,
  training data range, model spec), reused only while that fit is still registered in some role;
  a deleted result file means a refit, not a failed run (see ``flows.tasks.cached``).
* Fits fan out where ``flows.runners.task_runner`` says: in-process one at a time by default,
  or over Dask (``DASK_WORKERS`` / ``DASK_ADDRESS``) through a subflow ``fit-series`` that
  carries the chosen task runner. Each fit task opens its own store (it may run in another
  process); keys are computed in the flow, cheaply, before anything is submitted.
* However the run started (schedule, UI, a retrain trigger), it ends evaluated, gated and
  published. ``triggered_only`` (the ``retrain-on-trigger`` deployment) retrains only the series
  whose triggers fired (age, new candles, ADWIN drift on band misses, no candidate).
"""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, runtime, task
from prefect.concurrency.sync import concurrency

from coin_core.config import Settings
from coin_core.forecast.base import ModelSpec
from coin_core.forecast.events import Actor
from coin_core.forecast.specs import default_lookback
from coin_core.forecast.training import registered_fit_keys
from coin_core.lifecycle import ScoreBook, open_scorebook
from coin_core.lifecycle.retrain import training_specs
from coin_core.pipeline import NO_CANDLES, without_candles
from coin_core.storage import CandleStore, open_store

from flows.artifacts import artifact_key, gate_columns, publish_table, train_row
from flows.common import SeriesFailed, fail_if_any, flow_actor, flow_settings, recorded_run, state_error
from flows.runners import describe_runner, task_runner
from flows.setup import TRAIN_LIMIT, ensure_concurrency_limits, release_stale_slots
from flows.tasks import cached, fit_key_task, gate_task, publish_task, train_task, triggers_task

__all__ = ["TRAIN_WAIT_S", "prepare_train_limit", "fit_series_flow", "gate_one", "select_series", "train_flow"]

#: How long a train run waits for the one running before it gives up (and fails, saying so).
TRAIN_WAIT_S = 4 * 3600

Job = tuple[str, str, ModelSpec]


@task(name="prepare-train-limit", retries=2, retry_delay_seconds=[1, 10])
def prepare_train_limit(current_run: str | None) -> bool:
    ensure_concurrency_limits()
    return release_stale_slots(TRAIN_LIMIT, "train", current_run)


def _key(store: CandleStore, settings: Settings, job: Job, lookback: int) -> tuple[str | None, bool, str | None]:
    """(fit key, refresh the cached fit?, error) of one candidate of a series."""
    symbol, tf, spec = job
    key_state = fit_key_task(store, symbol, tf, lookback, spec, return_state=True)
    error = state_error(key_state)
    if error is not None:
        return None, False, error
    key = key_state.result()
    if key is None:  # nothing stored: a run asked for it must not end Completed with 0 models
        return None, False, f"{symbol} {tf}: {NO_CANDLES}"
    # Reuse a cached fit only while that model is still registered (not pruned, not corrupt).
    return key, key not in registered_fit_keys(settings, symbol, tf), None


@flow(name="fit-series")
def fit_series_flow(jobs: list[Job], lookback: int | None, actor: Actor,
                    symbols: list[str] | None = None, timeframes: list[str] | None = None) -> list[dict[str, object]]:
    """Key every candidate, submit its (cached) fit to this flow's task runner, one row each."""
    settings = flow_settings(symbols, timeframes)
    pending: list[tuple[Job, Any, str | None]] = []
    with open_store(settings) as store:
        for job in jobs:
            symbol, tf, spec = job
            window = lookback if lookback is not None else default_lookback(tf)
            key, stale, error = _key(store, settings, job, window)
            future = None if error else cached(train_task, key, refresh=stale).submit(
                settings, symbol, tf, window, spec, actor, cache_key=key)
            pending.append((job, future, error))
    rows = []
    for (symbol, tf, spec), future, error in pending:
        state = future.wait() if future is not None else None
        error = error or (state_error(state) if state is not None else None)
        rows.append(train_row(symbol, tf, spec.name, None if error else state.result(),
                              state is not None and state.name == "Cached", error))
    return rows


def gate_one(store: CandleStore, settings: Settings, book: ScoreBook, symbol: str, tf: str, actor: Actor,
             now_ms: int) -> dict[str, object]:
    state = gate_task(store, settings, book, symbol, tf, actor, now_ms, return_state=True)
    error = state_error(state)
    return gate_columns(None if error else state.result(), error)


def select_series(store: CandleStore, settings: Settings, book: ScoreBook, triggered_only: bool,
                  now_ms: int) -> dict[tuple[str, str], str]:
    """Series to retrain -> why (the triggers that fired, or the run itself)."""
    chosen: dict[tuple[str, str], str] = {}
    for symbol, tf in settings.series(predicted_only=True):
        state = triggers_task(store, settings, book, symbol, tf, now_ms, return_state=True)
        check = None if state_error(state) else state.result()
        fired = "; ".join(f"{t.kind}: {t.detail}" for t in check.triggers) if check else ""
        if fired or not triggered_only:
            chosen[(symbol, tf)] = fired or "requested"
    return chosen


@flow(name="train")
def train_flow(symbols: list[str] | None = None, timeframes: list[str] | None = None,
               lookback: int | None = None, triggered_only: bool = False) -> list[dict[str, object]]:
    """Retrain every predicted series (or only those whose triggers fired), then gate and publish.

    Args:
        symbols: Symbols to train, a subset of TARGET_SYMBOLS such as ["BTC/USDT"] (unset: all
            configured). A symbol that is not configured, or has no stored candle, fails the run.
        timeframes: Timeframes to train, a subset of INGEST_TIMEFRAMES among 1h, 1d, 1w, 1M
            (1m is never predicted; unset: all configured).
        lookback: Train on the latest N candles, N at least the timeframe's min samples (168 for
            1h) and at most 5,000,000 (unset: the timeframe's training window, a year of 1h).
        triggered_only: Retrain only the series whose retrain triggers fired (champion age, new
            candles, drift of band misses); unset: every selected series.
    """
    settings = flow_settings(symbols, timeframes)
    series = settings.predicted_series()  # impossible parameters fail the run before any task
    lookback = settings.check_lookback(lookback)
    with recorded_run(settings, "train"):
        return _train(settings, series, symbols, timeframes, lookback, triggered_only)


def _train(settings: Settings, series: list[tuple[str, str]], symbols: list[str] | None,
           timeframes: list[str] | None, lookback: int | None, triggered_only: bool) -> list[dict[str, object]]:
    site_settings, actor, logger = flow_settings(), flow_actor(), get_run_logger()
    run_id = runtime.flow_run.id
    prepare_train_limit(str(run_id) if run_id else None)
    logger.info("fits run %s", describe_runner(settings))
    with concurrency(TRAIN_LIMIT, occupy=1, timeout_seconds=TRAIN_WAIT_S), open_store(settings) as store:
        empty = without_candles(store, series)
        if len(empty) == len(series):  # nothing to fit: fail before any model, score or page is written
            raise SeriesFailed(f"{', '.join(f'{s} {tf}' for s, tf in empty)}: {NO_CANDLES}")
        rows: list[dict[str, object]] = [{**train_row(s, tf, "-", None, False, f"{s} {tf}: {NO_CANDLES}"),
                                          **gate_columns(None, None), "trigger": "requested"} for s, tf in empty]
        with open_scorebook(settings) as book:
            chosen = {k: why for k, why in select_series(store, settings, book, triggered_only,
                                                         int(time.time() * 1000)).items() if k not in empty}
            for key, why in chosen.items():
                logger.info("retraining %s %s (%s, by %s)", *key, why, actor)
            jobs = [(s, tf, spec) for s, tf in chosen for spec in training_specs(tf)]
            fits = fit_series_flow.with_options(task_runner=task_runner(settings))(
                jobs, lookback, actor, symbols, timeframes) if jobs else []
            for (symbol, tf), why in chosen.items():
                gate = gate_one(store, settings, book, symbol, tf, actor, int(time.time() * 1000))
                rows += [{**fit, **gate, "trigger": why} for fit in fits if fit["series"] == f"{symbol} {tf}"]
        published = publish_task(store, site_settings, int(time.time() * 1000), return_state=True)
    return _report(rows, actor, state_error(published))


def _report(rows: list[dict[str, object]], actor: Actor, publish_error: str | None) -> list[dict[str, object]]:
    publish_table(artifact_key("train", "summary"), rows,
                  f"Train ({actor}): {len({r['series'] for r in rows})} series, "
                  f"{sum(1 for r in rows if r['status'] == 'trained')} fitted, "
                  f"{sum(1 for r in rows if r['cached'])} reused from cache; "
                  f"site {'published' if publish_error is None else 'NOT published: ' + publish_error}.")
    get_run_logger().info("train run done: %s", [f"{r['series']} {r['model']}={r['status']} gate={r['gate']}" for r in rows])
    failed = {f"{r['series']} {r['model']}": str(r["error"]) for r in rows if r["status"] == "failed"}
    failed.update({f"{r['series']} gate": str(r["gate error"]) for r in rows if r["gate error"]})
    if publish_error:
        failed["publish"] = publish_error
    fail_if_any("step(s)", failed)
    return rows
