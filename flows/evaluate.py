"""The evaluate flow: rolling-origin evaluation of every predicted series, daily.

Each series is one task over ``coin_core.evaluation.run.evaluate_one`` (it reads the store,
evaluates the baselines, the champion spec and the challengers, persists the result and seeds
missing band states). The tasks run in the subflow ``evaluate-series`` with the task runner
``flows.runners.task_runner`` picks:

* default: in this process, one series after another; inside a task the fits and each model's
  band calibration fan out over a process pool of ``workers`` processes (default: every core);
* Dask (``DASK_WORKERS`` / ``DASK_ADDRESS``): the series fan out over the cluster's workers, one
  series per worker at a time, each evaluated in that worker's process (``workers=1``: a Dask
  worker is a daemon process and may not start a pool of its own; the cluster is the pool).

The run's table artifact lists MASE, WIS and band coverage per series and model.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from coin_core.config import Settings
from coin_core.evaluation import SeriesEvaluation
from coin_core.evaluation.run import evaluate_one, score_rows

from flows.artifacts import artifact_key, publish_table
from flows.common import fail_if_any, flow_settings, state_error
from flows.runners import describe_runner, on_dask, task_runner

__all__ = ["evaluate_task", "evaluate_series_flow", "evaluate_flow"]


@task(name="evaluate-series", task_run_name="evaluate {symbol} {tf}")
def evaluate_task(settings: Settings, symbol: str, tf: str, origins: int | None, workers: int | None) -> SeriesEvaluation:
    return evaluate_one(settings, symbol, tf, n_origins=origins, workers=workers)


@flow(name="evaluate-series")
def evaluate_series_flow(origins: int | None, workers: int | None, symbols: list[str] | None = None,
                         timeframes: list[str] | None = None) -> tuple[list[SeriesEvaluation], dict[str, str]]:
    """Submit every series to this flow's task runner; (evaluations, failures by series)."""
    settings = flow_settings(symbols, timeframes)
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
    if on_dask(settings):
        workers = 1
    done, failures = evaluate_series_flow.with_options(task_runner=task_runner(settings))(
        origins, workers, symbols, timeframes)
    rows = score_rows(done) + [{"series": k, "model": "-", "status": "failed", "note": v} for k, v in failures.items()]
    publish_table(artifact_key("evaluate", "summary"), rows,
                  f"Evaluate: {len(done)} series evaluated, {sum(ev.status != 'ok' for ev in done)} with too little data, "
                  f"{len(failures)} failed. MASE is MAE over naive's on the same points; cov = realised band coverage.")
    logger.info("evaluate run done: %s", [f"{ev.symbol} {ev.timeframe}={ev.status}" for ev in done])
    fail_if_any("series", failures)
    return rows
