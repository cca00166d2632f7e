"""The evaluate flow: rolling-origin evaluation of every predicted series, daily.

A series' evaluation reads the store, evaluates the baselines, the champion spec and the
challengers, persists the result and seeds missing band states (``coin_core.evaluation.run``).
The subflow ``evaluate-series`` runs it with the task runner ``flows.runners.task_runner`` picks:

* default: one task per series (``evaluate_one``), in this process, one series after another;
  inside a task the fits and each model's band calibration fan out over a process pool of
  ``workers`` processes (default: every core);
* Dask (``DASK_WORKERS`` / ``DASK_ADDRESS``): one task, ``evaluate-on-cluster``, run in the flow's
  process, sends every fit and every model's calibration of every series to the cluster through
  prefect-dask's client (``get_dask_client``), as the in-process pool gets them. A task per series
  kept one worker on a whole series, so fewer series than workers left workers idle: on 2
  workers, 1 series took 12.3-13.4 s that way and 6.7-7.5 s per fit, 3 series 27.9-29.7 s and
  23.0-23.7 s (2026-11-29, docs/benchmarks.md). The results are persisted only once every series
  is done, so a scheduler lost mid-run fails the run and leaves the stored evaluations as they were.

The run's table artifact lists MASE, WIS and band coverage per series and model.
"""

from __future__ import annotations

from concurrent.futures import Executor
from typing import Any

from prefect import flow, get_run_logger, task

from coin_core.config import Settings
from coin_core.evaluation import SeriesEvaluation
from coin_core.evaluation.run import evaluate_one, run_evaluate, score_rows

from flows.artifacts import artifact_key, publish_table
from flows.common import fail_if_any, flow_settings, state_error
from flows.runners import describe_runner, on_dask, task_runner

__all__ = ["evaluate_task", "evaluate_cluster_task", "evaluate_series_flow", "evaluate_flow"]


@task(name="evaluate-series", task_run_name="evaluate {symbol} {tf}")
def evaluate_task(settings: Settings, symbol: str, tf: str, origins: int | None, workers: int | None) -> SeriesEvaluation:
    return evaluate_one(settings, symbol, tf, n_origins=origins, workers=workers)


@task(name="evaluate-on-cluster", task_run_name="evaluate every series on the Dask cluster")
def evaluate_cluster_task(settings: Settings, origins: int | None, executor: Executor, slots: int) -> list[SeriesEvaluation]:
    return run_evaluate(settings, n_origins=origins, workers=slots, executor=executor)


def _on_cluster(settings: Settings, origins: int | None) -> tuple[list[SeriesEvaluation], dict[str, str]]:
    """Every series' fits on the cluster of this flow's Dask task runner (see the module doc)."""
    from prefect_dask import get_dask_client

    with get_dask_client() as client:
        slots = sum(client.nthreads().values())
        state = evaluate_cluster_task(settings, origins, client.get_executor(pure=False), slots, return_state=True)
    error = state_error(state)
    if error is not None:
        return [], {" ".join(series): error for series in settings.series(predicted_only=True)}
    return state.result(), {}


@flow(name="evaluate-series")
def evaluate_series_flow(origins: int | None, workers: int | None, symbols: list[str] | None = None,
                         timeframes: list[str] | None = None) -> tuple[list[SeriesEvaluation], dict[str, str]]:
    """Evaluate every series with this flow's task runner; (evaluations, failures by series)."""
    settings = flow_settings(symbols, timeframes)
    if on_dask(settings):
        return _on_cluster(settings, origins)
    futures = [((symbol, tf), evaluate_task.submit(settings, symbol, tf, origins, workers))
               for symbol, tf in settings.series(predicted_only=True)]
    done: list[SeriesEvaluation] = []
    failures: dict[str, str] = {}
    for (symbol, tf), future in futures:
        state = future.wait()
        error = state_error(state)
        if error is None:
            done.append(state.result())
        else:
            failures[f"{symbol} {tf}"] = error
    return done, failures


@flow(name="evaluate")
def evaluate_flow(symbols: list[str] | None = None, timeframes: list[str] | None = None,
                  origins: int | None = None, workers: int | None = None) -> list[dict[str, Any]]:
    """Evaluate every predicted series (``origins`` scored origins each; ``workers`` processes per
    series when not on Dask)."""
    settings = flow_settings(symbols, timeframes)
    logger = get_run_logger()
    logger.info("series run %s", describe_runner(settings))
    done, failures = evaluate_series_flow.with_options(task_runner=task_runner(settings))(
        origins, workers, symbols, timeframes)
    rows = score_rows(done) + [{"series": k, "model": "-", "status": "failed", "note": v} for k, v in failures.items()]
    publish_table(artifact_key("evaluate", "summary"), rows,
                  f"Evaluate: {len(done)} series evaluated, {sum(ev.status != 'ok' for ev in done)} with too little data, "
                  f"{len(failures)} failed. MASE is MAE over naive's on the same points; cov = realised band coverage.")
    logger.info("evaluate run done: %s", [f"{ev.symbol} {ev.timeframe}={ev.status}" for ev in done])
    fail_if_any("series", failures)
    return rows
