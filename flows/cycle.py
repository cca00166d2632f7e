"""The cycle flow of one timeframe: ingest -> score -> forecast -> publish, one causal chain in one run.

Scoring comes right after ingest: the candles that just closed are the targets of earlier
forecasts (champion and shadows); a champion whose live skill fell below naive is demoted
before forecasting, so this very cycle already serves the baseline.

Scheduled at each UTC boundary of its timeframe (``prefect.yaml``). Serial on purpose: the
forecast must see the candles this run ingested and the site must show this run's forecasts.
A series whose ingest or forecast failed does not stop the chain: the site is published anyway
(its freshness badges then say what is stale) and the run ends Failed, naming the series.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, runtime, task
from prefect.concurrency.sync import concurrency

from coin_core.config import Settings
from coin_core.forecast.predict import PredictOutcome
from coin_core.ingest import SeriesReport
from coin_core.lifecycle import ScoreBook, open_scorebook
from coin_core.storage import CandleStore, open_store

from flows.artifacts import artifact_key, forecast_columns, ingest_rows, publish_table
from flows.common import fail_if_any, flow_settings, state_error
from flows.ingest import failures, ingest_all
from flows.setup import CYCLE_LIMIT, ensure_concurrency_limits, release_stale_slots
from flows.tasks import demotion_task, forecast_task, publish_task, score_task

__all__ = ["CYCLE_WAIT_S", "needs_forecast", "score_all", "forecast_all", "forecast_failures", "prepare_cycle_limit",
           "cycle_flow"]

#: A cycle waits this long for the one before it; then it fails and the next one catches up.
CYCLE_WAIT_S = 50 * 60

Outcomes = dict[tuple[str, str], tuple[PredictOutcome | None, str | None]]


def needs_forecast(store: CandleStore, symbol: str, tf: str) -> bool:
    """Causal gate: forecast only when the stored input moved past the last issued forecast.

    A degraded cycle kept the old forecast, whose input is older than the store: it retries.
    """
    latest = store.latest_ts(symbol, tf)
    issued = store.latest_forecast(symbol, tf)
    return latest is not None and (issued is None or issued.input_last_ts < latest)


def score_all(store: CandleStore, settings: Settings, book: ScoreBook, reports: list[SeriesReport],
              now_ms: int) -> dict[tuple[str, str], dict[str, object]]:
    """Score what closed, then the demotion check, per predicted series; failures become columns."""
    columns: dict[tuple[str, str], dict[str, object]] = {}
    for report in reports:
        symbol, tf = report.symbol, report.timeframe
        if not settings.policy(tf).predicted:
            continue
        scored = score_task(store, settings, book, symbol, tf, now_ms, return_state=True)
        error = state_error(scored)
        demoted = demotion_task(settings, book, symbol, tf, now_ms, return_state=True) if error is None else None
        error = error or (state_error(demoted) if demoted is not None else None)
        columns[(symbol, tf)] = {"scored": 0 if error else scored.result().scored,
                                 "demoted to": (demoted.result() or "") if demoted is not None and not error else "",
                                 "score error": error or ""}
    return columns


def forecast_all(store: CandleStore, settings: Settings, reports: list[SeriesReport], now_ms: int) -> Outcomes:
    """Forecast each predicted series in turn (CPU-bound: serial keeps a small VM responsive)."""
    outcomes: Outcomes = {}
    for report in reports:
        symbol, tf = report.symbol, report.timeframe
        if not settings.policy(tf).predicted or not needs_forecast(store, symbol, tf):
            continue
        state = forecast_task(store, settings, symbol, tf, now_ms, return_state=True)
        error = state_error(state)
        outcomes[(symbol, tf)] = (state.result() if error is None else None, error)
    return outcomes


def forecast_failures(outcomes: Outcomes) -> dict[str, str]:
    """A failed task or a degraded forecast (the last good one is served, flagged) is a failure."""
    found: dict[str, str] = {}
    for (symbol, tf), (outcome, error) in outcomes.items():
        reason = error or (outcome.error if outcome and outcome.status == "degraded" else None)
        if reason:
            found[f"{symbol} {tf} forecast"] = reason
    return found


@task(name="prepare-cycle-limit", retries=2, retry_delay_seconds=[1, 10])
def prepare_cycle_limit(current_run: str | None) -> bool:
    ensure_concurrency_limits()
    return release_stale_slots(CYCLE_LIMIT, "cycle", current_run)


@flow(name="cycle")
def cycle_flow(timeframe: str = "1h", symbols: list[str] | None = None) -> dict[str, object]:
    """One cycle of ``timeframe``; missed boundaries are caught up since cursors come from the store.

    Ingest and forecast cover ``timeframe`` (and ``symbols`` when given); publish always covers
    every configured series, so the site never shrinks to the series of the last run. Cycles of
    every timeframe hold the one ``cycle`` slot: a slow run never interleaves with the next.
    """
    settings = flow_settings(symbols, [timeframe])
    site_settings = flow_settings()
    logger = get_run_logger()
    run_id = runtime.flow_run.id
    prepare_cycle_limit(str(run_id) if run_id else None)
    with concurrency(CYCLE_LIMIT, occupy=1, timeout_seconds=CYCLE_WAIT_S), open_store(settings) as store, \
            open_scorebook(settings) as book:
        reports = ingest_all(store, settings)
        now_ms = int(time.time() * 1000)
        scores = score_all(store, settings, book, reports, now_ms)
        outcomes = forecast_all(store, settings, reports, now_ms)
        published = publish_task(store, site_settings, now_ms, return_state=True)
    publish_error = state_error(published)
    rows = [{**row, **scores.get((r.symbol, r.timeframe), {}), **forecast_columns(*outcomes.get((r.symbol, r.timeframe), (None, None)))}
            for r, row in zip(reports, ingest_rows(reports))]
    site = f"site {published.result().overall}" if publish_error is None else f"publish FAILED: {publish_error}"
    publish_table(artifact_key("cycle", timeframe), rows,
                  f"Cycle {timeframe}: {sum(r.new_candles for r in reports)} new candle(s), "
                  f"{len(outcomes)} forecast(s), {site}.")
    logger.info("cycle %s done: %s", timeframe, site)
    failed = {**failures(reports), **forecast_failures(outcomes),
              **{f"{s} {tf} scoring": str(c["score error"]) for (s, tf), c in scores.items() if c["score error"]}}
    if publish_error:
        failed["publish"] = publish_error
    fail_if_any("step(s)", failed)
    return {
        "ingest": reports,
        "forecasts": {f"{s} {tf}": out for (s, tf), (out, _) in outcomes.items()},
        "publish": published.result(),
    }
