"""Rolling-origin evaluation of forecasting models on stored series.

``evaluate_series`` replays production (same lookback, same data path, weekly refits, forecasts
from the latest closed candle) at many origins with no look-ahead, calibrates every model's bands
with :mod:`coin_core.forecast.bands` from errors realised before each origin, and scores each model
against naive on the same points. Results persist under ``DATA_DIR/evaluation/``.
"""

from __future__ import annotations

from .engine import default_workers, evaluate_many, evaluate_series
from .plan import CALIBRATION_ORIGINS, DEFAULT_ORIGINS, MIN_SCORED, REFIT_EVERY, STRIDE
from .results import ModelScore, SeriesEvaluation, StepScore, evaluation_path, load_evaluation, save_evaluation
from .specs import BASELINE_SPECS, candidate_specs

__all__ = [
    "ModelScore", "StepScore", "SeriesEvaluation", "evaluate_series", "evaluate_many", "default_workers",
    "save_evaluation", "load_evaluation", "evaluation_path",
    "DEFAULT_ORIGINS", "CALIBRATION_ORIGINS", "MIN_SCORED", "STRIDE", "REFIT_EVERY",
    "BASELINE_SPECS", "candidate_specs",
]
