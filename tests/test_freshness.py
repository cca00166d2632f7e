"""The one freshness evaluator: every state and signal from constructed inputs, boundaries exact."""

from __future__ import annotations

from datetime import datetime

import pytest

from coin_core import timeframes as tfs
from coin_core.freshness import (
    Freshness,
    evaluate,
    evaluate_with_policy,
    format_age,
    signals_for,
    worst,
)
from coin_core.health import IngestState, PredictionHealth
from coin_core.policy import DEFAULT_POLICIES

H = 3_600_000
LATEST = tfs.from_datetime(datetime(2024, 5, 1, 11))  # 1h candle 11:00-12:00
CLOSE = LATEST + H
DONE = IngestState(backfill_complete_at=1)
SOFT, HARD = 75 * 60, 6 * 3600


def judge(now_ms: int, **kwargs: object) -> Freshness:
    params: dict[str, object] = {"latest_ts": LATEST, "tf": "1h", "now_ms": now_ms,
                                 "soft_stale_s": SOFT, "hard_stale_s": HARD, "ingest_state": DONE}
    params.update(kwargs)
    return evaluate(**params)  # type: ignore[arg-type]


def test_fresh_right_after_close_and_age_measured_from_close_not_open() -> None:
    result = judge(CLOSE + 10 * 60_000)
    assert (result.status, result.served, result.signals) == ("fresh", True, ())
    assert result.age_s == 600.0  # from 12:00 (close), not 11:00 (open)
    assert "2024-05-01 12:00 UTC" in result.reason


@pytest.mark.parametrize(
    ("age_s", "expected"),
    [(SOFT - 1, "fresh"), (SOFT, "fresh"), (SOFT + 1, "stale"),
     (HARD - 1, "stale"), (HARD, "stale"), (HARD + 1, "hard_stale")],
)
def test_threshold_boundaries_are_strictly_greater(age_s: int, expected: str) -> None:
    result = judge(CLOSE + age_s * 1000)
    assert result.status == expected
    assert result.age_s == age_s
    assert result.served is (expected != "hard_stale")


def test_one_millisecond_past_soft_limit_is_stale() -> None:
    assert judge(CLOSE + SOFT * 1000).status == "fresh"
    assert judge(CLOSE + SOFT * 1000 + 1).status == "stale"


def test_stale_reason_names_limit_and_stays_stable_while_status_holds() -> None:
    first = judge(CLOSE + (SOFT + 60) * 1000)
    later = judge(CLOSE + (SOFT + 3000) * 1000)
    assert first.status == later.status == "stale"
    assert first.reason == later.reason  # published files quoting it are not rewritten each cycle
    assert "soft limit" in first.reason and "1h 15m" in first.reason
    assert "hard limit" in judge(CLOSE + (HARD + 1) * 1000).reason


def test_corrupt_wins_over_a_fresh_age_and_is_never_served() -> None:
    result = judge(CLOSE + 1000, corrupt=True, corrupt_reason="not valid JSON")
    assert (result.status, result.served, result.reason) == ("corrupt", False, "not valid JSON")
    assert result.blocked


def test_nothing_stored_is_blocked_as_hard_stale_with_the_reason() -> None:
    result = judge(CLOSE, latest_ts=None, missing_reason="no forecast has been issued yet")
    assert (result.status, result.served, result.age_s) == ("hard_stale", False, None)
    assert result.reason == "no forecast has been issued yet"


def test_prediction_is_judged_on_its_input_not_on_when_it_was_written() -> None:
    # A forecast written a minute ago from candles that ended 7 hours ago is hard stale.
    now = CLOSE + 7 * H
    result = evaluate_with_policy(LATEST, "1h", now, DEFAULT_POLICIES["1h"], ingest_state=DONE)
    assert result.status == "hard_stale"
    newer_input = evaluate_with_policy(LATEST + 6 * H, "1h", now, DEFAULT_POLICIES["1h"], ingest_state=DONE)
    assert newer_input.status == "fresh"


def test_policy_thresholds_per_timeframe_month_close_uses_calendar() -> None:
    april = tfs.from_datetime(datetime(2024, 4, 1))
    may_1 = tfs.from_datetime(datetime(2024, 5, 1))
    policy = DEFAULT_POLICIES["1M"]
    at_limit = evaluate_with_policy(april, "1M", may_1 + policy.soft_stale_s * 1000, policy, ingest_state=DONE)
    past = evaluate_with_policy(april, "1M", may_1 + policy.soft_stale_s * 1000 + 1, policy, ingest_state=DONE)
    assert (at_limit.status, past.status) == ("fresh", "stale")
    assert at_limit.age_s == policy.soft_stale_s  # April has 30 days: close is May 1st, not +30d of nominal


@pytest.mark.parametrize(
    ("health", "ingest", "expected"),
    [
        (None, DONE, ()),
        (PredictionHealth(status="ok", updated_at=1), DONE, ()),
        (PredictionHealth(status="degraded", updated_at=1, last_error="boom"), DONE, ("degraded",)),
        (PredictionHealth(status="insufficient_data", updated_at=1), DONE, ("insufficient_data",)),
        (None, IngestState(), ("hidden_backfilling",)),
        (None, None, ("hidden_backfilling",)),
        (PredictionHealth(status="degraded", updated_at=1), None, ("degraded", "hidden_backfilling")),
    ],
)
def test_signals(health: PredictionHealth | None, ingest: IngestState | None, expected: tuple[str, ...]) -> None:
    assert signals_for(health, ingest) == expected


def test_signals_do_not_change_status_but_hidden_is_not_served() -> None:
    degraded = judge(CLOSE + 1000, prediction_health=PredictionHealth(status="degraded", updated_at=1))
    assert (degraded.status, degraded.served, degraded.signals) == ("fresh", True, ("degraded",))
    hidden = judge(CLOSE + 1000, ingest_state=IngestState(backfill_complete_at=None))
    assert (hidden.status, hidden.served, hidden.hidden) == ("fresh", False, True)
    assert hidden.reason.startswith("hidden until the first backfill completes")


def test_inconsistent_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="hard_stale_s"):
        judge(CLOSE, soft_stale_s=100, hard_stale_s=99)


def test_worst_orders_statuses() -> None:
    assert worst([]) is None
    assert worst(["fresh", "stale"]) == "stale"
    assert worst(["corrupt", "hard_stale", "fresh"]) == "corrupt"
    assert worst(["hard_stale", "stale"]) == "hard_stale"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (60, "1m"), (4500, "1h 15m"), (21600, "6h"), (90000, "1d 1h"), (-5, "0s")],
)
def test_format_age(seconds: float, text: str) -> None:
    assert format_age(seconds) == text
