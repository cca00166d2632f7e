"""The ingest flow: every configured series, one task each.

One failing series never stops the others: each task's final state is collected, a failure
becomes a row of the run's table artifact, and the run ends Failed only after every series ran.
The detection gate (skip when the store already has the latest closed candle) is inside
``coin_core.ingest.ingest_series``; cursors come from the store, so a missed run is caught up.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from coin_core.config import Settings
from coin_core.exchange import ExchangeClient
from coin_core.ingest import SeriesReport
from coin_core.storage import CandleStore, open_store

from flows.artifacts import artifact_key, ingest_rows, publish_table
from flows.common import fail_if_any, flow_settings, recorded_run, state_error
from flows.tasks import cached, exchange_markets, ingest_series_task, markets_cache_key

__all__ = ["ingest_all", "failures", "ingest_flow"]


def ingest_all(store: CandleStore, settings: Settings) -> list[SeriesReport]:
    """One ingest task per listed series, run in turn; a report per series, failures included.

    Serial on purpose: one ccxt client (not thread-safe) and so one request throttle for the
    exchange, whatever the number of symbols — stability over speed (a 1h cycle of 50 symbols
    is 50 small requests). The market snapshot comes from a cached task, so a cycle does not
    reload the exchange's whole market list.
    """
    key = markets_cache_key(settings)
    markets_state = cached(exchange_markets, key)(settings, cache_key=key, return_state=True)
    markets_error = state_error(markets_state)
    if markets_error is not None:
        return [SeriesReport(symbol=s, timeframe=tf, error=markets_error) for s, tf in settings.series()]
    markets = markets_state.result()
    reports: list[SeriesReport] = []
    with ExchangeClient(settings, markets=markets) as client:
        for symbol, tf in settings.series():
            if symbol not in markets:
                reports.append(SeriesReport(symbol=symbol, timeframe=tf,
                                            error=f"PermanentExchangeError: {symbol} is not listed on {settings.exchange_id}"))
                continue
            state = ingest_series_task(store, client, settings, symbol, tf, return_state=True)
            error = state_error(state)
            reports.append(state.result() if error is None else SeriesReport(symbol=symbol, timeframe=tf, error=error))
    return reports


def failures(reports: list[SeriesReport]) -> dict[str, str]:
    return {f"{r.symbol} {r.timeframe}": r.error for r in reports if r.error}


@flow(name="ingest")
def ingest_flow(symbols: list[str] | None = None, timeframes: list[str] | None = None) -> list[SeriesReport]:
    """Ingest every closed candle of the configured (or given) symbols and timeframes."""
    settings = flow_settings(symbols, timeframes)
    with recorded_run(settings, "ingest"):
        with open_store(settings) as store:
            reports = ingest_all(store, settings)
        new = sum(r.new_candles for r in reports)
        publish_table(artifact_key("ingest", "summary"), ingest_rows(reports),
                      f"Ingest: {len(reports)} series, {new} new candle(s), {len(failures(reports))} failed.")
        get_run_logger().info("ingested %d new candle(s) over %d series", new, len(reports))
        fail_if_any("series", failures(reports))
    return reports
