"""The train flow: train -> evaluate -> gate -> promote -> publish, never two train runs at once.

* One at a time: the whole run holds a slot of the global concurrency limit ``train`` (limit 1).
  The run first makes sure the limit exists and is ACTIVE (Prefect 2.20 would otherwise
  auto-create it inactive, limiting nothing) and frees a slot leaked by a dead run.
* Every candidate of a series (both baselines, the shared spec, the challengers) is fitted and
  registered as a shadow; nothing serves until the gate passes it (``coin_core.lifecycle``).
* No refit of what is already fitted: each fit task is cached under ``fit_cache_key`` (series,
  training data range, model spec), reused only while that fit is still registered in some role.
* However the run started (schedule, UI, a retrain trigger), it ends evaluated, gated and
  published. ``triggered_only`` (the ``retrain-on-trigger`` deployment) retrains only the series
  whose triggers fired (age, new candles, ADWIN drift on band misses, no candidate).
"""

from __future__ import annotations

import time

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
from flows.common import SeriesFailed, fail_if_any, flow_actor, flow_settings, state_error
from flows.setup import TRAIN_LIMIT, ensure_concurrency_limits, release_stale_slots
from flows.tasks import cached, fit_key_task, gate_task, publish_task, train_task, triggers_task

__all__ = ["TRAIN_WAIT_S", "prepare_train_limit", "train_one", "gate_one", "select_series", "train_flow"]

#: How long a train run waits for the one running before it gives up (and fails, saying so).
TRAIN_WAIT_S = 4 * 3600


@task(name="prepare-train-limit", retries=2, retry_delay_seconds=[1, 10])
def prepare_train_limit(current_run: str | None) -> bool:
    ensure_concurrency_limits()
    return release_stale_slots(TRAIN_LIMIT, "train", current_run)


def train_one(store: CandleStore, settings: Settings, symbol: str, tf: str, lookback: int | None,
              spec: ModelSpec, actor: Actor) -> dict[str, object]:
    """Key, then fit (or reuse the cached fit); one table row, failures included."""
    lookback = lookback if lookback is not None else default_lookback(tf)
    key_state = fit_key_task(store, symbol, tf, lookback, spec, return_state=True)
    error = state_error(key_state)
    if error is not None:
        return train_row(symbol, tf, spec.name, None, False, error)
    key = key_state.result()
    if key is None:  # nothing stored: a run asked for it must not end Completed with 0 models
        return train_row(symbol, tf, spec.name, None, False, f"{symbol} {tf}: {NO_CANDLES}")
    # Reuse a cached fit only while that model is still registered (not pruned, not corrupt).
    stale = key not in registered_fit_keys(settings, symbol, tf)
    state = cached(train_task, key, refresh=stale)(store, settings, symbol, tf, lookback, spec, actor,
                                                   cache_key=key, return_state=True)
    error = state_error(state)
    return train_row(symbol, tf, spec.name, None if error else state.result(), state.name == "Cached", error)


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
    settings, site_settings, actor = flow_settings(symbols, timeframes), flow_settings(), flow_actor()
    series = settings.predicted_series()  # impossible parameters fail the run before any task
    lookback = settings.check_lookback(lookback)
    logger = get_run_logger()
    run_id = runtime.flow_run.id
    prepare_train_limit(str(run_id) if run_id else None)
    with concurrency(TRAIN_LIMIT, occupy=1, timeout_seconds=TRAIN_WAIT_S), open_store(settings) as store:
        empty = without_candles(store, series)
        if len(empty) == len(series):  # nothing to fit: fail before any model, score or page is written
            raise SeriesFailed(f"{', '.join(f'{s} {tf}' for s, tf in empty)}: {NO_CANDLES}")
        rows: list[dict[str, object]] = [{**train_row(s, tf, "-", None, False, f"{s} {tf}: {NO_CANDLES}"),
                                          **gate_columns(None, None), "trigger": "requested"} for s, tf in empty]
        with open_scorebook(settings) as book:
            now_ms = int(time.time() * 1000)
            for (symbol, tf), why in select_series(store, settings, book, triggered_only, now_ms).items():
                if (symbol, tf) in empty:
                    continue
                logger.info("retraining %s %s (%s, by %s)", symbol, tf, why, actor)
                fits = [train_one(store, settings, symbol, tf, lookback, spec, actor) for spec in training_specs(tf)]
                gate = gate_one(store, settings, book, symbol, tf, actor, int(time.time() * 1000))
                rows += [{**fit, **gate, "trigger": why} for fit in fits]
        published = publish_task(store, site_settings, int(time.time() * 1000), return_state=True)
    publish_error = state_error(published)
    publish_table(artifact_key("train", "summary"), rows,
                  f"Train ({actor}): {len({r['series'] for r in rows})} series, "
                  f"{sum(1 for r in rows if r['status'] == 'trained')} fitted, "
                  f"{sum(1 for r in rows if r['cached'])} reused from cache; "
                  f"site {'published' if publish_error is None else 'NOT published: ' + publish_error}.")
    logger.info("train run done: %s", [f"{r['series']} {r['model']}={r['status']} gate={r['gate']}" for r in rows])
    failed = {f"{r['series']} {r['model']}": str(r["error"]) for r in rows if r["status"] == "failed"}
    failed.update({f"{r['series']} gate": str(r["gate error"]) for r in rows if r["gate error"]})
    if publish_error:
        failed["publish"] = publish_error
    fail_if_any("step(s)", failed)
    return rows
