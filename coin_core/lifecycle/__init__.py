"""Model lifecycle: live scoring of every forecast, the promotion gate, demotion, retrain triggers.

The registry (``coin_core.forecast.registry``) holds the roles and the one gated way to change a
champion; this package decides *when*: from backtests (``coin_core.evaluation``) and the live
track record it keeps (:class:`ScoreBook`).
"""

from __future__ import annotations

from .gate import Thresholds, bootstrap_decision, decide, demotion
from .promotion import GateOutcome, check_demotion, run_gate
from .scorebook import SCORES_FILE, ScoreBook, ScoreRow, Skill
from .scoring import ScoreReport, open_scorebook, score_series
from .steps import ScoreStep, score_all

__all__ = [
    "Thresholds", "bootstrap_decision", "decide", "demotion",
    "GateOutcome", "check_demotion", "run_gate",
    "SCORES_FILE", "ScoreBook", "ScoreRow", "Skill",
    "ScoreReport", "open_scorebook", "score_series",
    "ScoreStep", "score_all",
]
