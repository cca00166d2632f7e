"""The evaluate flow: rolling-origin evaluation of every predicted series, daily.

Each series is one task over ``coin_core.evaluation.run.evaluate_one`` (it reads the store,
evaluates the baselines, the champion spec and the challengers, persists the result and seeds
missing band states). The fits of one series run in a process pool inside the task. The run's
table artifact lists MASE, WIS and band coverage per series and model.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from coin_core.config import Settings
from coin_core.evaluation import SeriesEvaluation
from coin_core.evaluation.run import evaluate_one, score_rows

from flows.artifacts import artifact_key, publish_table
from flows.common import fail_if_any, flow_settings, state_error

__all__ = ["evaluate_task", "evaluate_flow"]


@task(name="evaluate-series")
def evaluate_task(settings: Settings, symbol: str, tf: str, origins: int | None, workers: int | None) -> SeriesEvaluation:
    return evaluate_one(settings, symbol, tf, n_origins=origins, workers=workers)


@flow(name="evaluate")
def evaluate_flow(symbols: list[str] | None = None, timeframes: list[str] | None = None,
                  origins: int | None = None, workers: int | None = None) -> list[dict[str, Any]]:
    """Evaluate every predicted series (``origins`` scored origins each; ``workers`` processes)."""
    settings = flow_settings(symbols, timeframes)
    done: list[SeriesEvaluation] = []
    failures: dict[str, str] = {}
    for symbol, tf in settings.series(predicted_only=True):
        state = evaluate_task(settings, symbol, tf, origins, workers, return_state=True)
        error = state_error(state)
        if error is None:
            done.append(state.result())
        else:
            failures[f"{symbol} {tf}"] = error
    rows = score_rows(done) + [{"series": k, "model": "-", "status": "failed", "note": v} for k, v in failures.items()]
    publish_table(artifact_key("evaluate", "summary"), rows,
                  f"Evaluate: {len(done)} series evaluated, {sum(ev.status != 'ok' for ev in done)} with too little data, "
                  f"{len(failures)} failed. MASE is MAE over naive's on the same points; cov = realised band coverage.")
    get_run_logger().info("evaluate run done: %s", [f"{ev.symbol} {ev.timeframe}={ev.status}" for ev in done])
    fail_if_any("series", failures)
    return rows
