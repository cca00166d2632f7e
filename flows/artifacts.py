"""Run reports as Prefect table artifacts: what an operator reads in the UI after each run."""

from __future__ import annotations

from typing import Any, Iterable

from prefect.artifacts import create_table_artifact

from coin_core.forecast.predict import PredictOutcome
from coin_core.forecast.training import TrainResult
from coin_core.ingest import SeriesReport
from coin_core.lifecycle import GateOutcome

__all__ = ["artifact_key", "ingest_rows", "forecast_columns", "train_row", "gate_columns", "publish_table"]


def artifact_key(*parts: str) -> str:
    """A valid artifact key (lowercase, digits, dashes); ``1M`` becomes ``1mo`` to stay apart from ``1m``."""
    words = ["1mo" if p == "1M" else p for p in parts]
    return "-".join(words).lower()


def ingest_rows(reports: Iterable[SeriesReport]) -> list[dict[str, Any]]:
    return [r.as_row() for r in reports]


def forecast_columns(outcome: PredictOutcome | None, error: str | None = None) -> dict[str, Any]:
    """The forecast part of a cycle row; ``error`` when the forecast task itself failed."""
    if outcome is None:
        return {"forecast": "failed" if error else "not run", "model": "", "forecast error": error or ""}
    return {"forecast": outcome.status, "model": outcome.model_version or "", "forecast error": outcome.error or ""}


def train_row(symbol: str, tf: str, model: str, result: TrainResult | None, cached: bool, error: str | None) -> dict[str, Any]:
    if result is None:
        return {"series": f"{symbol} {tf}", "model": model, "status": "failed", "version": "", "rows": 0,
                "fit seconds": 0.0, "cached": False, "error": error or ""}
    return {"series": f"{symbol} {tf}", "model": model, "status": result.status, "version": result.model_version or "",
            "rows": result.row_count, "fit seconds": round(result.fit_seconds, 2), "cached": cached,
            "error": error or (result.message if result.status == "insufficient_data" else "")}


def gate_columns(outcome: GateOutcome | None, error: str | None) -> dict[str, Any]:
    """The gate part of a train row: its verdict, what serves afterwards, and why."""
    if outcome is None:
        return {"gate": "failed", "serving": "", "gate reason": "", "gate error": error or ""}
    return {"gate": outcome.status, "serving": outcome.champion or "", "gate reason": outcome.message, "gate error": ""}


def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """One table artifact per run under a stable key, so the UI shows its history run by run."""
    create_table_artifact(table=rows, key=key, description=description)
