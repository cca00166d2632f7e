"""Score every stored forecast (champion and shadows) once its target candle has closed.

Incremental: a series' watermark (the latest candle scored through) bounds what is read, to the
forecasts that can still have an unscored target: issued from ``horizon + 2`` candles before it.
Idempotent: rows are keyed (series, version, issued_at, target_ts) and inserted with the
watermark in one transaction, so a kill at any moment is finished by the next run and nothing is
scored twice. Within the forecast retention: pruned forecasts cannot be scored, and the book is
pruned with them. New points then feed each model's calibrated bands (``update_bands``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import pandas as pd

from ..config import Settings
from ..storage.base import CandleStore, Forecast
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


def _closes(store: CandleStore, symbol: str, tf: Timeframe, start: int, end: int) -> pd.Series:
    frame = store.read_candles(symbol, tf, start, end)
    return pd.Series(frame["close"].to_numpy(), index=frame["ts"].to_numpy())


def _rows(forecast: Forecast, closes: pd.Series, sigma: float | None, known: set[tuple[str, int, int]]) -> Iterator[ScoreRow]:
    anchor = closes.get(forecast.input_last_ts)
    if anchor is None:
        return  # the input candle left the store (retention): the naive error is unknown
    for step, point in enumerate(forecast.points.itertuples(index=False), start=1):
        target = int(point.ts)
        y = closes.get(target)
        if y is None or (forecast.model_version, forecast.issued_at, target) in known:
            continue
        lo50, hi50 = (None if pd.isna(v) else float(v) for v in (point.yhat_lower_50, point.yhat_upper_50))
        yield ScoreRow(forecast.symbol, forecast.timeframe, forecast.model_version, forecast.issued_at, target,
                       forecast.role, forecast.model, step, float(y), float(point.yhat), float(point.yhat_lower),
                       float(point.yhat_upper), lo50, hi50, abs(float(y) - float(anchor)), sigma)


def score_series(store: CandleStore, settings: Settings, book: ScoreBook, symbol: str, tf: Timeframe, *,
                 now_ms: int) -> ScoreReport:
    """Score what closed since the last run; safe to kill and to run twice."""
    symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
    policy = settings.policy(tf)
    latest = store.latest_ts(symbol, tf)
    if latest is None or not policy.predicted:
        return ScoreReport(symbol, tf, 0, None)
    mark = book.watermark(symbol, tf)
    issued_from = None if mark is None else add(mark, tf, -(policy.horizon + 2))
    forecasts = [f for f in store.read_forecasts(symbol, tf, issued_from=issued_from) if f.input_last_ts < latest]
    rows: list[ScoreRow] = []
    if forecasts:
        first = min(f.input_last_ts for f in forecasts)
        closes = _closes(store, symbol, tf, first, latest)
        known = book.known(symbol, tf, issued_from)
        for forecast in forecasts:
            rows += _rows(forecast, closes, None, known)
    scored = book.add(symbol, tf, rows, latest)
    book.prune(symbol, tf, now_ms - settings.forecast_retention_days * 86_400_000)
    if scored:
        log.info("scored %d realised point(s) of %s %s through %d", scored, symbol, tf, latest)
    return ScoreReport(symbol, tf, scored, latest)

