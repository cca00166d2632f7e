"""Which specs an evaluation compares by default: both baselines, the champion spec, the challengers."""

from __future__ import annotations

from ..forecast.base import ModelSpec
from ..forecast.specs import shared_spec
from ..timeframes import Timeframe

__all__ = ["BASELINE_SPECS", "CHALLENGER_SPECS", "candidate_specs"]

BASELINE_SPECS: tuple[ModelSpec, ...] = (ModelSpec(name="naive"), ModelSpec(name="drift"))
CHALLENGER_SPECS: tuple[ModelSpec, ...] = (ModelSpec(name="ets"),)


def candidate_specs(tf: Timeframe) -> list[ModelSpec]:
    """Baselines first, then the timeframe's shared (Prophet) spec and the challengers."""
    return [*BASELINE_SPECS, shared_spec(tf), *CHALLENGER_SPECS]
