"""The ingest flow, and the fan-out of the per-series unit that the cycle flow shares.

Each series is one task running :func:`coin_core.cycle.cycle_series` (ingest, and in a cycle
the gated forecast), submitted to the flow's concurrent task runner ``EXCHANGE_CONCURRENCY`` at a
time. Every thread fetches with its own ccxt client, and all of them share the exchange's one
request throttle (:class:`coin_core.clients.ClientPool`), so series overlap their round trips
without exceeding the budget one client would have. One failing series never stops the others:
each task's final state is collected, a failure becomes a row of the run's table artifact, and
the run ends Failed only after every series ran.

A manual ingest writes the same series as a cycle, so it holds the same global ``cycle`` slot:
the two never interleave.
"""

from __future__ import annotations

from collections import deque

from prefect import flow, get_run_logger, runtime, task
from prefect.concurrency.sync import concurrency
from prefect.futures import PrefectFuture

from coin_core.clients import ClientPool
from coin_core.config import Settings
from coin_core.cycle import SeriesCycle
from coin_core.ingest import SeriesReport
from coin_core.storage import CandleStore, open_store

from flows.artifacts import artifact_key, ingest_rows, publish_table
from flows.common import fail_if_any, flow_settings, recorded_run, state_error
from flows.setup import CYCLE_LIMIT, ensure_concurrency_limits, release_stale_slots
from flows.tasks import cached, exchange_markets, exchange_time_task, markets_cache_key, series_task

__all__ = ["CYCLE_WAIT_S", "prepare_cycle_limit", "run_units", "failures", "ingest_flow"]

#: A run waits this long for the cycle (or manual ingest) before it; then it fails and the
#: next scheduled cycle catches up.
CYCLE_WAIT_S = 50 * 60


@task(name="prepare-cycle-limit", retries=2, retry_delay_seconds=[1, 10])
def prepare_cycle_limit(current_run: str | None) -> bool:
    ensure_concurrency_limits()
    return release_stale_slots(CYCLE_LIMIT, current_run=current_run)


def _all_failed(settings: Settings, error: str) -> tuple[list[SeriesCycle], int | None]:
    return [SeriesCycle(SeriesReport(symbol=s, timeframe=tf, error=error)) for s, tf in settings.series()], None


def _collect(future: PrefectFuture, symbol: str, tf: str) -> SeriesCycle:
    state = future.wait()
    error = state_error(state)
    return state.result() if error is None else SeriesCycle(SeriesReport(symbol=symbol, timeframe=tf, error=error))


def run_units(store: CandleStore, settings: Settings, step: str) -> tuple[list[SeriesCycle], int | None]:
    """The per-series unit (``step`` "ingest" or "cycle") of every series, in order, and the
    run's exchange time (None when the exchange could not be reached at all).

    The market snapshot comes from a cached task, so a run does not reload the exchange's
    whole market list; the exchange clock is read once per run, not once per series.
    """
    key = markets_cache_key(settings)
    markets_state = cached(exchange_markets, key)(settings, cache_key=key, return_state=True)
    if (error := state_error(markets_state)) is not None:
        return _all_failed(settings, error)
    with ClientPool(settings, markets=markets_state.result()) as pool:
        now_state = exchange_time_task(pool, return_state=True)
        if (error := state_error(now_state)) is not None:
            return _all_failed(settings, error)
        now_ms: int = now_state.result()
        window: deque[tuple[PrefectFuture, str, str]] = deque()
        done: list[SeriesCycle] = []
        for symbol, tf in settings.series():
            if len(window) >= settings.exchange_concurrency:
                done.append(_collect(*window.popleft()))
            window.append((series_task.submit(store, pool, settings, symbol, tf, now_ms, step), symbol, tf))
        done.extend(_collect(*entry) for entry in window)
    for unit in done:
        unit.ingest.clock_note = unit.ingest.clock_note or pool.clock_note
    return done, now_ms


def failures(reports: list[SeriesReport]) -> dict[str, str]:
    return {f"{r.symbol} {r.timeframe}": r.error for r in reports if r.error}


@flow(name="ingest")
def ingest_flow(symbols: list[str] | None = None, timeframes: list[str] | None = None) -> list[SeriesReport]:
    """Ingest every closed candle of the configured (or given) symbols and timeframes."""
    settings = flow_settings(symbols, timeframes)
    run_id = runtime.flow_run.id
    prepare_cycle_limit(str(run_id) if run_id else None)
    with recorded_run(settings, "ingest"):
        with concurrency(CYCLE_LIMIT, occupy=1, timeout_seconds=CYCLE_WAIT_S), open_store(settings) as store:
            reports = [unit.ingest for unit in run_units(store, settings, "ingest")[0]]
        new = sum(r.new_candles for r in reports)
        publish_table(artifact_key("ingest", "summary"), ingest_rows(reports),
                      f"Ingest: {len(reports)} series, {new} new candle(s), {len(failures(reports))} failed.")
        get_run_logger().info("ingested %d new candle(s) over %d series", new, len(reports))
        fail_if_any("series", failures(reports))
    return reports
