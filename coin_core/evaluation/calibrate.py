"""Band calibration and scoring of one model's backtest: sequential in time, picklable as a unit.

An origin's band only learns from errors whose target candle closed at or before that origin,
so one model's calibration is a loop in time order. It is one :class:`Calibration` job that a
pool worker runs as soon as that model's fits are done (models and series run side by side,
so the sequential part no longer waits in the parent process).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..forecast.bands import VOL_ROWS, BandOutcome, BandState, band_arrays, new_band_state, sigma_of, update_bands
from ..forecast.base import ModelSpec
from ..forecast.predict import target_times
from ..timeframes import Timeframe
from . import metrics
from .plan import Plan
from .results import ModelScore, StepScore

__all__ = ["Calibration", "Calibrated", "run_calibration"]

Pending = list[tuple[int, BandOutcome]]  # (target candle open time, outcome) not yet closed


@dataclass(frozen=True)
class Calibration:
    spec: dict[str, Any]
    yhat: np.ndarray  # origins x horizon, NaN where the fit or predict failed
    plan: Plan
    ts: np.ndarray
    y: np.ndarray
    tf: Timeframe


@dataclass(frozen=True)
class Calibrated:
    name: str
    score: ModelScore | None  # None: no scored point
    state: BandState
    scored_origins: tuple[int, ...]


def _release(state: BandState, pending: Pending, anchor: int) -> tuple[BandState, Pending]:
    """Feed the state every outcome whose target candle had closed by ``anchor``, in time order."""
    ready = sorted((p for p in pending if p[0] <= anchor), key=lambda p: p[0])
    if ready:
        state = update_bands(state, [o for _, o in ready])
    return state, [p for p in pending if p[0] > anchor]


def _realised(ts: np.ndarray, y: np.ndarray, targets: np.ndarray) -> list[tuple[int, float]]:
    """(step index, close) of every target candle that exists (exchange gaps are skipped)."""
    where = np.searchsorted(ts, targets)
    found = (where < len(ts)) & (ts[np.minimum(where, len(ts) - 1)] == targets)
    return [(int(k), float(y[where[k]])) for k in np.flatnonzero(found)]


def _calibrate(job: Calibration, name: str) -> tuple[pd.DataFrame, BandState, int]:
    """Band every origin from errors realised before it; rows of the scored origins' points."""
    ts, y, plan, yhat = job.ts, job.y, job.plan, job.yhat
    state, pending = new_band_state(name, plan.horizon), []
    rows, failed = [], 0
    for i, origin in enumerate(plan.origins):
        a = int(np.searchsorted(ts, origin, "right")) - 1
        state, pending = _release(state, pending, int(ts[a]))
        if not np.isfinite(yhat[i]).all():
            failed += i >= plan.calibration
            continue
        targets = np.asarray(target_times(int(ts[a]), job.tf, plan.horizon), dtype="int64")
        sigma = sigma_of(y[max(0, a - VOL_ROWS + 1):a + 1], state.halflife)
        (lo50, hi50), (lo80, hi80) = (band_arrays(state, yhat[i], sigma)[lv] for lv in (0.5, 0.8))
        for k, real in _realised(ts, y, targets):
            covered = {0.5: bool(lo50[k] <= real <= hi50[k]), 0.8: bool(lo80[k] <= real <= hi80[k])}
            pending.append((int(targets[k]), BandOutcome(k + 1, float(yhat[i, k]), real, sigma, covered)))
            if i >= plan.calibration:
                rows.append((int(ts[a]), k + 1, real, float(yhat[i, k]), float(y[a]), float(y[a]),
                             float(lo50[k]), float(hi50[k]), float(lo80[k]), float(hi80[k])))
    state, _ = _release(state, pending, int(ts[-1]))
    return pd.DataFrame(rows, columns=list(metrics.POINT_COLUMNS)), state, failed


def _score(spec: ModelSpec, points: pd.DataFrame, failed: int) -> ModelScore:
    steps = metrics.by_step(points)
    return ModelScore(
        spec=spec, n_origins=int(points["origin"].nunique()), n_points=len(points),
        mae=float(metrics.mae(points).iloc[0]), mase=float(metrics.mase(points).iloc[0]),
        wis=float(metrics.wis(points).iloc[0]), coverage50=float(metrics.coverage(points, 50).iloc[0]),
        coverage80=float(metrics.coverage(points, 80).iloc[0]), width80=float(metrics.width(points, 80).iloc[0]),
        per_step=[StepScore(**{k: (int(v) if k == "step" else float(v)) for k, v in r.items()}) for r in steps.to_dict("records")],
        failed_origins=failed,
    )


def run_calibration(job: Calibration) -> Calibrated:
    """Calibrate one model's bands over every origin and score its scored origins."""
    spec = ModelSpec.model_validate(job.spec)
    points, state, failed = _calibrate(job, spec.name)
    if points.empty:
        return Calibrated(spec.name, None, state, ())
    return Calibrated(spec.name, _score(spec, points, failed), state, tuple(sorted(set(points["origin"].astype(int)))))
