"""The train flow: train -> evaluate -> gate -> promote -> publish, never two train runs at once.

* One at a time: the whole run holds a slot of the global concurrency limit ``train`` (limit 1).
  The run first makes sure the limit exists and is ACTIVE (Prefect 2.20 would otherwise
  auto-create it inactive, limiting nothing) and frees a slot leaked by a dead run.
* Every candidate of a series (both baselines, the shared spec, the challengers) is fitted and
  registered as a shadow; nothing serves until the gate passes it (``coin_core.lifecycle``).
* No refit of what is already fitted: each series' candidates are fitted by one task, cached
  under ``fit_group_key`` of their ``fit_cache_key``s (series, training data range, model spec),
  reused only while every one of those fits is still registered in some role; a deleted result
  file means a refit, not a failed run (see ``flows.tasks.cached``).
* Fits fan out where ``flows.runners.task_runner`` says: in-process one series at a time by
  default, or over Dask (``DASK_WORKERS`` / ``DASK_ADDRESS``) through a subflow ``fit-series``
  that carries the chosen task runner; one task per series (a task run costs more orchestration
  than a baseline's fit). Each fit task opens its own store (it may run in another process);
  the keys of every series are read in one task before anything is submitted.
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
from coin_core.forecast.training import fit_group_key, registered_fit_keys
from coin_core.lifecycle import ScoreBook, open_scorebook
from coin_core.lifecycle.retrain import training_specs
from coin_core.pipeline import NO_CANDLES, without_candles
from coin_core.storage import CandleStore, open_store

from flows.artifacts import artifact_key, gate_columns, publish_table, train_row
from flows.common import SeriesFailed, fail_if_any, flow_actor, flow_settings, recorded_run, state_error
from flows.runners import describe_runner, task_runner
from flows.setup import TRAIN_LIMIT, ensure_concurrency_limits, release_stale_slots
from flows.tasks import cached, fit_keys_task, gate_task, publish_task, train_task, triggers_task

__all__ = ["TRAIN_WAIT_S", "prepare_train_limit", "fit_series_flow", "gate_one", "select_series", "train_flow"]

#: How long a train run waits for the one running before it gives up (and fails, saying so).
TRAIN_WAIT_S = 4 * 3600

Job = tuple[str, str, ModelSpec]


@task(name="prepare-train-limit", retries=2, retry_delay_seconds=[1, 10])
def prepare_train_limit(current_run: str | None) -> bool:
    ensure_concurrency_limits()
    return release_stale_slots(TRAIN_LIMIT, "train", current_run)


def _by_series(jobs: list[Job], lookback: int | None) -> dict[tuple[str, str, int], list[ModelSpec]]:
    """Candidates grouped by series (and its training window), in the order they were asked."""
    groups: dict[tuple[str, str, int], list[ModelSpec]] = {}
    for symbol, tf, spec in jobs:
        window = lookback if lookback is not None else default_lookback(tf)
        groups.setdefault((symbol, tf, window), []).append(spec)
    return groups


def _submit(settings: Settings, series: tuple[str, str, int], specs: list[ModelSpec], keys: list[str] | None,
            actor: Actor) -> tuple[Any, str | None]:
    """The series' (cached) fit of every candidate, or why it cannot run."""
    symbol, tf, window = series
    if keys is None:  # nothing stored: a run asked for it must not end Completed with 0 models
        return None, f"{symbol} {tf}: {NO_CANDLES}"
    key = fit_group_key(symbol, tf, keys)
    # Reuse the cached fits only while every one of those models is still registered (not
    # pruned, not corrupt): otherwise the series refits.
    stale = not set(keys) <= registered_fit_keys(settings, symbol, tf)
    return cached(train_task, key, refresh=stale).submit(settings, symbol, tf, window, specs, actor, cache_key=key), None


def _rows(symbol: str, tf: str, specs: list[ModelSpec], state: Any, error: str | None) -> list[dict[str, object]]:
    error = error or (state_error(state) if state is not None else None)
    results: list[Any] = state.result() if error is None else [None] * len(specs)
    reused = state is not None and state.name == "Cached"
    return [train_row(symbol, tf, spec.name, None, False, result) if isinstance(result, str)
            else train_row(symbol, tf, spec.name, result, reused, error) for spec, result in zip(specs, results)]


@flow(name="fit-series")
def fit_series_flow(jobs: list[Job], lookback: int | None, actor: Actor,
                    symbols: list[str] | None = None, timeframes: list[str] | None = None) -> list[dict[str, object]]:
    """Key every series' candidates, submit each series' (cached) fits to this flow's task
    runner as one task, one row per candidate."""
    settings = flow_settings(symbols, timeframes)
    groups = _by_series(jobs, lookback)
    with open_store(settings) as store:
        key_state = fit_keys_task(store, [(*series, specs) for series, specs in groups.items()], len(groups),
                                  return_state=True)
    key_error = state_error(key_state)
    all_keys = key_state.result() if key_error is None else [None] * len(groups)
    pending = [(series, specs, *((None, key_error) if key_error else _submit(settings, series, specs, keys, actor)))
               for (series, specs), keys in zip(groups.items(), all_keys)]
    rows: list[dict[str, object]] = []
    for (symbol, tf, _), specs, future, error in pending:
        rows += _rows(symbol, tf, specs, future.wait() if future is not None else None, error)
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
