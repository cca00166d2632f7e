"""The promotion gate: may a candidate replace the champion? A decision with its numbers.

A candidate passes only if, on the same origins,

* it ties or beats naive: backtest MASE <= ``GATE_MAX_MASE`` (1.00);
* its 80 % band is calibrated: backtest coverage in [``GATE_COVERAGE80_MIN``, ``_MAX``];
* it beats the champion's backtest MASE (a refit of the champion's own spec on newer data has,
  by construction, the same backtest: it passes on the two bars above);
* and, once both have at least ``GATE_MIN_LIVE_POINTS`` live scores on common forecast origins,
  its live MASE there is no worse than the champion's.

A series with no champion bootstraps through :func:`bootstrap_decision`: a registered baseline
serves at once, until a candidate passes. Demotion (:func:`demotion`) is the live counterpart:
a champion whose latest live points lose to naive gives way to the best baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..config import Settings
from ..forecast.decision import GateDecision, bootstrap_decision
from ..forecast.registry import RegisteredModel
from .scorebook import ScoreBook, Skill

__all__ = ["Thresholds", "ScoreLike", "decide", "bootstrap_decision", "demotion", "live_pair"]


class ScoreLike(Protocol):
    """What the gate reads of an evaluation score (``coin_core.evaluation.ModelScore``)."""

    n_origins: int
    mase: float | None
    coverage80: float | None


@dataclass(frozen=True)
class Thresholds:
    max_mase: float
    coverage_min: float
    coverage_max: float
    min_live: int

    @classmethod
    def of(cls, settings: Settings) -> "Thresholds":
        return cls(settings.gate_max_mase, settings.gate_coverage80_min, settings.gate_coverage80_max,
                   settings.gate_min_live_points)


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def live_pair(book: ScoreBook, symbol: str, tf: str, candidate: str, champion: str) -> tuple[Skill, Skill]:
    """Both versions' live skill on the forecast points both of them issued."""
    return (book.skill(symbol, tf, candidate, on_issues_of=champion),
            book.skill(symbol, tf, champion, on_issues_of=candidate))


def _bars(score: ScoreLike | None, t: Thresholds, reasons: list[str]) -> bool:
    if score is None or not score.n_origins or score.mase is None or score.coverage80 is None:
        reasons.append("not evaluated: too little data for a backtest")
        return False
    ok = True
    if score.mase > t.max_mase:
        reasons.append(f"loses to naive: MASE {score.mase:.3f} > {t.max_mase:.2f}")
        ok = False
    if not t.coverage_min <= score.coverage80 <= t.coverage_max:
        reasons.append(f"80 % band covers {score.coverage80:.0%}, outside {t.coverage_min:.0%}-{t.coverage_max:.0%}")
        ok = False
    return ok


def _beats(cand: ScoreLike | None, champ: ScoreLike | None, same_spec: bool, reasons: list[str]) -> bool:
    if same_spec:
        reasons.append("refit of the champion's spec on newer data")
        return True
    if champ is None or champ.mase is None or cand is None or cand.mase is None:
        reasons.append("champion has no backtest to compare with")
        return True
    if cand.mase < champ.mase:
        reasons.append(f"beats the champion: MASE {cand.mase:.3f} < {champ.mase:.3f}")
        return True
    reasons.append(f"does not beat the champion: MASE {cand.mase:.3f} >= {champ.mase:.3f}")
    return False


def _live(pair: tuple[Skill, Skill] | None, t: Thresholds, same_spec: bool, reasons: list[str]) -> bool:
    if pair is None or pair[0].n < t.min_live or pair[0].mase is None or pair[1].mase is None:
        return True
    cand, champ = pair
    worse = cand.mase > champ.mase if same_spec else cand.mase >= champ.mase
    if worse:
        reasons.append(f"live on {cand.n} common points: MASE {cand.mase:.3f} vs champion {champ.mase:.3f}")
    return not worse


def decide(
    settings: Settings, candidate: RegisteredModel, champion: RegisteredModel | None, *,
    candidate_score: ScoreLike | None, champion_score: ScoreLike | None,
    live: tuple[Skill, Skill] | None, now_ms: int,
) -> GateDecision:
    """The gate's verdict on ``candidate`` against ``champion`` (None: the series has none)."""
    t = Thresholds.of(settings)
    meta = candidate.metadata
    same = champion is not None and champion.metadata.spec.spec_hash == meta.spec.spec_hash
    reasons: list[str] = []
    passed = _bars(candidate_score, t, reasons)
    passed = _beats(candidate_score, champion_score, same, reasons) and passed if champion is not None else passed
    passed = _live(live, t, same, reasons) and passed
    metrics = {
        "mase": _r(getattr(candidate_score, "mase", None)), "coverage80": _r(getattr(candidate_score, "coverage80", None)),
        "origins": getattr(candidate_score, "n_origins", 0), "champion_mase": _r(getattr(champion_score, "mase", None)),
        "live_points": live[0].n if live else 0, "live_mase": _r(live[0].mase) if live else None,
        "champion_live_mase": _r(live[1].mase) if live else None,
        "max_mase": t.max_mase, "coverage80_min": t.coverage_min, "coverage80_max": t.coverage_max,
    }
    return GateDecision(symbol=meta.symbol, timeframe=meta.timeframe, decided_at=now_ms, candidate=meta.model_version,
                        candidate_role=candidate.role, champion_before=champion.version if champion else None,
                        passed=passed, reasons=reasons, metrics=metrics)


def demotion(settings: Settings, book: ScoreBook, champion: RegisteredModel) -> dict[str, float | int | str | None] | None:
    """The numbers that demote ``champion`` (its latest live points lose to naive), else None."""
    meta = champion.metadata
    if meta.spec.name == "naive":
        return None
    window = settings.demote_window_points
    skill = book.skill(meta.symbol, meta.timeframe, meta.model_version, last_n=window)
    if skill.n < window or skill.mase is None or skill.mase <= settings.demote_max_mase:
        return None
    return {"live_points": skill.n, "live_mase": _r(skill.mase), "coverage80": _r(skill.coverage80),
            "demote_max_mase": settings.demote_max_mase}
