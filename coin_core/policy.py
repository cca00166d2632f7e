"""The timeframe policy matrix: one table that says how each timeframe is handled.

``docs/configuration.md`` renders the same table (a test keeps them in step).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .timeframes import Timeframe

__all__ = ["BackfillMode", "TimeframePolicy", "DEFAULT_POLICIES", "policy_table_markdown"]

BackfillMode = Literal["rolling", "lookback", "full"]

_DAY_S = 86_400


class TimeframePolicy(BaseModel):
    """How one timeframe is collected, kept, served and predicted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    collected: bool = True
    backfill: BackfillMode
    lookback_days: int | None = Field(
        default=None, ge=1, description="rolling/lookback: how far back a first backfill starts"
    )
    retention_days: int | None = Field(default=None, ge=1, description="None keeps everything")
    served_candles: int = Field(ge=1, description="history candles published per series")
    predicted: bool
    horizon: int = Field(ge=0, description="forecast points after the latest closed candle")
    min_samples: int = Field(ge=0, description="fewer stored candles -> insufficient_data")
    soft_stale_s: int = Field(ge=1, description="age of the latest candle's close -> stale")
    hard_stale_s: int = Field(ge=1, description="age of the latest candle's close -> hard_stale")


DEFAULT_POLICIES: dict[Timeframe, TimeframePolicy] = {
    "1m": TimeframePolicy(
        backfill="rolling", lookback_days=180, retention_days=180, served_candles=720,
        predicted=False, horizon=0, min_samples=0, soft_stale_s=3 * 60, hard_stale_s=15 * 60,
    ),
    "1h": TimeframePolicy(
        backfill="lookback", lookback_days=365, served_candles=336,
        predicted=True, horizon=24, min_samples=168, soft_stale_s=75 * 60, hard_stale_s=6 * 3600,
    ),
    "1d": TimeframePolicy(
        backfill="full", served_candles=365,
        predicted=True, horizon=14, min_samples=90, soft_stale_s=26 * 3600, hard_stale_s=3 * _DAY_S,
    ),
    "1w": TimeframePolicy(
        backfill="full", served_candles=156,
        predicted=True, horizon=8, min_samples=52, soft_stale_s=8 * _DAY_S, hard_stale_s=15 * _DAY_S,
    ),
    "1M": TimeframePolicy(
        backfill="full", served_candles=60,
        predicted=True, horizon=6, min_samples=24, soft_stale_s=33 * _DAY_S, hard_stale_s=62 * _DAY_S,
    ),
}


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def policy_table_markdown(policies: dict[Timeframe, TimeframePolicy] | None = None) -> str:
    """The matrix as the Markdown table docs/configuration.md carries (a test compares them)."""
    policies = policies or DEFAULT_POLICIES
    head = ("| timeframe | collected | backfill | lookback | retention | served candles | predicted "
            "| horizon | min samples | stale after | hard stale after |\n" + "|---" * 11 + "|")
    rows = [
        f"| `{tf}` | {'yes' if p.collected else 'no'} | {p.backfill} | "
        f"{f'{p.lookback_days} d' if p.lookback_days and p.backfill != 'full' else '—'} | "
        f"{f'{p.retention_days} d' if p.retention_days else 'forever'} | {p.served_candles} | "
        f"{'yes' if p.predicted else 'never'} | {p.horizon or '—'} | {p.min_samples or '—'} | "
        f"{_duration(p.soft_stale_s)} | {_duration(p.hard_stale_s)} |"
        for tf, p in policies.items()
    ]
    return "\n".join([head, *rows])
