"""One retrain of one series, however it was started: fit every candidate, then gate, as one unit.

Used by the CLI (``coin-predict train``); the train flow wires the same steps as tasks. Every
candidate (the timeframe's shared spec, the challengers, both baselines) is fitted and registered
as a shadow (``train_series`` never promotes), then :func:`run_gate` evaluates and decides. The
caller republishes the site afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import Settings
from ..errors import DataValidationError, ModelError
from ..forecast.base import ModelSpec
from ..forecast.events import Actor
from ..forecast.specs import default_lookback
from ..forecast.training import TrainResult, train_series
from ..storage.base import CandleStore
from ..timeframes import Timeframe
from .promotion import GateOutcome, run_gate
from .scorebook import ScoreBook

__all__ = ["RetrainReport", "training_specs", "retrain_series"]


@dataclass
class RetrainReport:
    symbol: str
    timeframe: Timeframe
    fits: dict[str, str] = field(default_factory=dict)  # spec name -> status + version or error
    gate: GateOutcome | None = None
    error: str | None = None


def training_specs(tf: Timeframe) -> list[ModelSpec]:
    """What a retrain fits: both baselines, the shared spec and the challengers (evaluation's list)."""
    from ..evaluation import candidate_specs

    return candidate_specs(tf)


def _fit(store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, spec: ModelSpec, lookback: int | None,
         actor: Actor, now_ms: int) -> str:
    try:
        result: TrainResult = train_series(store, settings, symbol, tf, lookback=lookback, spec=spec, now_ms=now_ms,
                                           actor=actor)
    except (ModelError, DataValidationError) as exc:  # one candidate's failure never stops the others
        return f"failed: {exc}"
    return f"{result.status} {result.model_version or ''}".strip()


def retrain_series(store: CandleStore, settings: Settings, book: ScoreBook | None, symbol: str, tf: Timeframe, *,
                   lookback: int | None, actor: Actor, now_ms: int) -> RetrainReport:
    """Fit every candidate, then evaluate, gate and (maybe) promote."""
    report = RetrainReport(symbol, tf)
    lookback = lookback if lookback is not None else default_lookback(tf)
    for spec in training_specs(tf):
        report.fits[spec.name] = _fit(store, settings, symbol, tf, spec, lookback, actor, now_ms)
    try:
        report.gate = run_gate(store, settings, symbol, tf, actor=actor, now_ms=now_ms, book=book)
    except (ModelError, DataValidationError) as exc:
        report.error = f"gate failed: {exc}"
    return report
