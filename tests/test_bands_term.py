"""The band layer after a volatility storm: long steps revert toward the long-run volatility.

Volatility mean-reverts: a forecast issued just after a storm, 14 candles ahead, faces mostly
calm candles, while the recent EWMA still remembers the storm. A band scaled by the EWMA alone
at every step (the layer before the term structure) stays storm-wide at long steps and
over-covers. These tests run the evaluation's own rolling calibration (naive point forecasts,
every origin banded only from errors realised before it) over synthetic calm -> storm -> calm
series.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd

from coin_core.evaluation.calibrate import Calibration, _calibrate
from coin_core.evaluation.plan import Plan
from coin_core.forecast.bands import VOL_ROWS, band_scale, sigma_of
from coin_core.timeframes import add, from_datetime

LATEST = from_datetime(datetime(2025, 3, 1, tzinfo=timezone.utc))
H, CALM, STORM = 14, 400, 40


def _storm_then_calm(seed: int, after: int) -> tuple[pd.DataFrame, object, np.ndarray]:
    rng = np.random.default_rng(seed)
    vol = np.r_[np.full(CALM, 0.01), np.full(STORM, 0.05), np.full(after, 0.01)]
    n = len(vol)
    ts = np.array([add(LATEST, "1d", k - n + 1) for k in range(n)], dtype="int64")
    y = 100 * np.exp(np.cumsum(rng.normal(0, vol)))
    origins = tuple(int(t) for t in ts[200:n - H])
    plan = Plan(H, 1, 7, None, origins, origins, calibration=CALM + STORM - 200)  # score after the storm
    yhat = np.repeat(y[np.searchsorted(ts, origins)][:, None], H, axis=1)
    points, state, _ = _calibrate(Calibration({"name": "naive"}, yhat, plan, ts, y, "1d"), "naive")
    return points, state, y


def _covered(points: pd.DataFrame) -> pd.Series:
    return (points["y"] >= points["yhat_lower"]) & (points["y"] <= points["yhat_upper"])


def test_long_steps_revert_from_the_storm_toward_the_long_run_volatility() -> None:
    _, state, y = _storm_then_calm(seed=1, after=H + 10)  # the last origins: 10 calm days after it
    sigma_now = sigma_of(y[-VOL_ROWS - H:-H], state.halflife)  # what the last origin was banded with
    assert state.sigma_long is not None and 0.01 < state.sigma_long < sigma_now  # learned from the issues
    scales = np.array([band_scale(state, h, sigma_now) for h in range(1, H + 1)])
    assert scales[0] == sigma_now  # h=1 is the recent volatility, as before
    # every later step leans toward the long run; the old layer used sigma_now at every step
    assert (np.diff(scales) < 0).all() and state.sigma_long < scales[-1] < sigma_now


def test_eighty_percent_holds_at_h1_and_h_max_in_the_calm_after_a_storm() -> None:
    runs = [_storm_then_calm(seed, after=250)[0] for seed in range(6)]
    for step in (1, H):
        coverage = np.mean([_covered(p[p["step"] == step]).mean() for p in runs])
        assert 0.75 <= coverage <= 0.85, (step, coverage)
