"""Where the origins of a rolling-origin evaluation fall, and the one read that serves them all.

Production fits a champion on a schedule (weekly by default) over the timeframe's lookback and
then forecasts every cycle from the latest closed candle, giving the model the recent tail. The
evaluation replays exactly that: origins every ``stride`` candles, each forecast by the model
last fitted at or before it (fits every ``refit_every`` candles, each over ``lookback`` slots
ending at the fit), so a scored forecast is what the site would have served then.

Every slot is counted back from the latest stored candle with calendar arithmetic
(``timeframes.add``), so 1M origins land on month starts. The oldest origins (the first
``calibration`` of them) only seed the bands; the newest ``n_origins`` are scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..storage.base import CandleStore
from ..timeframes import Timeframe, add
from ..forecast.training import DataRange, data_range, read_history

__all__ = ["STRIDE", "REFIT_EVERY", "DEFAULT_ORIGINS", "CALIBRATION_ORIGINS", "MIN_CALIBRATION",
           "MIN_SCORED", "Plan", "plan_slots", "read_span", "finalise"]

#: Candles between origins: 5 h on 1h cycles through every hour of the day (gcd(5, 24) = 1).
STRIDE: dict[Timeframe, int] = {"1h": 5, "1d": 1, "1w": 1, "1M": 1}
#: Candles between refits: the weekly train schedule.
REFIT_EVERY: dict[Timeframe, int] = {"1h": 168, "1d": 7, "1w": 1, "1M": 1}
DEFAULT_ORIGINS = 200
CALIBRATION_ORIGINS = 100
MIN_CALIBRATION = 20
MIN_SCORED = 50


@dataclass(frozen=True)
class Plan:
    """Origin and fit times (ascending) and the data they need."""

    horizon: int
    stride: int
    refit_every: int
    lookback: int | None
    origins: tuple[int, ...]  # origin slot times; the first ``calibration`` only calibrate
    fit_of: tuple[int, ...]  # per origin: the fit time serving it (<= the origin)
    calibration: int

    @property
    def scored(self) -> tuple[int, ...]:
        return self.origins[self.calibration:]


def plan_slots(latest: int, tf: Timeframe, horizon: int, n_total: int, stride: int, refit_every: int) -> tuple[list[int], list[int]]:
    """``n_total`` origin times ending ``horizon`` candles before ``latest`` and their fit times."""
    origins, fits = [], []
    for k in range(n_total - 1, -1, -1):
        back = horizon + stride * k
        origins.append(add(latest, tf, -back))
        fits.append(add(latest, tf, -(horizon + -(-(back - horizon) // refit_every) * refit_every)))
    return origins, fits


def read_span(store: CandleStore, symbol: str, tf: Timeframe, first_fit: int, latest: int, lookback: int | None) -> pd.DataFrame:
    """``ts``/``y`` from the oldest fit's window start to the latest candle, through the training
    data path: what every origin needs and nothing older (memory flat in history length)."""
    window = data_range(store, symbol, tf, lookback, end=first_fit)
    if window is None:
        return pd.DataFrame({"ts": np.empty(0, "int64"), "y": np.empty(0)})
    rng = DataRange(window.first_ts, latest, store.count(symbol, tf, window.first_ts, latest))
    return read_history(store, symbol, tf, rng)


def window_start(fit: int, tf: Timeframe, lookback: int | None) -> int | None:
    return None if lookback is None else add(fit, tf, -(max(1, lookback) - 1))


def finalise(ts: np.ndarray, origins: list[int], fits: list[int], tf: Timeframe, lookback: int | None,
             min_rows: int, n_scored: int, horizon: int, stride: int, refit_every: int,
             calibration: int = CALIBRATION_ORIGINS) -> Plan | None:
    """Drop origins whose fit would see fewer than ``min_rows`` candles; None when too few remain."""
    keep = []
    for origin, fit in zip(origins, fits):
        start = window_start(fit, tf, lookback)
        lo = 0 if start is None else int(np.searchsorted(ts, start, "left"))
        if int(np.searchsorted(ts, fit, "right")) - lo >= min_rows:
            keep.append((origin, fit))
    scored = min(n_scored, len(keep) - min(MIN_CALIBRATION, calibration))
    if scored < min(n_scored, MIN_SCORED):
        return None
    keep = keep[-(scored + calibration):]
    return Plan(horizon, stride, refit_every, lookback, tuple(o for o, _ in keep), tuple(f for _, f in keep),
                len(keep) - scored)
