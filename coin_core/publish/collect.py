"""Read the current state of every series (store + health records) and judge its freshness.

Nothing here writes: :func:`collect_series` is the whole read side of a publish, so a store error
surfaces before a single file is touched.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .. import timeframes as tfs
from ..config import Settings
from ..freshness import Freshness, FreshnessStatus, Signal, evaluate_with_policy, worst
from ..errors import CoinPredictError, ModelError
from ..lifecycle.report import TrackRecord, track_record
from ..lifecycle.scorebook import ScoreBook
from ..lifecycle.scoring import open_scorebook
from ..forecast.base import ModelMetadata
from ..forecast.registry import champion_summary
from ..health import IngestState, PredictionHealth, read_ingest_state, read_prediction_health
from ..policy import TimeframePolicy
from ..storage.base import FORECAST_COLUMNS, CandleStore, Forecast
from ..symbols import slug
from ..timeframes import Timeframe
from .models import ForecastPoint

log = logging.getLogger(__name__)

__all__ = ["SeriesFiles", "SeriesState", "collect_one", "collect_series", "check_forecast", "series_files"]


@dataclass(frozen=True)
class SeriesFiles:
    history: str
    prediction: str
    page: str


def series_files(symbol: str, tf: Timeframe) -> SeriesFiles:
    """File names of a series, built only from the validated slug and timeframe."""
    name = f"{slug(symbol)}_{tfs.parse_timeframe(tf)}"
    return SeriesFiles(f"history_{name}.json", f"prediction_{name}.json", f"{name}.html")


@dataclass(frozen=True)
class SeriesState:
    """Everything publish needs about one series at ``now_ms``."""

    symbol: str
    timeframe: Timeframe
    policy: TimeframePolicy
    candles: pd.DataFrame
    first_ts: int | None
    latest_ts: int | None
    forecast: Forecast | None
    history: Freshness
    prediction: Freshness | None
    health: PredictionHealth | None
    ingest: IngestState | None
    model: ModelMetadata | None = None
    track: TrackRecord | None = None

    @property
    def quote(self) -> str:
        """The pair's quote currency: the unit of every price of the series."""
        return self.symbol.split("/", 1)[1] if "/" in self.symbol else ""

    @property
    def slug(self) -> str:
        return slug(self.symbol)

    @property
    def files(self) -> SeriesFiles:
        return series_files(self.symbol, self.timeframe)

    @property
    def visible(self) -> bool:
        return not self.history.hidden

    @property
    def signals(self) -> tuple[Signal, ...]:
        return self.history.signals

    @property
    def status(self) -> FreshnessStatus:
        """The series' worst status; a missing forecast below the sample gate is expected."""
        parts = [self.history.status]
        if self.prediction is not None and not (
            "insufficient_data" in self.signals and self.forecast is None
        ):
            parts.append(self.prediction.status)
        return worst(parts) or self.history.status

    @property
    def last_close(self) -> float | None:
        return None if self.candles.empty else float(self.candles["close"].iloc[-1])

    @property
    def quote(self) -> str:
        """The unit of every price of this series: the pair's quote currency (``USDT``)."""
        return self.symbol.split("/", 1)[1]

    @property
    def served_points(self) -> pd.DataFrame | None:
        """The stored forecast's points when it may be served (all of them: the data file), else None."""
        if self.forecast is None or self.prediction is None or not self.prediction.served:
            return None
        return self.forecast.points

    @property
    def shown_points(self) -> pd.DataFrame | None:
        """The forecast points a page shows: only those after the latest stored candle.

        The one place that decides it: the chart, the forecast table and the "next" figures all
        use it. A kept (degraded) forecast may start at candles that have closed since: those
        are history now, not a forecast. None when the prediction is blocked.
        """
        points = self.served_points
        if points is None:
            return None
        if self.latest_ts is not None:
            points = points[points["ts"] > self.latest_ts]
        return points.reset_index(drop=True)

    @property
    def next_point(self) -> ForecastPoint | None:
        """The first shown forecast point (the candle after the latest stored one)."""
        points = self.shown_points
        if points is None or points.empty:
            return None
        row = points.iloc[0]
        return ForecastPoint(ts=int(row["ts"]), yhat=float(row["yhat"]),
                             yhat_lower=float(row["yhat_lower"]), yhat_upper=float(row["yhat_upper"]))


def check_forecast(forecast: Forecast, tf: Timeframe) -> str | None:
    """Why a stored forecast must not be served (``corrupt``), or None when it is sound."""
    points = forecast.points
    if not forecast.model_version:
        return "forecast has no model version"
    if points.empty:
        return "forecast has no points"
    values = points[list(FORECAST_COLUMNS)]
    if not all(math.isfinite(float(v)) for v in values.to_numpy().ravel()):
        return "forecast has a missing or non-finite value"
    if (points["yhat_lower"] > points["yhat_upper"]).any():
        return "forecast interval has lower above upper"
    ts = [int(t) for t in points["ts"]]
    expected = [tfs.add(forecast.input_last_ts, tf, i + 1) for i in range(len(ts))]
    if ts != expected:
        return "forecast points are not the consecutive candles after its input"
    return None


def _prediction_freshness(
    forecast: Forecast | None, tf: Timeframe, now_ms: int, policy: TimeframePolicy,
    health: PredictionHealth | None, ingest: IngestState | None,
) -> Freshness | None:
    """Judged on the forecast's ``input_last_ts``: a forecast made from stale candles is stale."""
    if not policy.predicted:
        return None
    problem = check_forecast(forecast, tf) if forecast is not None else None
    return evaluate_with_policy(
        None if forecast is None else forecast.input_last_ts, tf, now_ms, policy,
        corrupt=problem is not None, corrupt_reason=f"stored forecast is invalid: {problem}",
        prediction_health=health, ingest_state=ingest, missing_reason="no forecast has been issued yet",
    )


_ERROR_KIND = re.compile(r"^([A-Z][A-Za-z]{2,40}Error)\b")


def _public(health: PredictionHealth | None) -> PredictionHealth | None:
    """Only the kind of a failure reaches the public site: messages can name hosts or paths.

    The full text stays in ``data/state`` and the Prefect run logs for the operator.
    """
    if health is None or not health.last_error:
        return health
    kind = _ERROR_KIND.match(health.last_error)
    summary = f"{kind.group(1)} (details in the operator's logs)" if kind else "prediction failed (details in the operator's logs)"
    return health.model_copy(update={"last_error": summary})


def collect_one(store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, now_ms: int,
                book: ScoreBook | None = None) -> SeriesState:
    policy = settings.policy(tf)
    data_dir = Path(settings.data_dir)
    health = _public(read_prediction_health(data_dir, symbol, tf))
    ingest = read_ingest_state(data_dir, symbol, tf)
    bounds = store.bounds(symbol, tf)
    candles = store.tail(symbol, tf, policy.served_candles)
    forecast = store.latest_forecast(symbol, tf) if policy.predicted else None
    history = evaluate_with_policy(
        None if bounds is None else bounds[1], tf, now_ms, policy,
        prediction_health=health, ingest_state=ingest,
    )
    return SeriesState(
        symbol=symbol, timeframe=tf, policy=policy, candles=candles,
        first_ts=None if bounds is None else bounds[0], latest_ts=None if bounds is None else bounds[1],
        forecast=forecast, history=history, prediction=_prediction_freshness(forecast, tf, now_ms, policy, health, ingest),
        health=health, ingest=ingest, model=_champion(settings, symbol, tf) if policy.predicted else None,
        track=_track(settings, book, symbol, tf, candles) if policy.predicted and book is not None else None,
    )


def _track(settings: Settings, book: ScoreBook, symbol: str, tf: Timeframe, candles: pd.DataFrame) -> TrackRecord | None:
    """The live track record; a damaged lifecycle file must not take the site down (scoring and
    the CLI report it, naming the file), so it is logged and the record left out."""
    since = int(candles["ts"].iloc[0]) if not candles.empty else None
    try:
        return track_record(settings, book, symbol, tf, since=since)
    except (CoinPredictError, OSError) as exc:
        log.error("track record of %s %s not published: %s", symbol, tf, exc)
        return None


def _champion(settings: Settings, symbol: str, tf: Timeframe) -> ModelMetadata | None:
    """The serving model's metadata (trained range, rows) for the models page; None if unreadable."""
    try:
        return champion_summary(settings, symbol, tf)
    except ModelError:
        return None


def collect_series(store: CandleStore, settings: Settings, now_ms: int) -> list[SeriesState]:
    """Every configured series (``target_symbols`` x ``ingest_timeframes``), in settings order."""
    try:
        book: ScoreBook | None = open_scorebook(settings)
    except CoinPredictError as exc:
        log.error("live track records not published: %s", exc)
        book = None
    try:
        return [collect_one(store, settings, symbol, tf, now_ms, book) for symbol, tf in settings.series()]
    finally:
        if book is not None:
            book.close()
