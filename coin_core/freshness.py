"""The one freshness evaluator: publish, ``status.json`` and the monitor all call :func:`evaluate`.

Status of a served artifact (worst last)::

    fresh       the input's latest candle closed less than ``soft_stale_s`` ago
    stale       older than ``soft_stale_s``: still served, with a warning
    hard_stale  older than ``hard_stale_s``, or nothing to serve at all: blocked
    corrupt     the artifact is unreadable or invalid: blocked

Age is measured from the *close* time of the input's latest candle, never from a file's
``updated_at``: a forecast made from stale candles is itself stale, so a prediction is evaluated
with its ``input_last_ts``. A threshold is crossed when the age is strictly greater than it
(an age exactly equal to ``soft_stale_s`` is still fresh).

Separate signals never change the status; they say something else is wrong:
``degraded`` (this cycle's prediction failed, last good kept), ``insufficient_data`` (below the
minimum-sample gate) and ``hidden_backfilling`` (the series' first backfill has not completed, so
it is not shown; a missing ingest record counts as "not completed").

Everything here is pure: inputs in, a :class:`Freshness` out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Literal

from .health import IngestState, PredictionHealth
from .policy import TimeframePolicy
from .timeframes import Timeframe, close_time, to_datetime

__all__ = [
    "FreshnessStatus",
    "Signal",
    "STATUSES",
    "SIGNALS",
    "BLOCKED",
    "Freshness",
    "evaluate",
    "evaluate_with_policy",
    "signals_for",
    "worst",
    "format_age",
]

FreshnessStatus = Literal["fresh", "stale", "hard_stale", "corrupt"]
Signal = Literal["degraded", "insufficient_data", "hidden_backfilling"]

# Ordered best to worst: worst() and the overall status rely on this order.
STATUSES: tuple[FreshnessStatus, ...] = ("fresh", "stale", "hard_stale", "corrupt")
SIGNALS: tuple[Signal, ...] = ("degraded", "insufficient_data", "hidden_backfilling")
BLOCKED: frozenset[str] = frozenset({"hard_stale", "corrupt"})


@dataclass(frozen=True)
class Freshness:
    """Verdict on one artifact: its status, the separate signals, and whether it may be served."""

    status: FreshnessStatus
    signals: tuple[Signal, ...]
    reason: str
    age_s: float | None
    served: bool

    @property
    def blocked(self) -> bool:
        return self.status in BLOCKED

    @property
    def hidden(self) -> bool:
        return "hidden_backfilling" in self.signals


def format_age(seconds: float) -> str:
    """Compact human age: ``45s``, ``12m``, ``2h 5m``, ``3d 4h``."""
    total = int(max(0.0, seconds))
    days, rem = divmod(total, 86_400)
    hours, rem = divmod(rem, 3_600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{minutes}m" if minutes else f"{secs}s"


def signals_for(
    prediction_health: PredictionHealth | None, ingest_state: IngestState | None
) -> tuple[Signal, ...]:
    """The separate signals of a series, in :data:`SIGNALS` order."""
    found: list[Signal] = []
    if prediction_health is not None and prediction_health.status == "degraded":
        found.append("degraded")
    if prediction_health is not None and prediction_health.status == "insufficient_data":
        found.append("insufficient_data")
    if ingest_state is None or ingest_state.backfill_complete_at is None:
        found.append("hidden_backfilling")
    return tuple(found)


def _classify(
    age_s: float, closed_at_ms: int, soft_stale_s: int, hard_stale_s: int
) -> tuple[FreshnessStatus, str]:
    # The reason names the close time, not the age, so it only changes when the status or the
    # data does: published files that quote it are not rewritten every cycle.
    closed = f"latest candle closed {_utc(closed_at_ms)}"
    if age_s > hard_stale_s:
        return "hard_stale", f"{closed}, more than {format_age(hard_stale_s)} ago (hard limit)"
    if age_s > soft_stale_s:
        return "stale", f"{closed}, more than {format_age(soft_stale_s)} ago (soft limit)"
    return "fresh", closed


def _utc(ts_ms: int) -> str:
    return to_datetime(ts_ms).strftime("%Y-%m-%d %H:%M UTC")


def evaluate(
    *,
    latest_ts: int | None,
    tf: Timeframe,
    now_ms: int,
    soft_stale_s: int,
    hard_stale_s: int,
    corrupt: bool = False,
    corrupt_reason: str = "artifact is unreadable or invalid",
    prediction_health: PredictionHealth | None = None,
    ingest_state: IngestState | None = None,
    missing_reason: str = "no candles stored yet",
) -> Freshness:
    """Freshness of one artifact whose input ends with the candle opened at ``latest_ts``.

    ``latest_ts`` is the series' latest stored candle for history, and the forecast's
    ``input_last_ts`` for a prediction. ``None`` means there is nothing to serve (blocked as
    ``hard_stale`` with ``missing_reason``). ``corrupt`` wins over any age.
    """
    if hard_stale_s < soft_stale_s:
        raise ValueError(f"hard_stale_s ({hard_stale_s}) is below soft_stale_s ({soft_stale_s})")
    signals = signals_for(prediction_health, ingest_state)
    closed_at = None if latest_ts is None else close_time(latest_ts, tf)
    age_s = None if closed_at is None else (now_ms - closed_at) / 1000.0
    if corrupt:
        status, reason = "corrupt", corrupt_reason
    elif closed_at is None or age_s is None:
        status, reason = "hard_stale", missing_reason
    else:
        status, reason = _classify(age_s, closed_at, soft_stale_s, hard_stale_s)
    if "hidden_backfilling" in signals:
        reason = f"hidden until the first backfill completes; {reason}"
    served = status not in BLOCKED and "hidden_backfilling" not in signals
    return Freshness(status=status, signals=signals, reason=reason, age_s=age_s, served=served)


def evaluate_with_policy(
    latest_ts: int | None, tf: Timeframe, now_ms: int, policy: TimeframePolicy, **kwargs: object
) -> Freshness:
    """:func:`evaluate` with the thresholds of a timeframe policy (``settings.policy(tf)``)."""
    return evaluate(
        latest_ts=latest_ts, tf=tf, now_ms=now_ms,
        soft_stale_s=policy.soft_stale_s, hard_stale_s=policy.hard_stale_s, **kwargs,  # type: ignore[arg-type]
    )


def worst(statuses: Iterable[FreshnessStatus]) -> FreshnessStatus | None:
    """The worst status of several (``None`` for none), by :data:`STATUSES` order."""
    ranked = [STATUSES.index(s) for s in statuses]
    return STATUSES[max(ranked)] if ranked else None
