"""The per-series unit of work of a cycle, and its fan-out over threads under one throttle.

:func:`cycle_series` is what a cycle does for ONE series, whoever runs it (the CLI's
``run_cycle``, the Prefect ``cycle`` and ``ingest`` flows):

1. ingest, guarded: an unlisted symbol or a failing exchange/store becomes an error in the
   series' report (and its ingest record), never an abort of the other series;
2. the causal forecast gate :func:`needs_forecast`: forecast only when the stored input moved
   past the last issued forecast (a degraded cycle kept the old one, so it retries);
3. forecast (which never raises: a failure keeps the last good forecast, flagged degraded).

:func:`run_series` runs the unit for every configured series on ``EXCHANGE_CONCURRENCY``
threads. Each thread has its own ccxt client (ccxt is not thread-safe) and all of them share
the exchange's one request throttle (:class:`~coin_core.clients.ClientPool`), so many series
fill the exchange's request budget instead of waiting on each other's round trips. The store
is shared: SQLite serialises writers itself, InfluxDB takes concurrent batches.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable

from .clients import ClientPool
from .config import Settings
from .errors import CoinPredictError
from .exchange import ExchangeClient
from .forecast.predict import PredictOutcome, forecast_apart, forecast_one, needs_forecast, short_error
from .health import update_ingest_state
from .lifecycle.scoring import open_scorebook
from .lifecycle.steps import ScoreStep, score_all, score_one
from .ingest import IngestReport, Progress, SeriesReport, ingest_series
from .redaction import redact
from .storage import CandleStore
from .timeframes import Timeframe
from .workers import Workers, pool_size, shared_or_own, start_server

__all__ = ["SeriesCycle", "SeriesRun", "needs_forecast", "ingest_one", "forecast_one", "forecast_apart", "cycle_series",
           "run_series"]

log = logging.getLogger(__name__)

#: Called as each unit ends: (the run's workers, the run's clock, symbol, timeframe).
UnitDone = Callable[[Workers, int, str, Timeframe], None]


@dataclass
class SeriesCycle:
    """What one series' unit of work did: its ingest report, when gated in its forecast, and
    when the run scored its score step."""

    ingest: SeriesReport
    forecast: PredictOutcome | None = None
    score: ScoreStep | None = None


@dataclass
class SeriesRun:
    """Every series' outcome of one run, in the configured order, and the run's clock."""

    series: list[SeriesCycle]
    now_ms: int
    seconds: float
    requests: int = 0
    throttle_interval_ms: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)
    workers: int = 1  # processes the run's CPU-bound work used (1: this one)

    @property
    def ingest(self) -> IngestReport:
        return IngestReport(series=[s.ingest for s in self.series], seconds=self.seconds)

    @property
    def forecasts(self) -> dict[str, PredictOutcome]:
        return {f"{s.ingest.symbol} {s.ingest.timeframe}": s.forecast for s in self.series if s.forecast}


def _record_error(settings: Settings, symbol: str, tf: Timeframe, error: str) -> None:
    """Keep the reason in the series' ingest record; a record that cannot be written (a full
    disk) is only logged, so the series' own error is what the caller sees."""
    try:
        update_ingest_state(settings.data_dir, symbol, tf, lambda s: s.model_copy(update={"last_error": error[:300]}))
    except (OSError, CoinPredictError) as exc:
        log.error("ingest record of %s %s not updated: %s", symbol, tf, short_error(exc))


def ingest_one(store: CandleStore, client: ExchangeClient, settings: Settings, symbol: str, tf: Timeframe,
               now_ms: int, listed: set[str], progress: Progress | None = None, *, strict: bool = False) -> SeriesReport:
    """Ingest one series; a project error ends up in its report and ingest record.

    ``strict`` re-raises it after recording (a Prefect task then retries what is transient);
    an unlisted symbol is never retried: it is reported at once.
    """
    if symbol not in listed:
        error = f"PermanentExchangeError: {symbol} is not listed on {settings.exchange_id}"
        _record_error(settings, symbol, tf, error)
        return SeriesReport(symbol=symbol, timeframe=tf, error=error)
    try:
        return ingest_series(store, client, settings, symbol, tf, now_ms=now_ms, progress=progress)
    except CoinPredictError as exc:
        error = redact(f"{type(exc).__name__}: {exc}", settings.secret_values())
        log.error("ingest of %s %s failed: %s", symbol, tf, error)
        _record_error(settings, symbol, tf, error)
        if strict:
            raise
        return SeriesReport(symbol=symbol, timeframe=tf, error=error)


def cycle_series(store: CandleStore, client: ExchangeClient, settings: Settings, symbol: str, tf: Timeframe,
                 now_ms: int, listed: set[str], *, forecast: bool = True, strict: bool = False,
                 progress: Progress | None = None, workers: Workers | None = None,
                 score: bool = False) -> SeriesCycle:
    """THE per-series unit of a cycle: [score ->] ingest -> causal gate -> forecast (module doc).

    With ``workers`` in parallel, the score step (``score``: through the candle stored before
    this run's ingest, then demotion; it runs during the series' own round trips) and the gate
    and forecast run in a worker process while the thread waits with the GIL free, so they use
    every core and overlap the round trips. Without, the
    caller scores every series before the units (:func:`run_series`): not on threads, where
    scoring grew a soak's RSS.
    """
    scored = None
    if score and workers is not None:  # scored while the series' round trips run (a broken pool: here)
        scored = workers.submit(score_one, settings, symbol, tf, now_ms, _latest(store, symbol, tf))
    report = ingest_one(store, client, settings, symbol, tf, now_ms, listed, progress, strict=strict)
    step = scored() if scored is not None else None
    if not forecast:
        return SeriesCycle(report, score=step)
    if workers is not None and workers.parallel:
        return SeriesCycle(report, workers.call(forecast_apart, settings, symbol, tf, now_ms), step)
    return SeriesCycle(report, forecast_one(store, settings, symbol, tf, now_ms), step)


def _latest(store: CandleStore, symbol: str, tf: Timeframe) -> int | None:
    """The candle the score step stops at: the latest stored before this run's ingest."""
    try:
        return store.latest_ts(symbol, tf)
    except CoinPredictError:
        return None  # the store is unreachable: the score step reports it itself


def _score_first(store: CandleStore, settings: Settings, now_ms: int) -> dict[tuple[str, Timeframe], ScoreStep]:
    """Every predicted series' score step, in this thread (a book that cannot open: each says so)."""
    try:
        book = open_scorebook(settings)
    except CoinPredictError as exc:
        log.error("scoring skipped: %s", short_error(exc))
        return {series: ScoreStep(error=short_error(exc)) for series in settings.series(predicted_only=True)}
    with book:
        return score_all(store, settings, book, now_ms)


def _failed_run(settings: Settings, error: CoinPredictError, began: float) -> SeriesRun:
    """The exchange could not even list its markets: every series fails with that reason."""
    reason = f"{type(error).__name__}: {error}"
    log.error("exchange unavailable, no series ingested: %s", reason)
    reports = [SeriesCycle(SeriesReport(symbol=s, timeframe=tf, error=reason)) for s, tf in settings.series()]
    return SeriesRun(reports, int(time.time() * 1000), time.monotonic() - began)


def run_series(store: CandleStore, settings: Settings, *, now_ms: int | None = None, forecast: bool = True,
               progress: Progress | None = None, markets: dict | None = None,
               rate_limit_ms: int | None = None, workers: Workers | None = None, score: bool = False,
               on_unit: UnitDone | None = None) -> SeriesRun:
    """The unit of work for every configured series, ``EXCHANGE_CONCURRENCY`` at a time.

    ``score``: each predicted series is first scored (what closed before this run) and checked
    for demotion, so a demotion serves at once: in its unit on a worker process when the run
    has workers, else all series in this thread before the units.

    ``on_unit(workers, now_ms, symbol, timeframe)`` is called as each unit ends, on its thread
    (an early publish queues the series' files there: ``publish.early``).

    The run's clock is read once (the exchange's time unless ``now_ms`` is given), so every
    series decides "closed" against the same instant and no series pays a ``/time`` request.
    """
    began = time.monotonic()
    jobs = len(settings.series(predicted_only=True)) if forecast else 0
    if pool_size(settings.cpu_workers, jobs) > 1:
        start_server()  # its imports then overlap the markets request
    try:
        pool = ClientPool(settings, markets=markets, rate_limit_ms=rate_limit_ms)
    except CoinPredictError as exc:
        return _failed_run(settings, exc, began)
    with pool:
        listed = pool.listed
        try:
            now = now_ms if now_ms is not None else pool.now_ms()
        except CoinPredictError as exc:
            return _failed_run(settings, exc, began)
        requests_before = pool.throttle.requests

        with shared_or_own(workers, settings.cpu_workers, jobs) as pool_of_run:
            in_units = score and pool_of_run.parallel
            steps = _score_first(store, settings, now) if score and not in_units else {}

            def unit(series: tuple[str, Timeframe]) -> SeriesCycle:
                done = cycle_series(store, pool.client(), settings, series[0], series[1], now, listed,
                                    forecast=forecast, progress=progress, workers=pool_of_run, score=in_units)
                if on_unit is not None:
                    on_unit(pool_of_run, now, series[0], series[1])
                return done

            with ThreadPoolExecutor(settings.exchange_concurrency, thread_name_prefix="series") as executor:
                done = list(executor.map(unit, settings.series()))
            used = pool_of_run.workers if pool_of_run.parallel else 1
        for item in done:
            item.score = item.score or steps.get((item.ingest.symbol, item.ingest.timeframe))
            item.ingest.clock_note = item.ingest.clock_note or pool.clock_note
        return SeriesRun(done, now, time.monotonic() - began, pool.throttle.requests - requests_before,
                         pool.throttle.mean_interval_ms(), workers=used)


def run_ingest_all(settings: Settings, store: CandleStore, *, symbols: Iterable[str] | None = None,
                   timeframes: Iterable[str] | None = None, now_ms: int | None = None,
                   progress: Progress | None = None) -> IngestReport:
    """Ingest only (no forecast) every configured series; the CLI ``ingest`` command."""
    run = run_series(store, settings.narrowed(symbols, timeframes), now_ms=now_ms, forecast=False, progress=progress)
    return run.ingest
