"""Forecast timestamps: the first point is the next candle after the latest stored closed one."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from coin_core.config import Settings
from coin_core.forecast import ModelSpec, forecast_series, target_times, train_series
from coin_core.storage.sqlite import SQLiteStore
from coin_core.timeframes import Timeframe, add, from_datetime, is_aligned, to_datetime
from tests.fixtures.forecast_fixtures import walk_candles


def ms(*args: int) -> int:
    return from_datetime(datetime(*args, tzinfo=timezone.utc))


# latest stored candle -> expected first forecast target (each crosses a year boundary)
CASES: dict[Timeframe, tuple[int, int]] = {
    "1h": (ms(2024, 12, 31, 23), ms(2025, 1, 1, 0)),
    "1d": (ms(2024, 12, 31), ms(2025, 1, 1)),
    "1w": (ms(2024, 12, 30), ms(2025, 1, 6)),  # Mondays
    "1M": (ms(2024, 12, 1), ms(2025, 1, 1)),
}


@pytest.mark.parametrize("tf", list(CASES))
def test_target_times_pure(tf: Timeframe) -> None:
    latest, first = CASES[tf]
    targets = target_times(latest, tf, 6)
    assert targets[0] == first and len(targets) == 6
    assert all(is_aligned(t, tf) for t in targets)
    assert all(add(a, tf, 1) == b for a, b in zip(targets, targets[1:]))
    if tf == "1w":
        assert {to_datetime(t).weekday() for t in targets} == {0}
    if tf == "1M":
        assert [to_datetime(t).strftime("%Y-%m-%d") for t in targets[:3]] == ["2025-01-01", "2025-02-01", "2025-03-01"]


@pytest.mark.parametrize("tf", list(CASES))
def test_stored_forecast_follows_latest_candle_not_now(tf: Timeframe, settings: Settings, forecast_store: SQLiteStore) -> None:
    latest, first = CASES[tf]
    policy = settings.policy(tf)
    forecast_store.write_candles("BTC/USDT", tf, walk_candles(tf, policy.min_samples + 10, latest))
    train_series(forecast_store, settings, "BTC/USDT", tf, spec=ModelSpec(name="drift"), now_ms=latest)
    # the worker ran late: "now" is weeks after the latest candle; targets still follow the data
    now = add(latest, tf, 3) + 12_345
    outcome = forecast_series(forecast_store, settings, "BTC/USDT", tf, now_ms=now)
    assert outcome.status == "ok", outcome.error
    stored = forecast_store.latest_forecast("BTC/USDT", tf)
    assert stored is not None and stored.input_last_ts == latest and stored.issued_at == now
    assert stored.points["ts"].tolist() == target_times(latest, tf, policy.horizon)
    assert stored.points["ts"].iloc[0] == first


def test_minute_timeframe_is_never_predicted(settings: Settings, forecast_store: SQLiteStore) -> None:
    latest = ms(2025, 6, 1, 0, 0)
    forecast_store.write_candles("BTC/USDT", "1m", walk_candles("1m", 300, latest))
    assert forecast_series(forecast_store, settings, "BTC/USDT", "1m", now_ms=latest + 60_000).status == "not_predicted"
    assert train_series(forecast_store, settings, "BTC/USDT", "1m").status == "not_predicted"
    assert forecast_store.latest_forecast("BTC/USDT", "1m") is None


def test_old_champion_forecasts_from_newest_candle(settings: Settings, forecast_store: SQLiteStore) -> None:
    """A champion fitted days ago: targets and the naive anchor follow the latest stored candle."""
    fitted_until = ms(2024, 12, 30, 0)
    candles = walk_candles("1h", 400, add(fitted_until, "1h", 50))
    forecast_store.write_candles("BTC/USDT", "1h", candles[candles["ts"] <= fitted_until])
    first = train_series(forecast_store, settings, "BTC/USDT", "1h", spec=ModelSpec(name="naive"), now_ms=fitted_until)
    forecast_store.write_candles("BTC/USDT", "1h", candles)  # 50 newer hours arrive, no retrain
    outcome = forecast_series(forecast_store, settings, "BTC/USDT", "1h", now_ms=add(fitted_until, "1h", 52))
    assert outcome.status == "ok" and outcome.model_version == first.model_version
    stored = forecast_store.latest_forecast("BTC/USDT", "1h")
    assert stored is not None and stored.points["ts"].iloc[0] == add(fitted_until, "1h", 51)
    assert stored.points["yhat"].iloc[0] == pytest.approx(candles["close"].iloc[-1])


def test_fresh_series_serves_naive_at_once_and_prophet_shadows_it(settings: Settings, forecast_store: SQLiteStore) -> None:
    """No champion yet: naive serves through the gate's bootstrap rule (nothing expensive is fitted
    on the fly); a Prophet fit of the shared spec then forecasts the same targets in the shadow."""
    from coin_core.forecast import train_series
    from coin_core.forecast.specs import shared_spec

    latest = CASES["1d"][0]
    forecast_store.write_candles("ETH/USDT", "1d", walk_candles("1d", 150, latest, seed=3))
    outcome = forecast_series(forecast_store, settings, "ETH/USDT", "1d", now_ms=latest + 86_400_000)
    assert outcome.status == "ok", outcome.error
    assert outcome.trained_now and outcome.model_version and outcome.model_version.startswith("naive-")
    assert outcome.targets[0] == CASES["1d"][1] and len(outcome.targets) == settings.policy("1d").horizon
    assert train_series(forecast_store, settings, "ETH/USDT", "1d", spec=shared_spec("1d")).status == "trained"
    again = forecast_series(forecast_store, settings, "ETH/USDT", "1d", now_ms=latest + 86_400_001)
    assert not again.trained_now and again.model_version == outcome.model_version and again.shadows == 2
    [prophet] = forecast_store.read_forecasts("ETH/USDT", "1d", issued_from=latest + 86_400_001, role="challenger")
    assert prophet.model == "prophet" and [int(t) for t in prophet.points["ts"]] == list(again.targets)