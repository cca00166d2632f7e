"""A promotion-gate decision: the one ticket :func:`registry.promote` accepts.

Built by ``coin_core.lifecycle.gate.decide`` from evaluation numbers; kept here, beside the
registry, so the registry can demand one without importing the evaluation machinery.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from ..timeframes import Timeframe

if TYPE_CHECKING:
    from .registry import RegisteredModel

__all__ = ["GateDecision", "bootstrap_decision"]


class GateDecision(BaseModel):
    """Whether ``candidate`` may replace ``champion_before``, and the numbers that say why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str
    timeframe: Timeframe
    decided_at: int
    candidate: str = Field(description="model version judged")
    candidate_role: str = Field(description="challenger or baseline")
    champion_before: str | None = Field(description="the champion when the decision was made")
    passed: bool
    bootstrap: bool = Field(default=False, description="a baseline serving a series that had no champion")
    reasons: list[str] = Field(default_factory=list)
    metrics: dict[str, float | int | str | None] = Field(default_factory=dict)

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons) or ("passed" if self.passed else "rejected")


def bootstrap_decision(baseline: "RegisteredModel", now_ms: int, replacing: str | None = None) -> GateDecision:
    """The gate's rule for a series without a (readable) champion: a baseline serves now, until a
    candidate passes the gate (naive needs no expensive fit: a fresh install serves at once).

    ``replacing``: the champion whose artifact can no longer be read, if any.
    """
    if baseline.role != "baseline":
        raise ValueError("only a baseline bootstraps a series")
    meta = baseline.metadata
    why = f"champion {replacing} is unreadable" if replacing else "no champion yet"
    return GateDecision(symbol=meta.symbol, timeframe=meta.timeframe, decided_at=now_ms, candidate=meta.model_version,
                        candidate_role="baseline", champion_before=replacing, passed=True, bootstrap=True,
                        reasons=[f"{why}: the {meta.spec.name} baseline serves until a candidate passes the gate"])
