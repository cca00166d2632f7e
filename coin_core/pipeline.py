"""Whole-product steps the CLI runs in one process (the Prefect flows wire the same functions)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Iterable

from pydantic import BaseModel

from .config import Settings
from .errors import StorageError
from .ingest import IngestReport, Progress
from .storage import open_store
from .workers import Workers, pool_size

if TYPE_CHECKING:
    from .forecast.base import ModelSpec
    from .forecast.events import Actor
    from .forecast.training import TrainResult
    from .lifecycle.retrain import RetrainReport
    from .publish import PublishReport
    from .storage import CandleStore

__all__ = ["CycleReport", "NO_CANDLES", "without_candles", "train_candidates", "run_train", "run_score", "run_forecast",
           "run_publish", "run_cycle"]

log = logging.getLogger(__name__)

#: The result of a series with nothing stored: no model, no forecast and no status file for it.
NO_CANDLES = "no candles stored: run `coin-predict ingest` first"


def without_candles(store: "CandleStore", series: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The series that have nothing stored: asked for by name, they fail with :data:`NO_CANDLES`."""
    return [(symbol, tf) for symbol, tf in series if store.count(symbol, tf) == 0]


class CycleReport(BaseModel):
    ingest: IngestReport
    forecasts: dict[str, str]
    published_files: int
    seconds: float
    units_seconds: float = 0.0
    requests: int = 0
    workers: int = 1
    scores: dict[str, str] = {}
    early_series: int = 0  # series whose files were rendered while the units ran (publish.early)


def train_candidates(settings: Settings, symbol: str, tf: str, lookback: int | None, specs: "list[ModelSpec]",
                     actor: "Actor") -> "list[TrainResult | str]":
    """Fit every candidate of one series on one store connection (what a Dask worker runs).

    One entry per spec, in order: its result, or the one-line error of the candidate that could
    not be fitted (the others still are).
    """
    from .errors import CoinPredictError
    from .forecast.predict import short_error
    from .forecast.training import data_range, read_history, train_series

    results: list[TrainResult | str] = []
    with open_store(settings) as store:
        rng = data_range(store, symbol, tf, lookback)
        history = read_history(store, symbol, tf, rng) if rng is not None and rng.row_count else None  # read once
        for spec in specs:
            try:
                results.append(train_series(store, settings, symbol, tf, lookback=lookback, spec=spec, actor=actor,
                                            history=history))
            except CoinPredictError as exc:
                log.warning("%s %s %s not fitted: %s", symbol, tf, spec.name, short_error(exc))
                results.append(short_error(exc))
    return results


def run_train(settings: Settings, *, symbols: Iterable[str] | None = None, timeframes: Iterable[str] | None = None,
              lookback: int | None = None, actor: "Actor" = "cli",
              now_ms: int | None = None) -> dict[str, "RetrainReport | str"]:
    """Fit every candidate of every series, then evaluate, gate and publish: never an ungated swap.

    A series with no stored candle is reported as :data:`NO_CANDLES`; when no series had any,
    nothing is fitted and the site is left as it is.
    """
    from .lifecycle import open_scorebook
    from .lifecycle.retrain import retrain_series

    selected = settings.narrowed(symbols, timeframes)
    lookback = selected.check_lookback(lookback)
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    reports: dict[str, RetrainReport | str] = {}
    try:
        book = open_scorebook(settings)
    except StorageError as exc:  # the gate then judges on backtests alone
        log.warning("live scores unavailable to the gate: %s", exc)
        book = None
    with open_store(settings) as store:
        try:
            for symbol, tf in selected.predicted_series():
                if store.count(symbol, tf) == 0:
                    reports[f"{symbol} {tf}"] = NO_CANDLES
                    continue
                reports[f"{symbol} {tf}"] = retrain_series(store, settings, book, symbol, tf, lookback=lookback,
                                                           actor=actor, now_ms=now)
        finally:
            if book is not None:
                book.close()
    if any(not isinstance(r, str) for r in reports.values()):
        run_publish(settings, now_ms=now)
    return reports


def run_score(settings: Settings, *, now_ms: int, symbols: Iterable[str] | None = None,
              timeframes: Iterable[str] | None = None, workers: "Workers | None" = None) -> dict[str, str]:
    """Score realised candles of every series, then demote a champion whose live skill lost to naive.

    Never on threads: scored on worker threads, a 7-day soak's RSS grew 12 MiB (likely
    per-thread malloc arenas keeping the scoring's pandas memory; docs/benchmarks.md). Many
    series are split between worker processes instead (``workers``, or a pool of its own).
    """
    from .lifecycle import open_scorebook, score_all

    with open_store(settings) as store, open_scorebook(settings) as book:
        steps = score_all(store, settings.narrowed(symbols, timeframes), book, now_ms, workers)
    return {f"{symbol} {tf}": step.summary() for (symbol, tf), step in steps.items()}


def run_forecast(settings: Settings, *, now_ms: int, symbols: Iterable[str] | None = None,
                 timeframes: Iterable[str] | None = None) -> dict[str, str]:
    """Forecast every predicted series from its latest closed candle; returns series -> status.

    A series with no stored candle is reported as :data:`NO_CANDLES` and leaves no status record.
    """
    from .forecast.predict import forecast_series

    results: dict[str, str] = {}
    with open_store(settings) as store:
        for symbol, tf in settings.narrowed(symbols, timeframes).series(predicted_only=True):
            if store.count(symbol, tf) == 0:
                results[f"{symbol} {tf}"] = NO_CANDLES
                continue
            outcome = forecast_series(store, settings, symbol, tf, now_ms=now_ms)
            results[f"{symbol} {tf}"] = outcome.status + (f" ({outcome.error})" if outcome.error else "")
    return results


def run_publish(settings: Settings, *, now_ms: int) -> "PublishReport":
    from .publish import publish_site

    with open_store(settings) as store:
        return publish_site(store, settings, now_ms=now_ms)


def run_cycle(settings: Settings, *, symbols: Iterable[str] | None = None, timeframes: Iterable[str] | None = None,
              now_ms: int | None = None, progress: Progress | None = None,
              markets: dict[str, dict[str, Any]] | None = None) -> CycleReport:
    """The per-series unit (ingest -> gate -> forecast) for every series, then publish: the
    same chain as the Prefect ``cycle`` flow. Publish covers every configured series.

    ``markets``: a market snapshot (``ExchangeClient.market_snapshot``), as the flow serves it
    from its cached ``exchange-markets`` task; None loads the exchange's market list first.
    """
    from .cycle import run_series

    began = time.monotonic()
    chosen = settings.narrowed(symbols, timeframes)  # a bad selection fails before anything is fetched
    from .publish import publish_site
    from .publish.early import EarlyPublish

    # One pool of worker processes for the whole cycle (score, forecasts, pages); a series' files
    # are rendered when its unit is done and a worker is idle (publish.early), publish does the rest.
    with Workers(pool_size(settings.cpu_workers, len(settings.series()))) as workers, EarlyPublish(settings) as early:
        with open_store(settings) as store:  # each series scored first: a demotion serves at once
            run = run_series(store, chosen, now_ms=now_ms, progress=progress, workers=workers, score=True, markets=markets,
                             on_unit=early.series_done)
            report = publish_site(store, settings, now_ms=run.now_ms, workers=workers, early=early)
    forecasts = {name: out.status + (f" ({out.error})" if out.error else "") for name, out in run.forecasts.items()}
    scores = {f"{u.ingest.symbol} {u.ingest.timeframe}": u.score.summary() for u in run.series if u.score is not None}
    return CycleReport(ingest=run.ingest, forecasts=forecasts, published_files=len(report.written),
                       seconds=time.monotonic() - began, units_seconds=run.seconds, requests=run.requests,
                       workers=run.workers, scores=scores, early_series=report.early)
