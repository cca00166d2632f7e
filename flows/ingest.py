"""The ingest flow, and the fan-out of the per-series unit that the cycle flow shares.

One task runs :func:`coin_core.cycle.run_series`: the per-series unit
:func:`~coin_core.cycle.cycle_series` (ingest, and in a cycle the gated forecast) of every series
on ``EXCHANGE_CONCURRENCY`` threads. Every thread fetches with its own ccxt client, and all of
them share the exchange's one request throttle (:class:`coin_core.clients.ClientPool`), so series
overlap their round trips without exceeding the budget one client would have. It is one task,
not one per series, because orchestrating a task run costs Prefect more than a series' unit of
work (a 20-series cycle took 27-40 s as 60 task runs against 5-8 s for the work itself). One
failing series never stops the others: its error is a row of the run's table artifact, and the
run ends Failed, naming it, only after every series ran.

A manual ingest writes the same series as a cycle, so it holds the same global ``cycle`` slot:
the two never interleave.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, runtime, task
from prefect.concurrency.sync import concurrency

from coin_core.config import Settings
from coin_core.cycle import SeriesCycle, UnitDone
from coin_core.ingest import SeriesReport
from coin_core.storage import CandleStore, open_store
from coin_core.workers import Workers

from flows.artifacts import artifact_key, ingest_rows, publish_table
from flows.common import fail_if_any, flow_settings, recorded_run, state_error
from flows.setup import CYCLE_LIMIT, ensure_concurrency_limits, release_stale_slots
from flows.tasks import cached, exchange_markets, markets_cache_key, units_task

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


def run_units(store: CandleStore, settings: Settings, step: str, workers: Workers | None = None,
              on_unit: UnitDone | None = None) -> tuple[list[SeriesCycle], int | None]:
    """The per-series unit (``step`` "ingest" or "cycle") of every series, in order, and the
    run's exchange time (None when the exchange could not be reached at all). ``workers`` and
    ``on_unit`` as in :func:`coin_core.cycle.run_series`.

    The market snapshot comes from a cached task, so a run does not reload the exchange's
    whole market list; the exchange clock is read once per run, not once per series.
    """
    key = markets_cache_key(settings)
    markets_state = cached(exchange_markets, key)(settings, cache_key=key, return_state=True)
    if (error := state_error(markets_state)) is not None:
        return _all_failed(settings, error)
    units = units_task(store, settings, markets_state.result(), step, len(settings.series()), workers, on_unit,
                       return_state=True)
    if (error := state_error(units)) is not None:
        return _all_failed(settings, error)
    run = units.result()  # an exchange that cannot be reached at all: every series says so, local clock
    return run.series, run.now_ms


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
