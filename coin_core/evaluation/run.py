"""Evaluate every configured series: what ``coin-predict evaluate`` and the evaluate flow call."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from typing import Any, Iterable

from ..config import Settings
from ..forecast.bands import load_band_state, save_band_state
from ..storage import open_store
from ..timeframes import Timeframe
from .engine import evaluate_many, evaluate_series
from .results import SeriesEvaluation, save_evaluation
from .specs import candidate_specs

__all__ = ["evaluate_one", "run_evaluate", "score_rows"]

log = logging.getLogger(__name__)


def _seed_bands(settings: Settings, ev: SeriesEvaluation) -> list[str]:
    """Give each model without a band state the one its backtest ends with.

    An existing state is kept: it has been learning from live errors since it was seeded, and
    its realised coverage is what the site publishes.
    """
    seeded = []
    for name, state in ev.bands.items():
        if load_band_state(settings, ev.symbol, ev.timeframe, name) is None:
            save_band_state(settings, ev.symbol, ev.timeframe, state)
            seeded.append(name)
    return seeded


def _keep(settings: Settings, ev: SeriesEvaluation) -> SeriesEvaluation:
    """Persist one series' result and seed its missing band states."""
    save_evaluation(settings, ev)
    if ev.status == "ok":
        seeded = _seed_bands(settings, ev)
        if seeded:
            log.info("band states of %s %s seeded from the backtest: %s", ev.symbol, ev.timeframe, ", ".join(seeded))
    return ev


def evaluate_one(settings: Settings, symbol: str, tf: Timeframe, *, n_origins: int | None = None,
                 workers: int | None = None, now_ms: int | None = None) -> SeriesEvaluation:
    """Evaluate the default candidates on one series, persist the result, seed missing bands."""
    with open_store(settings) as store:
        ev = evaluate_series(store, settings, symbol, tf, candidate_specs(tf), n_origins=n_origins,
                             workers=workers, now_ms=now_ms)
    return _keep(settings, ev)


def run_evaluate(settings: Settings, *, symbols: Iterable[str] | None = None, timeframes: Iterable[str] | None = None,
                 n_origins: int | None = None, workers: int | None = None, now_ms: int | None = None,
                 executor: Executor | None = None) -> list[SeriesEvaluation]:
    """Every predicted configured series (optionally narrowed), all sharing one process pool (or
    ``executor``: see :func:`~.engine.evaluate_many`). Nothing is persisted unless every series'
    evaluation returned: a pool that dies mid-run leaves the stored results as they were."""
    scoped = settings.narrowed(symbols, timeframes)
    now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    with open_store(scoped) as store:
        evaluations = evaluate_many(store, scoped, scoped.series(predicted_only=True), candidate_specs,
                                    n_origins=n_origins, workers=workers, now_ms=now_ms, executor=executor)
    return [_keep(scoped, ev) for ev in evaluations]


def score_rows(evaluations: Iterable[SeriesEvaluation]) -> list[dict[str, Any]]:
    """One row per series x model: the table the CLI prints and the flow's artifact shows."""
    rows: list[dict[str, Any]] = []
    for ev in evaluations:
        if ev.status != "ok":
            rows.append({"series": f"{ev.symbol} {ev.timeframe}", "model": "-", "status": ev.status, "note": ev.message})
            continue
        for name, sc in ev.scores.items():
            rows.append({
                "series": f"{ev.symbol} {ev.timeframe}", "model": name, "status": ev.status,
                "origins": sc.n_origins, "mase": round(sc.mase, 3), "wis": round(sc.wis, 5),
                "cov50": round(sc.coverage50, 3), "cov80": round(sc.coverage80, 3),
                "cov80_h1": round(sc.per_step[0].coverage80, 3), "cov80_hmax": round(sc.per_step[-1].coverage80, 3),
                "width80": round(sc.width80, 4),
            })
    return rows
