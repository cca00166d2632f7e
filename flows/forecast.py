"""The forecast flow: forecast every predicted series from its stored candles now, then publish.

For an operator after a manual model change (a rollback, a restored registry) or a store
repair: no ingest, no scoring, only fresh forecasts from the latest stored candle and a
republished site. Forecasts fan out where ``flows.runners.task_runner`` says: in-process one
series after another by default, or over Dask (``DASK_WORKERS`` / ``DASK_ADDRESS``) through
the subflow ``forecast-series``, each task opening its own store.

The scheduled cycles do not ship their forecasts to Dask: a cycle forecasts each series right
after its own ingest, on threads sharing the exchange's throttle, and a forecast costs less
than a round trip to a Dask worker. It writes forecasts and the site, so it holds the global
``cycle`` slot and never interleaves with a cycle or a manual ingest.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, runtime
from prefect.concurrency.sync import concurrency

from coin_core.config import Settings
from coin_core.storage import open_store

from flows.artifacts import artifact_key, publish_table
from flows.common import fail_if_any, flow_settings, recorded_run, state_error
from flows.ingest import CYCLE_WAIT_S, prepare_cycle_limit
from flows.runners import describe_runner, task_runner
from flows.setup import CYCLE_LIMIT
from flows.tasks import forecast_task, publish_task

__all__ = ["forecast_series_flow", "forecast_flow"]


@flow(name="forecast-series")
def forecast_series_flow(series: list[tuple[str, str]], now_ms: int, symbols: list[str] | None = None,
                         timeframes: list[str] | None = None) -> dict[str, str]:
    """Submit every series' forecast to this flow's task runner; series -> status or error."""
    settings = flow_settings(symbols, timeframes)
    futures = [(f"{symbol} {tf}", forecast_task.submit(settings, symbol, tf, now_ms)) for symbol, tf in series]
    results: dict[str, str] = {}
    for name, future in futures:
        state = future.wait()
        results[name] = state_error(state) or state.result()
    return results


@flow(name="forecast")
def forecast_flow(symbols: list[str] | None = None, timeframes: list[str] | None = None) -> dict[str, str]:
    """Forecast every predicted series (or the given ones) from its latest stored candle, then publish.

    Args:
        symbols: Symbols to forecast, a subset of TARGET_SYMBOLS such as ["BTC/USDT"] (unset: all).
        timeframes: Timeframes to forecast among 1h, 1d, 1w, 1M (unset: all configured).
    """
    settings = flow_settings(symbols, timeframes)
    series = [(symbol, str(tf)) for symbol, tf in settings.predicted_series()]
    with recorded_run(flow_settings(), "forecast"):
        return _forecast(settings, series, symbols, timeframes)


def _forecast(settings: Settings, series: list[tuple[str, str]], symbols: list[str] | None,
              timeframes: list[str] | None) -> dict[str, str]:
    logger, run_id = get_run_logger(), runtime.flow_run.id
    prepare_cycle_limit(str(run_id) if run_id else None)
    logger.info("forecasts run %s", describe_runner(settings))
    now_ms = int(time.time() * 1000)
    with concurrency(CYCLE_LIMIT, occupy=1, timeout_seconds=CYCLE_WAIT_S):
        results = forecast_series_flow.with_options(task_runner=task_runner(settings))(series, now_ms, symbols, timeframes)
        with open_store(settings) as store:
            published = publish_task(store, flow_settings(), int(time.time() * 1000), return_state=True)
    failed = {name: status for name, status in results.items() if status != "ok"}
    if (error := state_error(published)) is not None:
        failed["publish"] = error
    publish_table(artifact_key("forecast", "summary"), [{"series": k, "status": v} for k, v in results.items()],
                  f"Forecast: {len(results)} series, {len(results) - len(failed)} ok; "
                  f"site {'published' if error is None else 'NOT published'}.")
    fail_if_any("step(s)", failed)
    return results
