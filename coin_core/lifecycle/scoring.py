"""Score every stored forecast (champion and shadows) once its target candle has closed.

Incremental: a series' watermark (the latest candle scored through) bounds what is read, to the
forecasts that can still have an unscored target: issued from ``horizon + 2`` candles before it.
Idempotent: rows are keyed (series, version, issued_at, target_ts) and inserted with the
watermark in one transaction, so a kill at any moment is finished by the next run and nothing is
scored twice. Within the forecast retention: pruned forecasts cannot be scored, and the book is
pruned with them. New points then feed each model's calibrated bands (``update_bands``), after
the rows are committed: a kill in between loses that batch's band update (at most once), so a
live error is never counted twice; the band state file is rewritten atomically.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..config import Settings
from ..errors import ModelError
from ..forecast.bands import (
    VOL_ROWS, BandOutcome, band_halflife, load_band_state, new_band_state, save_band_state, sigma_of, update_bands,
)
from ..storage.base import CandleStore, ForecastColumns
from ..symbols import parse_symbol
from ..timeframes import Timeframe, add, parse_timeframe
from .scorebook import ScoreBook, ScoreRow

__all__ = ["ScoreReport", "score_series", "open_scorebook"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScoreReport:
    symbol: str
    timeframe: Timeframe
    scored: int
    through: int | None
    fed_bands: int = 0


def open_scorebook(settings: Settings) -> ScoreBook:
    from .scorebook import SCORES_FILE

    return ScoreBook(settings.data_dir / SCORES_FILE)


@dataclass(frozen=True)
class _Closes:
    """Closes from ``VOL_ROWS`` candles before the first issue to the latest: arrays for the
    volatility windows, a dict for the per-point lookups (one per scored point: no pandas)."""

    ts: np.ndarray
    close: np.ndarray
    by_ts: dict[int, float]


def _closes(store: CandleStore, symbol: str, tf: Timeframe, start: int, end: int) -> _Closes:
    """Closes from ``VOL_ROWS`` candles before ``start`` (the volatility at each issue) to ``end``."""
    ts, close = store.read_closes(symbol, tf, add(start, tf, -(VOL_ROWS - 1)), end)
    return _Closes(np.asarray(ts, dtype="int64"), np.asarray(close, dtype="float64"), dict(zip(ts, close)))


def _sigma(closes: _Closes, last_ts: int, horizon: int) -> float | None:
    """The volatility the forecast issued from ``last_ts`` was banded with (``bands.sigma_at``)."""
    end = int(np.searchsorted(closes.ts, last_ts, side="right"))
    try:
        return sigma_of(closes.close[max(0, end - VOL_ROWS):end], band_halflife(horizon))
    except ModelError:
        return None


def _feed_bands(settings: Settings, symbol: str, tf: Timeframe, rows: list[ScoreRow], horizon: int, now_ms: int) -> int:
    """Live errors into each model's band state; one point per (model, issue, target), the champion's first."""
    chosen: dict[tuple[str, int, int], ScoreRow] = {}
    for row in sorted(rows, key=lambda r: r.role != "champion"):
        if row.sigma and row.y > 0 and row.yhat > 0:
            chosen.setdefault((row.model, row.issued_at, row.target_ts), row)
    fed = 0
    for model in sorted({key[0] for key in chosen}):
        picked = sorted((r for k, r in chosen.items() if k[0] == model), key=lambda r: (r.target_ts, r.step))
        outcomes = [BandOutcome(step=r.step, yhat=r.yhat, y=r.y, sigma=float(r.sigma or 0), covered=_covered(r))
                    for r in picked if r.step <= horizon]
        state = load_band_state(settings, symbol, tf, model) or new_band_state(model, horizon)
        if state.horizon < horizon:
            continue  # a state sized for a shorter policy horizon: the next evaluation reseeds it
        save_band_state(settings, symbol, tf, update_bands(state, outcomes, now_ms))
        fed += len(outcomes)
    return fed


def _covered(row: ScoreRow) -> dict[float, bool]:
    covered = {0.8: row.lo80 <= row.y <= row.hi80}
    if row.lo50 is not None and row.hi50 is not None:
        covered[0.5] = row.lo50 <= row.y <= row.hi50
    return covered


def _rows(forecast: ForecastColumns, closes: _Closes, sigma: float | None, known: set[tuple[str, int, int]]) -> Iterator[ScoreRow]:
    """The forecast's points whose candle has closed and that are not scored yet."""
    anchor = closes.by_ts.get(forecast.input_last_ts)
    if anchor is None:
        return  # the input candle left the store (retention): the naive error is unknown
    targets = [int(t) for t in forecast.columns.get("ts", [])]
    fresh = [i for i, t in enumerate(targets) if t in closes.by_ts
             and (forecast.model_version, forecast.issued_at, t) not in known]
    if not fresh:
        return
    yhat, lo80, hi80, lo50, hi50 = (forecast.floats(c) for c in
                                    ("yhat", "yhat_lower", "yhat_upper", "yhat_lower_50", "yhat_upper_50"))
    for i in fresh:
        y = closes.by_ts[targets[i]]
        yield ScoreRow(forecast.symbol, forecast.timeframe, forecast.model_version, forecast.issued_at, targets[i],
                       forecast.role, forecast.model, i + 1, y, yhat[i], lo80[i], hi80[i], _or_none(lo50[i]),
                       _or_none(hi50[i]), abs(y - anchor), sigma)


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def score_series(store: CandleStore, settings: Settings, book: ScoreBook, symbol: str, tf: Timeframe, *,
                 now_ms: int, through_ts: int | None = None) -> ScoreReport:
    """Score what closed since the last run, through candle ``through_ts`` (default: the latest
    stored); safe to kill and to run twice."""
    symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
    policy = settings.policy(tf)
    latest = store.latest_ts(symbol, tf) if through_ts is None else through_ts
    if latest is None or not policy.predicted:
        return ScoreReport(symbol, tf, 0, None)
    mark = book.watermark(symbol, tf)
    issued_from = None if mark is None else add(mark, tf, -(policy.horizon + 2))
    forecasts = [f for f in store.read_forecast_columns(symbol, tf, issued_from=issued_from) if f.input_last_ts < latest]
    rows: list[ScoreRow] = []
    if forecasts:
        first = min(f.input_last_ts for f in forecasts)
        closes = _closes(store, symbol, tf, first, latest)
        known = book.known(symbol, tf, issued_from)
        sigmas = {t: _sigma(closes, t, policy.horizon) for t in {f.input_last_ts for f in forecasts}}
        for forecast in forecasts:
            rows += _rows(forecast, closes, sigmas[forecast.input_last_ts], known)
    scored = book.add(symbol, tf, rows, latest)
    book.prune(symbol, tf, now_ms - settings.forecast_retention_days * 86_400_000)
    fed = _feed_bands(settings, symbol, tf, rows, policy.horizon, now_ms) if scored else 0
    if scored:
        log.info("scored %d realised point(s) of %s %s through %d", scored, symbol, tf, latest)
    return ScoreReport(symbol, tf, scored, latest, fed)

