"""Read the current state of every series (store + health records) and judge its freshness.

Nothing here writes: :func:`collect_series` is the whole read side of a publish, so a store error
surfaces before a single file is touched.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator, Mapping

import pandas as pd

from .. import timeframes as tfs
from ..config import Settings
from ..candles import COLUMNS, empty_frame
from ..freshness import Freshness
from ..errors import CoinPredictError, ModelError
from ..lifecycle.report import TrackRecord, track_record
from ..lifecycle.scorebook import ScoreBook
from ..lifecycle.scoring import open_scorebook
from ..forecast.base import ModelMetadata
from ..forecast.registry import champion_summary
from ..health import IngestState, PredictionHealth
from ..policy import TimeframePolicy
from ..status import Judged, SeriesHealth, StatusPicture, build_status, check_forecast, read_series
from ..storage.base import FORECAST_COLUMNS, CandleStore, Forecast
from ..symbols import slug
from ..timeframes import Timeframe
from .models import ForecastPoint, HistoryFile, PredictionFile

log = logging.getLogger(__name__)

__all__ = ["SeriesFiles", "SeriesState", "collect_one", "collect_series", "iter_series", "check_forecast", "series_files", "public_error"]


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
class SeriesState(Judged):
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

    @cached_property
    def slug(self) -> str:
        return slug(self.symbol)

    @cached_property
    def files(self) -> SeriesFiles:
        return series_files(self.symbol, self.timeframe)

    @property
    def has_forecast(self) -> bool:
        return self.forecast is not None

    # Derived from the frames once per state (pages ask for them dozens of times); the state is
    # frozen, so a cached value cannot go stale.
    @cached_property
    def last_close(self) -> float | None:
        return None if self.candles.empty else float(self.candles["close"].iloc[-1])

    @property
    def served_points(self) -> pd.DataFrame | None:
        """The stored forecast's points when it may be served (all of them: the data file), else None."""
        if self.forecast is None or self.prediction is None or not self.prediction.served:
            return None
        return self.forecast.points

    @cached_property
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

    @cached_property
    def shown_rows(self) -> list[ForecastPoint] | None:
        """:attr:`shown_points` as rows, for the pages' tables."""
        points = self.shown_points
        if points is None:
            return None
        columns = [points[name].to_numpy(dtype="int64" if name == "ts" else "float64").tolist()
                   for name in ("ts", "yhat", "yhat_lower", "yhat_upper")]
        return [ForecastPoint.model_construct(ts=ts, yhat=y, yhat_lower=lo, yhat_upper=hi)  # typed just above
                for ts, y, lo, hi in zip(*columns)]

    @cached_property
    def next_point(self) -> ForecastPoint | None:
        """The first shown forecast point (the candle after the latest stored one)."""
        return self.shown_rows[0] if self.shown_rows else None


_ERROR_KIND = re.compile(r"^([A-Z][A-Za-z]{2,40}Error)\b")


def public_error(text: str | None, what: str = "failed") -> str | None:
    """Only the kind of a failure reaches the public site: messages can name hosts or paths.

    The full text stays in ``data/state``, ``coin-predict status`` and the Prefect run logs.
    """
    if not text:
        return text
    kind = _ERROR_KIND.match(text)
    return f"{kind.group(1)} (details in the operator's logs)" if kind else f"{what} (details in the operator's logs)"


def _public(health: PredictionHealth | None) -> PredictionHealth | None:
    if health is None or not health.last_error:
        return health
    return health.model_copy(update={"last_error": public_error(health.last_error, "prediction failed")})


def _published(settings: Settings, name: str, model: type[HistoryFile] | type[PredictionFile]) -> HistoryFile | PredictionFile | None:
    """A data file of the last publish (the store is down: it is all the site has left)."""
    try:
        return model.model_validate_json((Path(settings.public_dir) / name).read_bytes())
    except (OSError, ValueError):
        return None


def _last_published(settings: Settings, h: SeriesHealth) -> tuple[pd.DataFrame, Forecast | None]:
    """Candles and forecast as last published, for a site built while the store is down."""
    files = series_files(h.symbol, h.timeframe)
    history = _published(settings, files.history, HistoryFile)
    rows = [c.model_dump() for c in history.candles] if isinstance(history, HistoryFile) else []
    candles = pd.DataFrame(rows, columns=list(COLUMNS)) if rows else empty_frame()
    pred = _published(settings, files.prediction, PredictionFile) if h.policy.predicted else None
    if not isinstance(pred, PredictionFile) or not pred.points or pred.input_last_ts is None:
        return candles, None
    points = pd.DataFrame([p.model_dump() for p in pred.points], columns=list(FORECAST_COLUMNS))
    return candles, Forecast(h.symbol, h.timeframe, pred.issued_at or 0, pred.model_version or "",
                             pred.input_last_ts, points)


def collect_one(store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, now_ms: int,
                health: SeriesHealth | None = None, book: ScoreBook | None = None) -> SeriesState:
    """Publish's view of one series: its health (from the status picture) plus candles and model."""
    h = health or read_series(store, settings, symbol, tf, now_ms)
    if h.from_store:
        candles = store.tail(h.symbol, h.timeframe, h.policy.served_candles)
        forecast = h.forecast
    else:
        candles, forecast = _last_published(settings, h)
    return SeriesState(
        symbol=h.symbol, timeframe=h.timeframe, policy=h.policy, candles=candles,
        first_ts=h.first_ts, latest_ts=h.latest_ts, forecast=forecast, history=h.history,
        prediction=h.prediction, health=_public(h.health), ingest=h.ingest,
        model=_champion(settings, h.symbol, h.timeframe) if h.policy.predicted else None,
        track=_track(settings, book, h.symbol, h.timeframe, candles) if h.policy.predicted and book is not None else None,
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


def collect_series(store: CandleStore, settings: Settings, now_ms: int,
                   picture: StatusPicture | None = None) -> list[SeriesState]:
    """Every configured series (``target_symbols`` x ``ingest_timeframes``), in settings order.

    With the store unreachable (``picture.store.reachable`` false), each series is judged from its
    last known times and shows what the last publish showed, as long as its freshness allows.
    """
    return list(iter_series(store, settings, now_ms, picture))


def iter_series(store: CandleStore, settings: Settings, now_ms: int,
                picture: StatusPicture | None = None,
                known: Mapping[tuple[str, Timeframe], SeriesState] | None = None) -> Iterator[SeriesState]:
    """:func:`collect_series` one series at a time (a publish renders each while reading the next);
    ``known``: states read already (an early publish), taken instead of reading them again."""
    picture = picture or build_status(settings, now_ms=now_ms, store=store)
    known = known or {}
    try:
        book: ScoreBook | None = open_scorebook(settings)
    except CoinPredictError as exc:
        log.error("live track records not published: %s", exc)
        book = None
    try:
        for h in picture.series:
            state = known.get((h.symbol, h.timeframe))
            yield state if state is not None else collect_one(store, settings, h.symbol, h.timeframe, now_ms, h, book)
    finally:
        if book is not None:
            book.close()
