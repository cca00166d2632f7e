"""Rolling-origin evaluation of model specs on stored series, with no look-ahead.

1. :mod:`.plan` places origins and fits; the span they need is read once through the training
   data path (``data_range``/``read_history`` with an end bound).
2. Each (spec, fit) is one task: fit on the window ending at the fit time, then forecast every
   origin it serves from that origin's own recent tail, exactly as ``forecast_series`` does.
3. Bands are then calibrated sequentially per model (:mod:`.calibrate`): an origin's band only
   learns from errors whose target candle closed at or before that origin; the newest origins
   are scored against naive on the same points (:mod:`.metrics`).
4. Every series of a run shares one process pool (``workers`` > 1) or the executor it is given
   (a Dask cluster's): fit tasks of all series go in first, and each model's calibration joins
   the pool when its last fit returns, so the sequential part of one model overlaps the fits and
   calibrations of the others. With ``workers=1`` the same jobs run in this process; results are
   identical.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, CancelledError, Executor, Future, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from ..config import Settings
from ..errors import ConfigError, ModelError
from ..forecast.base import ModelSpec
from ..forecast.predict import RECENT_ROWS, target_times
from ..forecast.specs import default_lookback
from ..storage.base import CandleStore
from ..symbols import parse_symbol
from ..timeframes import Timeframe, parse_timeframe
from ..workers import default_workers, process_pool
from .calibrate import Calibrated, Calibration, run_calibration
from .plan import CALIBRATION_ORIGINS, DEFAULT_ORIGINS, REFIT_EVERY, STRIDE, Plan, finalise, plan_slots, read_span, window_start
from .results import SeriesEvaluation
from .worker import Task, run_task

__all__ = ["evaluate_series", "evaluate_many", "default_workers"]

log = logging.getLogger(__name__)


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


@dataclass
class _Job:
    """One series ready to run: its plan, the span it reads, and what has come back so far."""

    symbol: str
    tf: Timeframe
    specs: Sequence[ModelSpec]
    plan: Plan
    ts: np.ndarray
    y: np.ndarray
    tasks: list[Task]
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    left: dict[str, int] = field(default_factory=dict)
    done: dict[str, Calibrated] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.raw = {s.name: np.full((len(self.plan.origins), self.plan.horizon), np.nan) for s in self.specs}
        self.left = {s.name: sum(t.spec["name"] == s.name for t in self.tasks) for s in self.specs}

    def fitted(self, task: Task, result: np.ndarray | str) -> Calibration | None:
        """Record one fit's forecasts; the model's calibration job once its last fit is in."""
        name = task.spec["name"]
        if isinstance(result, str):
            log.warning("%s %s %s failed for %d origin(s): %s", self.symbol, self.tf, name, len(task.members), result)
        else:
            self.raw[name][list(task.members)] = result
        self.left[name] -= 1
        return self.calibration(name) if self.left[name] == 0 else None

    def calibration(self, name: str) -> Calibration:
        spec = next(s for s in self.specs if s.name == name)
        return Calibration(spec.model_dump(mode="json"), self.raw[name], self.plan, self.ts, self.y, self.tf)


def _run_serial(jobs: list[_Job]) -> None:
    for job in jobs:
        for task in job.tasks:
            ready = job.fitted(task, run_task(task))
            if ready is not None:
                job.done[ready.spec["name"]] = run_calibration(ready)


def _run_on(jobs: list[_Job], pool: Executor) -> None:
    """One pool for every (series x fit) task; each model's calibration is submitted to the same
    pool the moment its last fit returns, so the sequential part runs beside other work.

    A job the pool cancels (a Dask cluster whose scheduler is lost cancels every future at once)
    ends the evaluation with a :class:`ModelError` that says so: the bare ``CancelledError``
    has no message.
    """
    tasks = sorted(((j, t) for j in jobs for t in j.tasks), key=lambda jt: (jt[1].spec["name"] != "prophet", jt[1].members[0]))
    waiting: dict[Future[Any], tuple[_Job, Task | None]] = {pool.submit(run_task, t): (j, t) for j, t in tasks}
    try:
        while waiting:
            finished, _ = wait(waiting, return_when=FIRST_COMPLETED)
            for future in finished:
                _collect(pool, waiting, *waiting.pop(future), future)
    except CancelledError as exc:
        raise ModelError(f"evaluation stopped: its executor cancelled a job ({len(waiting)} left), "
                         "e.g. a lost Dask scheduler or worker; nothing was persisted") from exc


def _collect(pool: Executor, waiting: dict[Future[Any], tuple[_Job, Task | None]], job: _Job, task: Task | None,
             future: Future[Any]) -> None:
    """Record a finished fit (submitting its model's calibration when it was the last) or calibration."""
    if task is None:
        result: Calibrated = future.result()
        job.done[result.name] = result
        return
    ready = job.fitted(task, future.result())
    if ready is not None:
        waiting[pool.submit(run_calibration, ready)] = (job, None)


def _prepare(store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, specs: Sequence[ModelSpec],
             n_origins: int | None, calibration_origins: int, now_ms: int) -> _Job | SeriesEvaluation:
    """The series' plan and span, or why it cannot be evaluated."""
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
    return _Job(symbol, tf, specs, plan, span["ts"].to_numpy(), span["y"].to_numpy(), _tasks(specs, plan, span, tf))


def _result(job: _Job, now_ms: int, wall: float, workers: int) -> SeriesEvaluation:
    done = [job.done[s.name] for s in job.specs]
    plan = job.plan
    return SeriesEvaluation(
        symbol=job.symbol, timeframe=job.tf, status="ok", evaluated_at=now_ms,
        origins=sorted({o for c in done for o in c.scored_origins}),
        scores={c.name: c.score for c in done if c.score is not None}, bands={c.name: c.state for c in done},
        horizon=plan.horizon, stride=plan.stride, refit_every=plan.refit_every, calibration_origins=plan.calibration,
        lookback=plan.lookback, wall_seconds=round(wall, 3), workers=workers,
        message=f"{len(plan.scored)} origins scored after {plan.calibration} calibration origins",
    )


def _check_specs(specs: Sequence[ModelSpec]) -> None:
    names = [s.name for s in specs]
    if not names:
        raise ConfigError("evaluate needs at least one model spec")
    if len(set(names)) != len(names):
        raise ConfigError(f"model specs must have distinct names, got {', '.join(names)}")


def evaluate_many(
    store: CandleStore, settings: Settings, series: Sequence[tuple[str, Timeframe]],
    specs_of: Callable[[Timeframe], Sequence[ModelSpec]], *, n_origins: int | None = None,
    workers: int | None = None, now_ms: int | None = None, calibration_origins: int = CALIBRATION_ORIGINS,
    executor: Executor | None = None,
) -> list[SeriesEvaluation]:
    """Evaluate ``specs_of(tf)`` on every series of ``series``, all in one pool of ``workers``
    processes (default: every core; 1 runs in this process). Results do not depend on ``workers``.

    ``executor``: run the fits and calibrations there instead (a Dask cluster's
    ``Client.get_executor()``: every fit of every series spread over its workers); ``workers`` is
    then only recorded, as the number of slots it has.

    Each series scores its newest ``n_origins`` origins (default 200) after ``calibration_origins``
    older ones (default 100) that only seed the bands.
    """
    for label, value in (("origins", n_origins), ("workers", workers), ("calibration origins", calibration_origins or 1)):
        if value is not None and value < 1:
            raise ConfigError(f"{label} must be at least 1, got {value}")
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    prepared: list[_Job | SeriesEvaluation] = []
    for symbol, tf in series:
        symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
        specs = list(specs_of(tf))
        _check_specs(specs)
        prepared.append(_prepare(store, settings, symbol, tf, specs, n_origins, calibration_origins, now_ms))
    jobs = [p for p in prepared if isinstance(p, _Job)]
    started, workers = time.perf_counter(), workers or default_workers()
    if executor is not None:
        _run_on(jobs, executor)
    elif workers <= 1 or sum(len(j.tasks) for j in jobs) <= 1:
        _run_serial(jobs)
    else:
        with process_pool(workers) as pool:
            _run_on(jobs, pool)
    wall = time.perf_counter() - started
    return [_result(p, now_ms, wall, workers) if isinstance(p, _Job) else p for p in prepared]


def evaluate_series(
    store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, specs: Sequence[ModelSpec], *,
    n_origins: int | None = None, workers: int | None = None, now_ms: int | None = None,
    calibration_origins: int = CALIBRATION_ORIGINS,
) -> SeriesEvaluation:
    """Evaluate ``specs`` on the newest ``n_origins`` origins (default 200) of one series
    (see :func:`evaluate_many`)."""
    return evaluate_many(store, settings, [(symbol, tf)], lambda _tf: specs, n_origins=n_origins,
                         workers=workers, now_ms=now_ms, calibration_origins=calibration_origins)[0]
