"""The cycle flow of one timeframe: score -> ingest -> forecast per series, then publish, in one run.

Each series' unit first scores what closed before this run (the targets of earlier forecasts,
champion and shadows) and demotes a champion whose live skill fell below naive, so this very
cycle already serves the baseline; then it ingests and forecasts.

Scheduled at each UTC boundary of its timeframe (``prefect.yaml``). Causal per series: a
series' forecast follows its own ingest in one unit of work (series run side by side, under the
exchange's one throttle), and publish runs after every unit, so the site shows this run's forecasts.
A series whose ingest or forecast failed does not stop the chain: the site is published anyway
(its freshness badges then say what is stale) and the run ends Failed, naming the series.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, runtime
from prefect.concurrency.sync import concurrency

from coin_core.config import Settings
from coin_core.cycle import SeriesCycle
from coin_core.metrics import RunTimer
from coin_core.publish.early import EarlyPublish
from coin_core.storage import open_store
from coin_core.workers import Workers, pool_size

from flows.artifacts import artifact_key, forecast_columns, ingest_rows, publish_table
from flows.common import fail_if_any, flow_settings, recorded_run, state_error
from flows.ingest import CYCLE_WAIT_S, failures, prepare_cycle_limit, run_units
from flows.setup import CYCLE_LIMIT
from flows.tasks import publish_task

__all__ = ["CYCLE_WAIT_S", "forecast_failures", "cycle_flow"]


def forecast_failures(units: list[SeriesCycle]) -> dict[str, str]:
    """A degraded forecast (the last good one is served, flagged) is a failure of its series."""
    return {f"{u.ingest.symbol} {u.ingest.timeframe} forecast": u.forecast.error or "degraded"
            for u in units if u.forecast is not None and u.forecast.status == "degraded"}


@flow(name="cycle")
def cycle_flow(timeframe: str = "1h", symbols: list[str] | None = None) -> dict[str, object]:
    """One cycle of ``timeframe``; missed boundaries are caught up since cursors come from the store.

    Ingest and forecast cover ``timeframe`` (and ``symbols`` when given), one unit of work per
    series (:func:`coin_core.cycle.cycle_series`, the same as the CLI's); publish always covers
    every configured series, so the site never shrinks to the series of the last run. Cycles of
    every timeframe (and manual ingests) hold the one ``cycle`` slot: a slow run never
    interleaves with the next.
    """
    settings = flow_settings(symbols, [timeframe])
    site_settings = flow_settings()
    with recorded_run(site_settings, f"cycle {timeframe}") as timer:
        return _cycle(settings, site_settings, timeframe, timer)


def _cycle(settings: Settings, site_settings: Settings, timeframe: str, timer: RunTimer) -> dict[str, object]:
    logger = get_run_logger()
    run_id = runtime.flow_run.id
    prepare_cycle_limit(str(run_id) if run_id else None)
    # One pool of worker processes for the units and publish, which starts each series' files as
    # its unit ends (coin_core.publish.early), as ``coin-predict cycle`` does.
    with concurrency(CYCLE_LIMIT, occupy=1, timeout_seconds=CYCLE_WAIT_S), open_store(settings) as store, \
            Workers(pool_size(site_settings.cpu_workers, len(site_settings.series()))) as workers, \
            EarlyPublish(site_settings) as early:
        with timer.step("score+ingest+forecast"):  # one unit per series: score -> ingest -> gate -> forecast
            units, now_ms = run_units(store, settings, "cycle", workers, early.series_done)
        scores = {(u.ingest.symbol, u.ingest.timeframe): u.score.columns() for u in units if u.score is not None}
        with timer.step("publish"):
            # The exchange unreachable (now_ms None): publish anyway, so the badges say what is stale.
            published = publish_task(store, site_settings, now_ms or int(time.time() * 1000), workers, early,
                                     return_state=True)
    publish_error = state_error(published)
    reports = [u.ingest for u in units]
    rows = [{**row, **scores.get((u.ingest.symbol, u.ingest.timeframe), {}), **forecast_columns(u.forecast)}
            for u, row in zip(units, ingest_rows(reports))]
    site = f"site {published.result().overall}" if publish_error is None else f"publish FAILED: {publish_error}"
    publish_table(artifact_key("cycle", timeframe), rows,
                  f"Cycle {timeframe}: {sum(r.new_candles for r in reports)} new candle(s), "
                  f"{sum(1 for u in units if u.forecast)} forecast(s), {site}.")
    logger.info("cycle %s done: %s", timeframe, site)
    failed = {**failures(reports), **forecast_failures(units),
              **{f"{s} {tf} scoring": str(c["score error"]) for (s, tf), c in scores.items() if c["score error"]}}
    if publish_error:
        failed["publish"] = publish_error
    fail_if_any("step(s)", failed)
    return {
        "ingest": reports,
        "forecasts": {f"{u.ingest.symbol} {u.ingest.timeframe}": u.forecast for u in units if u.forecast},
        "publish": published.result(),
    }
