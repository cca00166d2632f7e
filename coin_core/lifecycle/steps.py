"""The cycle's scoring step over every predicted series: score what closed, then check demotion.

One call for all series (the CLI's ``run_cycle`` and the Prefect ``cycle`` flow alike), so a
cycle of 500 series is one step, not 1,000 orchestrated task runs. A series whose scoring or
demotion check fails is reported in its own row and never stops the others; the next cycle
finishes its work (scoring is incremental and idempotent).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from dataclasses import dataclass

from ..config import Settings
from ..errors import CoinPredictError
from ..forecast.predict import short_error
from ..storage import CandleStore, kept_store
from ..timeframes import Timeframe
from ..workers import Workers, kept_open, shared_or_own
from .promotion import check_demotion
from .scorebook import ScoreBook
from .scoring import score_series

__all__ = ["ScoreStep", "kept_book", "score_all", "score_apart", "score_one"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreStep:
    """One series' outcome of the scoring step."""

    scored: int = 0
    demoted_to: str = ""
    error: str = ""

    def summary(self) -> str:
        """One line for the command line: what was scored, a demotion, or the failure."""
        if self.error:
            return f"failed: {self.error}"
        return f"{self.scored} point(s) scored" + (f", demoted to {self.demoted_to}" if self.demoted_to else "")

    def columns(self) -> dict[str, object]:
        """The columns of the cycle's table artifact."""
        return {"scored": self.scored, "demoted to": self.demoted_to, "score error": self.error}


def _one(store: CandleStore, settings: Settings, book: ScoreBook, symbol: str, tf: Timeframe, now_ms: int,
         through_ts: int | None = None) -> ScoreStep:
    try:
        scored = score_series(store, settings, book, symbol, tf, now_ms=now_ms, through_ts=through_ts).scored
        demoted = check_demotion(settings, book, symbol, tf, now_ms=now_ms)
    except CoinPredictError as exc:
        log.error("scoring of %s %s failed: %s", symbol, tf, short_error(exc))
        return ScoreStep(error=short_error(exc))
    return ScoreStep(scored=scored, demoted_to=demoted or "")


def kept_book(settings: Settings) -> AbstractContextManager[ScoreBook]:
    """The score book of ``settings`` for one call; a worker process keeps it open across calls."""
    from .scoring import open_scorebook

    return kept_open(f"book {settings.data_dir}", lambda: open_scorebook(settings))


def score_apart(job: tuple[Settings, list[tuple[str, Timeframe, int | None]], int]) -> list[ScoreStep]:
    """Score a few series (symbol, timeframe, through which candle: None for the latest) on a
    store and score book of their own (what a worker process runs)."""
    settings, series, now_ms = job
    try:
        with kept_store(settings) as store, kept_book(settings) as book:
            return [_one(store, settings, book, symbol, tf, now_ms, through) for symbol, tf, through in series]
    except CoinPredictError as exc:  # the store or book cannot be opened: every series says so
        log.error("scoring of %d series failed: %s", len(series), short_error(exc))
        return [ScoreStep(error=short_error(exc))] * len(series)


def score_one(settings: Settings, symbol: str, tf: Timeframe, now_ms: int, through_ts: int | None) -> ScoreStep:
    """One series' score step through candle ``through_ts`` (what closed before the run, so a
    concurrent ingest of the series changes nothing), on a store and book of its own (a worker's call)."""
    return score_apart((settings, [(symbol, tf, through_ts)], now_ms))[0]


def score_all(store: CandleStore, settings: Settings, book: ScoreBook, now_ms: int,
              workers: Workers | None = None) -> dict[tuple[str, Timeframe], ScoreStep]:
    """Score and check demotion for every predicted series of ``settings``.

    Many series are split between worker processes (``CPU_WORKERS``), a few per call; each
    series is still scored, then checked for demotion, before the cycle's units run.
    """
    series = settings.series(predicted_only=True)
    with shared_or_own(workers, settings.cpu_workers, len(series)) as workers:
        if not workers.parallel:
            return {(symbol, tf): _one(store, settings, book, symbol, tf, now_ms) for symbol, tf in series}
        jobs = [(settings, [(symbol, tf, None) for symbol, tf in batch], now_ms) for batch in workers.batches(series)]
        steps = [step for done in workers.map(score_apart, jobs) for step in done]
    return dict(zip(series, steps))

