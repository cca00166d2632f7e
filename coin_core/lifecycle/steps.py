"""The cycle's scoring step over every predicted series: score what closed, then check demotion.

One call for all series (the CLI's ``run_cycle`` and the Prefect ``cycle`` flow alike), so a
cycle of 500 series is one step, not 1,000 orchestrated task runs. A series whose scoring or
demotion check fails is reported in its own row and never stops the others; the next cycle
finishes its work (scoring is incremental and idempotent).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..config import Settings
from ..errors import CoinPredictError
from ..forecast.predict import short_error
from ..storage import CandleStore
from ..timeframes import Timeframe
from .promotion import check_demotion
from .scorebook import ScoreBook
from .scoring import score_series

__all__ = ["ScoreStep", "score_all"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreStep:
    """One series' outcome of the scoring step."""

    scored: int = 0
    demoted_to: str = ""
    error: str = ""

    def columns(self) -> dict[str, object]:
        """The columns of the cycle's table artifact."""
        return {"scored": self.scored, "demoted to": self.demoted_to, "score error": self.error}


def _one(store: CandleStore, settings: Settings, book: ScoreBook, symbol: str, tf: Timeframe, now_ms: int) -> ScoreStep:
    try:
        scored = score_series(store, settings, book, symbol, tf, now_ms=now_ms).scored
        demoted = check_demotion(settings, book, symbol, tf, now_ms=now_ms)
    except CoinPredictError as exc:
        log.error("scoring of %s %s failed: %s", symbol, tf, short_error(exc))
        return ScoreStep(error=short_error(exc))
    return ScoreStep(scored=scored, demoted_to=demoted or "")


def score_all(store: CandleStore, settings: Settings, book: ScoreBook, now_ms: int) -> dict[tuple[str, Timeframe], ScoreStep]:
    """Score and check demotion for every predicted series of ``settings``, in order."""
    return {(symbol, tf): _one(store, settings, book, symbol, tf, now_ms)
            for symbol, tf in settings.series(predicted_only=True)}
