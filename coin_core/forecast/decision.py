"""A promotion-gate decision: the one ticket :func:`registry.promote` accepts.

Built by ``coin_core.lifecycle.gate.decide`` from evaluation numbers; kept here, beside the
registry, so the registry can demand one without importing the evaluation machinery.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from ..timeframes import Timeframe

__all__ = ["GateDecision"]


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
