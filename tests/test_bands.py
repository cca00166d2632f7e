"""The calibrated band layer: adaptive conformal bands, their state on disk, and the serving path."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from coin_core.config import Settings
from coin_core.errors import DataValidationError, ModelError
from coin_core.forecast import ModelSpec, forecast_series, train_series
from coin_core.forecast.bands import (
    MIN_RESIDUALS, BandOutcome, apply_bands, band_path, band_summary, fit_bands, load_band_state,
    new_band_state, save_band_state, sigma_at, sigma_of, update_bands,
)
from coin_core.storage.sqlite import SQLiteStore
from coin_core.timeframes import add, from_datetime
from tests.fixtures.forecast_fixtures import walk_candles

SYM = "BTC/USDT"
LATEST = from_datetime(datetime(2025, 3, 1, 12, tzinfo=timezone.utc))


def _outcomes(z: np.ndarray, step: int = 1, sigma: float = 0.01) -> list[BandOutcome]:
    return [BandOutcome(step, 100.0, 100.0 * float(np.exp(v * sigma)), sigma) for v in z]


def _points(n: int, value: float = 100.0) -> pd.DataFrame:
    return pd.DataFrame({"ts": [add(LATEST, "1h", k) for k in range(1, n + 1)], "yhat": [value] * n})


def test_bands_scale_with_volatility_not_with_price() -> None:
    state = fit_bands("naive", 3, [o for s in (1, 2, 3) for o in _outcomes(np.random.default_rng(s).normal(0, np.sqrt(s), 300), s)])
    calm = 100 * np.exp(np.cumsum(np.full(60, 0.001) * np.resize([1, -1], 60)))
    wild = 100 * np.exp(np.cumsum(np.full(60, 0.02) * np.resize([1, -1], 60)))
    narrow, s_calm, source = apply_bands(_points(3), state, calm)
    wide, s_wild, _ = apply_bands(_points(3), state, wild)
    assert source == "conformal" and s_wild == pytest.approx(20 * s_calm, rel=0.05)
    width = lambda f: (f["yhat_upper"] - f["yhat_lower"]) / f["yhat"]  # noqa: E731
    ratio = width(wide) / width(narrow)
    assert ratio[0] > 10  # h=1 scales with the recent volatility
    # longer steps revert toward the long-run volatility the state learned (0.01): still wider
    # in the wild market, by less and less as the step grows (the volatility term structure)
    assert (ratio > 1).all() and ratio.is_monotonic_decreasing
    rich, _, _ = apply_bands(_points(3, 50_000.0), state, calm * 500)  # the same market at 500x the price
    np.testing.assert_allclose(width(rich), width(narrow), rtol=1e-9)
    # nested and ordered: 80 % outside 50 % outside the point; the band widens with the step
    assert ((wide["yhat_lower"] <= wide["yhat_lower_50"]) & (wide["yhat_lower_50"] <= wide["yhat"])
            & (wide["yhat"] <= wide["yhat_upper_50"]) & (wide["yhat_upper_50"] <= wide["yhat_upper"])).all()
    assert width(wide).is_monotonic_increasing


def test_aci_widens_a_band_that_keeps_missing_and_counts_coverage() -> None:
    state = fit_bands("naive", 1, _outcomes(np.random.default_rng(1).normal(0, 1, 100)))
    before = apply_bands(_points(1), state, np.linspace(100, 101, 30))[0]
    misses = [BandOutcome(1, 100.0, 100.0 * float(np.exp(0.05 * 8)), 0.05, {0.5: False, 0.8: False})] * 30
    after_state = update_bands(state, misses)
    after = apply_bands(_points(1), after_state, np.linspace(100, 101, 30))[0]
    eighty = next(s for s in after_state.levels if s.level == 0.8)
    assert eighty.alpha_t[0] < 0.2 and after["yhat_upper"].iloc[0] > before["yhat_upper"].iloc[0]
    assert eighty.scored == 130 and eighty.covered == next(s for s in state.levels if s.level == 0.8).covered
    assert state.levels[1].scored == 100  # update_bands never mutates its input
    with pytest.raises(DataValidationError):
        update_bands(state, [BandOutcome(2, 100.0, 101.0, 0.01)])  # step outside the horizon


def test_few_residuals_fall_back_to_a_volatility_band() -> None:
    state = fit_bands("ets", 2, _outcomes(np.zeros(MIN_RESIDUALS - 1)))
    out, sigma, source = apply_bands(_points(2), state, 100 * np.exp(np.cumsum(np.full(50, 0.01))))
    assert source == "volatility" and band_summary(state)["source"] == "volatility"
    assert out["yhat_upper"].iloc[0] == pytest.approx(100 * np.exp(1.2816 * sigma), rel=1e-3)
    assert out["yhat_upper"].iloc[1] > out["yhat_upper"].iloc[0]
    with pytest.raises(ModelError):
        sigma_of([100.0, 101.0], 12)


def test_state_round_trips_and_a_corrupt_file_is_named(settings: Settings) -> None:
    state = fit_bands("prophet", 4, _outcomes(np.random.default_rng(2).normal(0, 1, 40), 2))
    assert load_band_state(settings, SYM, "1h", "prophet") is None
    path = save_band_state(settings, SYM, "1h", state)
    assert path == band_path(settings, SYM, "1h", "prophet") and "BTC-USDT" in str(path)
    assert load_band_state(settings, SYM, "1h", "prophet") == state
    assert json.loads(path.read_text())["residuals"][1] == state.residuals[1]
    for bad in (path.read_bytes()[:30], b'{"model": "prophet"}'):
        path.write_bytes(bad)
        with pytest.raises(DataValidationError, match=str(path)):
            load_band_state(settings, SYM, "1h", "prophet")
        assert path.read_bytes() == bad
    summary = band_summary(state)
    assert [lv["level"] for lv in summary["levels"]] == [0.5, 0.8]  # type: ignore[index]


def test_served_forecasts_carry_the_calibrated_bands(settings: Settings, forecast_store: SQLiteStore) -> None:
    candles = walk_candles("1h", 400, LATEST)
    forecast_store.write_candles(SYM, "1h", candles)
    train_series(forecast_store, settings, SYM, "1h", spec=ModelSpec(name="naive"), now_ms=LATEST)
    state = new_band_state("naive", 24)
    state = update_bands(state, [o for s in range(1, 25) for o in _outcomes(np.random.default_rng(s).normal(0, 3, 50), s)])
    save_band_state(settings, SYM, "1h", state)
    assert forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 1).status == "ok"
    served = forecast_store.latest_forecast(SYM, "1h")
    assert served is not None
    expected, _, _ = apply_bands(served.points[["ts", "yhat"]], state, candles["close"].tail(200).to_numpy())
    np.testing.assert_allclose(served.points["yhat_upper"], expected["yhat_upper"], rtol=1e-9)
    sigma = sigma_at(forecast_store, SYM, "1h", LATEST, 24)
    assert sigma == pytest.approx(sigma_of(candles["close"].tail(200).to_numpy(), state.halflife))
    # a corrupt band file never takes the series off the site and is left for the operator
    path = band_path(settings, SYM, "1h", "naive")
    path.write_text("{not json")
    assert forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 2).status == "ok"
    assert path.read_text() == "{not json"
