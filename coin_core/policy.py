"""The timeframe policy matrix: one table that says how each timeframe is handled.

``docs/configuration.md`` renders the same table (a test keeps them in step).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError
from .timeframes import Timeframe

__all__ = ["BackfillMode", "TimeframePolicy", "DEFAULT_POLICIES", "merge_policy", "policy_table_markdown"]

BackfillMode = Literal["rolling", "lookback", "full"]

_DAY_S = 86_400
# Days stop at 10,000 (~27 years, before any crypto exchange): a first backfill must never
# start before the Unix epoch. Staleness thresholds stop at 400 days.
_MAX_DAYS = 10_000
_MAX_STALE_S = 400 * _DAY_S


class TimeframePolicy(BaseModel):
    """How one timeframe is collected, kept, served and predicted."""

    # strict: an override is JSON, so 1e20 or "24" or true is a mistake, not a number to coerce.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    collected: bool = True
    backfill: BackfillMode
    lookback_days: int | None = Field(
        default=None, ge=1, le=_MAX_DAYS, description="rolling/lookback: how far back a first backfill starts"
    )
    retention_days: int | None = Field(default=None, ge=1, le=_MAX_DAYS, description="None keeps everything")
    served_candles: int = Field(ge=1, le=10_000, description="history candles published per series")
    predicted: bool
    horizon: int = Field(ge=0, le=500, description="forecast points after the latest closed candle")
    min_samples: int = Field(ge=0, le=1_000_000, description="fewer stored candles -> insufficient_data")
    soft_stale_s: int = Field(ge=1, le=_MAX_STALE_S, description="age of the latest candle's close -> stale")
    hard_stale_s: int = Field(ge=1, le=_MAX_STALE_S, description="age of the latest candle's close -> hard_stale")

    @model_validator(mode="after")
    def _consistent(self) -> "TimeframePolicy":
        if self.soft_stale_s > self.hard_stale_s:
            raise ValueError(f"soft_stale_s ({self.soft_stale_s}) must not exceed hard_stale_s ({self.hard_stale_s})")
        if self.predicted and self.horizon < 1:
            raise ValueError("a predicted timeframe needs horizon >= 1")
        return self


def merge_policy(tf: Timeframe, base: "TimeframePolicy", override: dict[str, Any]) -> "TimeframePolicy":
    """``base`` with the TIMEFRAME_POLICY ``override`` of ``tf`` applied; ConfigError names the key."""
    try:
        return TimeframePolicy(**{**base.model_dump(), **override})
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first.get("loc", ()))
        where = f"{tf}.{key}" if key else tf
        got = f" (got {str(first.get('input'))[:40]!r})" if key else ""
        raise ConfigError(f"invalid TIMEFRAME_POLICY {where}: {first['msg'].removeprefix('Value error, ')}{got}") from None


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
