"""What the lifecycle shows: the track record of a series (site) and plain lines (CLI).

:func:`track_record` gathers, per series, the serving model and its shadows, their live skill
(MASE against naive, realised 50 %/80 % coverage, points scored), the last gate decisions and
events, the retrain triggers and the served model's recent one-step forecasts against realised
closes. Nothing here writes.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..config import Settings
from ..forecast import registry
from ..forecast.events import ModelEvent
from ..timeframes import Timeframe, to_datetime
from .scorebook import ScoreBook, Skill
from .triggers import Trigger, read_triggers

__all__ = ["ModelRecord", "ChartPoint", "TrackRecord", "track_record", "serving_statement", "model_lines", "event_lines"]

CHART_POINTS = 72
DECISION_KINDS = ("promoted", "rejected", "demoted", "rolled_back")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelRecord(_Model):
    version: str
    model: str
    role: str = Field(description="champion, challenger or baseline")
    trained_at: int
    live_points: int = Field(description="realised forecast points scored")
    live_mase: float | None = Field(description="MAE over the naive forecast's MAE on the same points")
    coverage80: float | None
    coverage50: float | None


class ChartPoint(_Model):
    ts: int = Field(description="target candle open time, UTC ms")
    y: float = Field(description="realised close")
    yhat: float
    lower80: float
    upper80: float
    lower50: float | None
    upper50: float | None


class TrackRecord(_Model):
    symbol: str
    timeframe: Timeframe
    serving: str | None = Field(description="version of the model that serves")
    serving_model: str | None
    serving_is_baseline: bool
    statement: str = Field(description="in plain words: does the served model beat naive?")
    live_mase: float | None
    coverage80: float | None
    coverage50: float | None
    scored_points: int
    scored_forecasts: int
    models: list[ModelRecord]
    decisions: list[ModelEvent]
    events: list[ModelEvent]
    triggers: list[Trigger]
    chart: list[ChartPoint]


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def serving_statement(model: str | None, skill: Skill) -> str:
    """One sentence for the site: what serves, and whether it beats the naive forecast."""
    if model is None:
        return "No model serves this series yet."
    if model == "naive":
        return ("No model beats the naive forecast (the next price equals the last one) on this series yet, "
                "so the naive baseline is served.")
    if model == "drift":
        return "No fitted model beats the baselines here, so the drift baseline (the recent average trend) is served."
    if skill.mase is None:
        return f"The {model} model serves; its live record against naive starts once its forecasts are scored."
    verdict = "beats" if skill.mase < 1 else ("ties" if skill.mase == 1 else "trails")
    return f"The {model} model serves and {verdict} the naive forecast so far (MASE {skill.mase:.2f} on {skill.n} points)."


def _record(book: ScoreBook, settings: Settings, entry: registry.RegisteredModel) -> ModelRecord:
    meta = entry.metadata
    skill = book.skill(meta.symbol, meta.timeframe, meta.model_version)
    return ModelRecord(version=meta.model_version, model=meta.spec.name, role=entry.role, trained_at=meta.trained_at,
                       live_points=skill.n, live_mase=_r(skill.mase), coverage80=_r(skill.coverage80),
                       coverage50=_r(skill.coverage50))


def track_record(settings: Settings, book: ScoreBook, symbol: str, tf: Timeframe, *, since: int | None = None) -> TrackRecord:
    """The live track record of one series (``since``: oldest chart target, UTC ms)."""
    found = registry.registered(settings, symbol, tf)
    champion = next((m for m in found if m.role == "champion"), None)
    served = book.skill(symbol, tf, role="champion")  # what the site showed, whichever model it was
    events = registry.model_events(settings, symbol, tf)
    check = read_triggers(settings, symbol, tf)
    rows = book.rows(symbol, tf, role="champion", step=1, since_target=since)[-CHART_POINTS:]
    name = champion.metadata.spec.name if champion else None
    return TrackRecord(
        symbol=symbol, timeframe=tf, serving=champion.version if champion else None, serving_model=name,
        serving_is_baseline=name in registry.BASELINES, statement=serving_statement(name, served),
        live_mase=_r(served.mase), coverage80=_r(served.coverage80), coverage50=_r(served.coverage50),
        scored_points=served.n, scored_forecasts=book.forecasts_scored(symbol, tf, role="champion"),
        models=[_record(book, settings, m) for m in found],
        decisions=[e for e in events if e.kind in DECISION_KINDS][-5:][::-1], events=events[-20:][::-1],
        triggers=check.triggers if check else [],
        chart=[ChartPoint(ts=r.target_ts, y=r.y, yhat=r.yhat, lower80=r.lo80, upper80=r.hi80, lower50=r.lo50,
                          upper50=r.hi50) for r in rows],
    )


def _when(ms: int) -> str:
    return to_datetime(ms).strftime("%Y-%m-%d %H:%M")


def model_lines(settings: Settings) -> list[str]:
    """``coin-predict models``: one block per series."""
    from .scoring import open_scorebook

    book = open_scorebook(settings)
    lines: list[str] = []
    try:
        for symbol, tf in settings.series(predicted_only=True):
            record = track_record(settings, book, symbol, tf)
            lines.append(f"{symbol} {tf}: {record.statement}")
            for m in record.models:
                mase = "-" if m.live_mase is None else f"{m.live_mase:.3f}"
                cov = "-" if m.coverage80 is None else f"{m.coverage80:.0%}"
                lines.append(f"  {m.role:<10} {m.version:<34} live MASE {mase:>6}  80% cover {cov:>4}  points {m.live_points}")
            for e in record.decisions[:3]:
                lines.append(f"  last decision {_when(e.at)} {e.kind} {e.version}: {e.reason}")
            lines += [f"  retrain trigger: {t.kind}: {t.detail}" for t in record.triggers]
    finally:
        book.close()
    return lines


def event_lines(settings: Settings, symbol: str, tf: Timeframe, limit: int) -> list[str]:
    """``coin-predict events``: the latest ``limit`` events, oldest first."""
    events = registry.model_events(settings, symbol, tf)[-max(1, limit):]
    return [f"#{e.seq:<4} {_when(e.at)} {e.kind:<11} by {e.actor:<8} {e.version or '-'}  {e.reason}"
            + (f"  {e.metrics}" if e.metrics else "") for e in events]
