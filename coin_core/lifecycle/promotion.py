"""Train -> evaluate -> gate -> promote, and the live demotion check, for one series.

:func:`run_gate` evaluates the champion and every shadow on the same rolling origins
(``coin_core.evaluation``), asks the gate about each shadow (adding live scores on common
origins when there are enough), promotes the best one that passes and logs every rejected
challenger with its numbers. When nothing passes and the champion itself loses to naive, the
naive baseline serves instead: the site then says so. :func:`check_demotion` is the cycle's
live counterpart. Both change the champion only through the registry's gated functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Sequence

from ..config import Settings
from ..errors import LockError
from ..forecast import registry
from ..forecast.decision import GateDecision
from ..forecast.events import Actor
from ..forecast.predict import ensure_champion
from ..forecast.registry import RegisteredModel
from ..storage.base import CandleStore
from ..symbols import parse_symbol
from ..timeframes import Timeframe, parse_timeframe
from .gate import ScoreLike, decide, demotion, live_pair
from .scorebook import ScoreBook

if TYPE_CHECKING:
    from ..evaluation import SeriesEvaluation

__all__ = ["GateOutcome", "run_gate", "check_demotion", "evaluate_registered"]

log = logging.getLogger(__name__)

GateStatus = Literal["promoted", "kept", "demoted", "insufficient_data", "refused"]


@dataclass(frozen=True)
class GateOutcome:
    symbol: str
    timeframe: Timeframe
    status: GateStatus
    champion: str | None
    decisions: list[GateDecision] = field(default_factory=list)
    message: str = ""


def evaluate_registered(store: CandleStore, settings: Settings, symbol: str, tf: Timeframe,
                        models: Sequence[RegisteredModel], now_ms: int) -> tuple[dict[str, ScoreLike], "SeriesEvaluation"]:
    """Backtest scores by spec hash; specs sharing a name (two Prophet specs) go in separate rounds."""
    from ..evaluation import evaluate_series

    rounds: list[dict[str, object]] = []
    for spec in {m.metadata.spec.spec_hash: m.metadata.spec for m in models}.values():
        slot = next((r for r in rounds if spec.name not in r), None)
        if slot is None:
            rounds.append(slot := {})
        slot[spec.name] = spec
    scores: dict[str, ScoreLike] = {}
    first: SeriesEvaluation | None = None
    for specs in rounds:
        ev = evaluate_series(store, settings, symbol, tf, list(specs.values()), now_ms=now_ms)  # type: ignore[arg-type]
        first = first or ev
        scores.update({s.spec.spec_hash: s for s in ev.scores.values()})
    assert first is not None
    return scores, first


def _best(decisions: list[GateDecision]) -> GateDecision | None:
    passed = [d for d in decisions if d.passed]
    return min(passed, key=lambda d: float(d.metrics.get("mase") or 9e9)) if passed else None


def run_gate(store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, *, actor: Actor, now_ms: int,
             book: ScoreBook | None = None) -> GateOutcome:
    """Evaluate, decide, promote (or keep, or fall back to naive); every decision is logged."""
    symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
    if store.count(symbol, tf) < max(settings.policy(tf).min_samples, 2):
        return GateOutcome(symbol, tf, "insufficient_data", None, message="too few candles to serve a model")
    ensure_champion(store, settings, symbol, tf, now_ms, heal=True, actor=actor)  # a baseline serves meanwhile
    found = registry.registered(settings, symbol, tf, intact=True)
    champion = next((m for m in found if m.role == "champion"), None)
    shadows = [m for m in found if m.role != "champion"]
    scores, ev = evaluate_registered(store, settings, symbol, tf, found, now_ms)
    if ev.status != "ok":
        return GateOutcome(symbol, tf, "insufficient_data", champion.version if champion else None, message=ev.message)
    champ_score = scores.get(champion.metadata.spec.spec_hash) if champion else None
    decisions = [decide(settings, m, champion, candidate_score=scores.get(m.metadata.spec.spec_hash),
                        champion_score=champ_score, now_ms=now_ms,
                        live=live_pair(book, symbol, tf, m.version, champion.version) if book and champion else None)
                 for m in shadows]
    best = _best(decisions)
    for decision in decisions:
        if decision is not best and decision.candidate_role == "challenger":
            registry.record_rejection(settings, decision, actor=actor, now_ms=now_ms)
    if best is not None:
        try:
            registry.promote(settings, best, actor=actor, now_ms=now_ms)
        except LockError as exc:
            return GateOutcome(symbol, tf, "refused", champion.version if champion else None, decisions, str(exc))
        return GateOutcome(symbol, tf, "promoted", best.candidate, decisions, best.summary)
    return _fallback(settings, symbol, tf, champion, champ_score, decisions, actor, now_ms)


def _fallback(settings: Settings, symbol: str, tf: Timeframe, champion: RegisteredModel | None,
              score: ScoreLike | None, decisions: list[GateDecision], actor: Actor, now_ms: int) -> GateOutcome:
    """No candidate passed: keep the champion, unless it loses to naive itself."""
    version = champion.version if champion else None
    if champion is None or score is None or score.mase is None or score.mase <= settings.gate_max_mase \
            or champion.metadata.spec.name == "naive":
        return GateOutcome(symbol, tf, "kept", version, decisions, "no candidate passed the gate")
    metrics = {"mase": round(float(score.mase), 4), "origins": score.n_origins, "max_mase": settings.gate_max_mase}
    try:
        registry.demote(settings, symbol, tf, "naive", actor=actor, metrics=metrics, expect_champion=champion.version,
                        reason=f"no model beats naive: the champion's backtest MASE is {score.mase:.3f}", now_ms=now_ms)
    except LockError as exc:
        return GateOutcome(symbol, tf, "refused", version, decisions, str(exc))
    return GateOutcome(symbol, tf, "demoted", registry.read_pointer(settings, symbol, tf).version,  # type: ignore[union-attr]
                       decisions, "no model beats naive: the naive baseline serves")


def check_demotion(settings: Settings, book: ScoreBook, symbol: str, tf: Timeframe, *, now_ms: int,
                   actor: Actor = "schedule") -> str | None:
    """Demote a champion whose latest live points lose to naive; returns the new champion or None."""
    found = registry.registered(settings, symbol, tf)
    champion = next((m for m in found if m.role == "champion"), None)
    metrics = demotion(settings, book, champion) if champion else None
    if champion is None or metrics is None:
        return None
    window = settings.demote_window_points
    try:
        event = registry.demote(
            settings, symbol, tf, "naive", actor=actor, metrics=metrics, expect_champion=champion.version, now_ms=now_ms,
            reason=f"live MASE {metrics['live_mase']} over the last {window} scored points is worse than naive")
    except LockError as exc:
        log.warning("demotion of %s %s refused: %s", symbol, tf, exc)
        return None
    log.warning("demoted %s of %s %s to the naive baseline: %s", champion.version, symbol, tf, event.reason)
    return event.champion_after
