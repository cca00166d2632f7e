"""Rolling-origin evaluation of model specs on one stored series, with no look-ahead.

1. :mod:`.plan` places origins and fits; the span they need is read once through the training
   data path (``data_range``/``read_history`` with an end bound).
2. Each (spec, fit) is one task: fit on the window ending at the fit time, then forecast every
   origin it serves from that origin's own recent tail, exactly as ``forecast_series`` does.
   Tasks run in a process pool (``workers`` > 1) or in this process; results are identical.
3. Bands are then calibrated sequentially per model by :mod:`coin_core.forecast.bands`: an
   origin's band only learns from errors whose target candle closed at or before that origin.
4. The newest origins are scored against naive on the same points (:mod:`.metrics`).
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..config import Settings
from ..errors import ConfigError
from ..forecast.bands import BandOutcome, BandState, VOL_ROWS, band_arrays, new_band_state, sigma_of, update_bands
from ..forecast.base import ModelSpec
from ..forecast.predict import RECENT_ROWS, target_times
from ..forecast.specs import default_lookback
from ..storage.base import CandleStore
from ..symbols import parse_symbol
from ..timeframes import Timeframe, parse_timeframe
from . import metrics
from .plan import CALIBRATION_ORIGINS, DEFAULT_ORIGINS, REFIT_EVERY, STRIDE, Plan, finalise, plan_slots, read_span, window_start
from .results import ModelScore, SeriesEvaluation, StepScore
from .worker import Task, run_task

__all__ = ["evaluate_series", "default_workers"]

log = logging.getLogger(__name__)


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _insufficient(symbol: str, tf: Timeframe, now_ms: int, message: str) -> SeriesEvaluation:
    return SeriesEvaluation(symbol=symbol, timeframe=tf, status="insufficient_data", message=message, evaluated_at=now_ms)


def _tasks(specs: Sequence[ModelSpec], plan: Plan, span: pd.DataFrame, tf: Timeframe) -> list[Task]:
    ts, y = span["ts"].to_numpy(), span["y"].to_numpy()
    groups: dict[int, list[int]] = {}
    for i, fit in enumerate(plan.fit_of):
        groups.setdefault(fit, []).append(i)
    tasks = []
    for fit, members in groups.items():
        start = window_start(fit, tf, plan.lookback)
        lo = 0 if start is None else int(np.searchsorted(ts, start, "left"))
        hi = int(np.searchsorted(ts, fit, "right"))
        recents = []
        for i in members:
            end = int(np.searchsorted(ts, plan.origins[i], "right"))
            recents.append((ts[max(0, end - RECENT_ROWS):end].copy(), y[max(0, end - RECENT_ROWS):end].copy()))
        targets = [target_times(int(r[0][-1]), tf, plan.horizon) for r in recents]
        for spec in specs:
            tasks.append(Task(spec.model_dump(mode="json"), tuple(members), ts[lo:hi].copy(), y[lo:hi].copy(),
                              tuple(recents), tuple(tuple(t) for t in targets)))
    # the expensive model first, so the pool does not end waiting on one long task
    return sorted(tasks, key=lambda t: (t.spec["name"] != "prophet", t.members[0]))


def _run(tasks: list[Task], workers: int) -> list[tuple[Task, Any]]:
    if workers <= 1 or len(tasks) <= 1:
        return [(t, run_task(t)) for t in tasks]
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("forkserver")) as pool:
        return list(zip(tasks, pool.map(run_task, tasks)))


def _forecasts(specs: Sequence[ModelSpec], plan: Plan, done: list[tuple[Task, Any]]) -> dict[str, np.ndarray]:
    """Per spec: point forecasts (origins x horizon), NaN where the fit or predict failed."""
    out = {s.name: np.full((len(plan.origins), plan.horizon), np.nan) for s in specs}
    for task, result in done:
        if isinstance(result, str):
            log.warning("%s failed for %d origin(s): %s", task.spec["name"], len(task.members), result)
            continue
        out[task.spec["name"]][list(task.members)] = result
    return out


Pending = list[tuple[int, BandOutcome]]  # (target candle open time, outcome) not yet closed


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


def _calibrate(name: str, yhat: np.ndarray, plan: Plan, span: pd.DataFrame, tf: Timeframe) -> tuple[pd.DataFrame, BandState, int]:
    """Band every origin from errors realised before it; rows of the scored origins' points."""
    ts, y = span["ts"].to_numpy(), span["y"].to_numpy()
    state, pending = new_band_state(name, plan.horizon), []
    rows, failed = [], 0
    for i, origin in enumerate(plan.origins):
        a = int(np.searchsorted(ts, origin, "right")) - 1
        state, pending = _release(state, pending, int(ts[a]))
        if not np.isfinite(yhat[i]).all():
            failed += i >= plan.calibration
            continue
        targets = np.asarray(target_times(int(ts[a]), tf, plan.horizon), dtype="int64")
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


def _check_specs(specs: Sequence[ModelSpec]) -> None:
    names = [s.name for s in specs]
    if not names:
        raise ConfigError("evaluate needs at least one model spec")
    if len(set(names)) != len(names):
        raise ConfigError(f"model specs must have distinct names, got {', '.join(names)}")


def evaluate_series(
    store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, specs: Sequence[ModelSpec], *,
    n_origins: int | None = None, workers: int | None = None, now_ms: int | None = None,
    calibration_origins: int = CALIBRATION_ORIGINS,
) -> SeriesEvaluation:
    """Evaluate ``specs`` on the newest ``n_origins`` origins (default 200) of one series.

    ``calibration_origins`` older origins (default 100) only seed the bands; ``workers`` processes
    run the fits (default: every core; 1 runs in this process).
    """
    symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
    _check_specs(specs)
    for label, value in (("origins", n_origins), ("workers", workers), ("calibration origins", calibration_origins or 1)):
        if value is not None and value < 1:
            raise ConfigError(f"{label} must be at least 1, got {value}")
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    policy = settings.policy(tf)
    if not policy.predicted or policy.horizon < 1:
        return _insufficient(symbol, tf, now_ms, f"{tf} is not predicted: nothing to evaluate")
    bounds = store.bounds(symbol, tf)
    if bounds is None:
        return _insufficient(symbol, tf, now_ms, "no stored candles")
    n_scored = n_origins or DEFAULT_ORIGINS
    stride, refit, lookback = STRIDE.get(tf, 1), REFIT_EVERY.get(tf, 1), default_lookback(tf)
    origins, fits = plan_slots(bounds[1], tf, policy.horizon, n_scored + calibration_origins, stride, refit)
    span = read_span(store, symbol, tf, fits[0], bounds[1], lookback)
    plan = finalise(span["ts"].to_numpy(), origins, fits, tf, lookback, max(policy.min_samples, 3),
                    n_scored, policy.horizon, stride, refit, calibration_origins)
    if plan is None:
        return _insufficient(symbol, tf, now_ms, f"{store.count(symbol, tf)} candle(s): too few for "
                             f"{min(n_scored, 50)} scored origins after {policy.min_samples} training candles")
    started, workers = time.perf_counter(), workers or default_workers()
    raw = _forecasts(specs, plan, _run(_tasks(specs, plan, span, tf), workers))
    scores, bands, scored_origins = {}, {}, []
    for spec in specs:
        points, bands[spec.name], failed = _calibrate(spec.name, raw[spec.name], plan, span, tf)
        if not points.empty:
            scores[spec.name] = _score(spec, points, failed)
            scored_origins = sorted(set(scored_origins) | set(points["origin"].astype(int)))
    return SeriesEvaluation(
        symbol=symbol, timeframe=tf, status="ok", origins=scored_origins, scores=scores, evaluated_at=now_ms,
        horizon=plan.horizon, stride=stride, refit_every=refit, calibration_origins=plan.calibration,
        lookback=lookback, wall_seconds=round(time.perf_counter() - started, 3), workers=workers, bands=bands,
        message=f"{len(plan.scored)} origins scored after {plan.calibration} calibration origins",
    )
