"""The one status picture of the product: publish, ``coin-predict status`` and the monitor read it.

:func:`build_status` gathers, at ``now_ms``:

* every configured series: its freshness (history and forecast) from the one evaluator in
  :mod:`coin_core.freshness`, its signals, the last ingest (with its ``last_error``) and the last
  prediction (with its ``last_error``);
* the store: reachable or not, and why not;
* storage used against ``STORAGE_BUDGET_GB``;
* the cycle heartbeat of each timeframe and the runtime metrics (:mod:`coin_core.metrics`).

Error text is kept whole here (messages are secret-free when raised, see ``errors.py``); only
publish shortens it to its kind before it reaches the public site.

When the store cannot be read the picture is still honest: every series is judged from the last
candle and forecast times seen in the store (``DATA_DIR/state/last_known.json``, rewritten
whenever a read succeeds and something moved), so ages keep growing through an outage and the
series turn stale / hard_stale on time, while ``store.reachable`` says why nothing is new.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol

import numpy as np

from . import timeframes as tfs
from .config import Settings
from .errors import StorageError
from .freshness import Freshness, FreshnessStatus, Signal, evaluate_with_policy, worst
from .fsutil import atomic_write_json
from .health import IngestState, PredictionHealth, read_ingest_state, read_prediction_health
from .metrics import FlowStats, RunRecord, last_run, summarize
from .policy import TimeframePolicy
from .storage import open_store
from .storage.base import FORECAST_COLUMNS, CandleStore, Forecast
from .symbols import slug
from .timeframes import Timeframe

__all__ = [
    "Judged",
    "SeriesHealth",
    "StoreHealth",
    "StorageUsage",
    "Heartbeat",
    "StatusPicture",
    "build_status",
    "series_status",
    "read_series",
    "unmoved",
    "check_forecast",
    "overall",
    "HEARTBEAT_PERIODS",
    "run_budgets",
    "picture_dict",
]

log = logging.getLogger(__name__)

#: A cycle is late when none finished within this many of its schedule periods.
HEARTBEAT_PERIODS = 2


def check_forecast(forecast: Forecast, tf: Timeframe) -> str | None:
    """Why a stored forecast must not be served (``corrupt``), or None when it is sound."""
    points = forecast.points
    if not forecast.model_version:
        return "forecast has no model version"
    if points.empty:
        return "forecast has no points"
    values = np.column_stack([np.asarray(points[c], dtype="float64") for c in FORECAST_COLUMNS])
    if not np.isfinite(values).all():
        return "forecast has a missing or non-finite value"
    if (values[:, 2] > values[:, 3]).any():  # yhat_lower above yhat_upper
        return "forecast interval has lower above upper"
    ts = [int(t) for t in values[:, 0]]
    expected = [tfs.add(forecast.input_last_ts, tf, i + 1) for i in range(len(ts))]
    if ts != expected:
        return "forecast points are not the consecutive candles after its input"
    return None


class Judged:
    """What the status picture and publish derive alike from a series' two freshness verdicts."""

    history: Freshness
    prediction: Freshness | None

    @property
    def has_forecast(self) -> bool:
        raise NotImplementedError

    @property
    def visible(self) -> bool:
        return not self.history.hidden

    @property
    def signals(self) -> tuple[Signal, ...]:
        return self.history.signals

    @property
    def status(self) -> FreshnessStatus:
        return series_status(self.history, self.prediction, self.has_forecast)


@dataclass(frozen=True)
class SeriesHealth(Judged):
    """Everything known about one series at ``now_ms`` (no candles: publish reads those)."""

    symbol: str
    timeframe: Timeframe
    policy: TimeframePolicy
    first_ts: int | None
    latest_ts: int | None
    forecast: Forecast | None
    forecast_input_ts: int | None
    forecast_problem: str | None
    history: Freshness
    prediction: Freshness | None
    health: PredictionHealth | None
    ingest: IngestState | None
    from_store: bool = True

    @property
    def slug(self) -> str:
        return slug(self.symbol)

    @property
    def name(self) -> str:
        return f"{self.symbol} {self.timeframe}"

    @property
    def has_forecast(self) -> bool:
        return self.forecast_input_ts is not None


def series_status(history: Freshness, prediction: Freshness | None, has_forecast: bool) -> FreshnessStatus:
    """The worst of history and forecast; no forecast below the sample gate is expected."""
    parts = [history.status]
    if prediction is not None and not ("insufficient_data" in history.signals and not has_forecast):
        parts.append(prediction.status)
    return worst(parts) or history.status


@dataclass(frozen=True)
class StoreHealth:
    backend: str
    reachable: bool
    error: str | None = None


@dataclass(frozen=True)
class StorageUsage:
    used_bytes: int | None
    budget_bytes: int
    warn_ratio: float

    @property
    def ratio(self) -> float | None:
        return None if self.used_bytes is None else self.used_bytes / self.budget_bytes

    @property
    def warning(self) -> bool:
        return self.ratio is not None and self.ratio >= self.warn_ratio


@dataclass(frozen=True)
class Heartbeat:
    """When a cycle of ``timeframe`` last finished; ``late`` past :data:`HEARTBEAT_PERIODS`."""

    timeframe: Timeframe
    period_s: int
    last: RunRecord | None
    age_s: float | None

    @property
    def late(self) -> bool:
        return self.age_s is not None and self.age_s > HEARTBEAT_PERIODS * self.period_s


@dataclass(frozen=True)
class StatusPicture:
    generated_at: int
    store: StoreHealth
    storage: StorageUsage
    series: list[SeriesHealth]
    heartbeats: list[Heartbeat] = field(default_factory=list)
    metrics: list[FlowStats] = field(default_factory=list)

    @property
    def overall(self) -> tuple[FreshnessStatus, str]:
        return overall(self.series, self.store)


class _Judged(Protocol):
    symbol: str
    timeframe: Timeframe

    @property
    def visible(self) -> bool: ...

    @property
    def status(self) -> FreshnessStatus: ...


def overall(items: Iterable[_Judged], store: StoreHealth | None = None) -> tuple[FreshnessStatus, str]:
    """(status, reason) of the whole site: the worst visible series; an outage is named first."""
    items = list(items)
    visible = [s for s in items if s.visible]
    if not visible:
        status: FreshnessStatus = "hard_stale"
        reason = f"no series visible yet ({len(items)} configured, waiting for backfill)"
    else:
        status = worst(s.status for s in visible) or "fresh"
        bad = [f"{s.symbol} {s.timeframe}" for s in visible if s.status == status]
        reason = (f"all {len(visible)} visible series are fresh" if status == "fresh"
                  else f"{status.replace('_', ' ')}: {', '.join(bad)}")
    if store is not None and not store.reachable:
        reason = f"the {store.backend} store cannot be read: data as of its last successful read; {reason}"
    return status, reason


# ---- last known candle and forecast times (the outage fallback) ----------------------------------

def _last_known_path(data_dir: Path) -> Path:
    return Path(data_dir) / "state" / "last_known.json"


def _read_last_known(data_dir: Path) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(_last_known_path(data_dir).read_text("utf-8"))
        return data if isinstance(data, dict) else {}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable last-known record: %s", exc)
        return {}


def _save_last_known(data_dir: Path, series: list[SeriesHealth]) -> None:
    known = _read_last_known(data_dir)
    fresh = {f"{s.slug}_{s.timeframe}": {
        "first_ts": s.first_ts, "latest_ts": s.latest_ts, "forecast_input_ts": s.forecast_input_ts,
        "forecast_problem": s.forecast_problem,
    } for s in series}
    merged = {**known, **fresh}
    if merged != known:
        try:
            atomic_write_json(_last_known_path(data_dir), merged)
        except OSError as exc:  # a full disk must not stop a status read
            log.warning("cannot save the last known candle times: %s", exc)


# ---- one series --------------------------------------------------------------------------------

def _prediction(
    input_ts: int | None, problem: str | None, tf: Timeframe, now_ms: int, policy: TimeframePolicy,
    health: PredictionHealth | None, ingest: IngestState | None,
) -> Freshness | None:
    """Judged on the forecast's ``input_last_ts``: a forecast made from stale candles is stale."""
    if not policy.predicted:
        return None
    return evaluate_with_policy(
        input_ts, tf, now_ms, policy, corrupt=problem is not None,
        corrupt_reason=f"stored forecast is invalid: {problem}",
        prediction_health=health, ingest_state=ingest, missing_reason="no forecast has been issued yet",
    )


def read_series(store: CandleStore | None, settings: Settings, symbol: str, tf: Timeframe, now_ms: int) -> SeriesHealth:
    """One series from the store, or (``store=None``) from its last known times."""
    policy, data_dir = settings.policy(tf), Path(settings.data_dir)
    health = read_prediction_health(data_dir, symbol, tf)
    ingest = read_ingest_state(data_dir, symbol, tf)
    if store is not None:
        bounds = store.bounds(symbol, tf)
        forecast = store.latest_forecast(symbol, tf) if policy.predicted else None
        first, latest = (None, None) if bounds is None else bounds
        input_ts = None if forecast is None else forecast.input_last_ts
        problem = None if forecast is None else check_forecast(forecast, tf)
    else:
        known = _read_last_known(data_dir).get(f"{slug(symbol)}_{tf}", {})
        first, latest, input_ts = (_int(known.get(k)) for k in ("first_ts", "latest_ts", "forecast_input_ts"))
        found = known.get("forecast_problem")
        forecast, problem = None, found if isinstance(found, str) else None
    history = evaluate_with_policy(latest, tf, now_ms, policy, prediction_health=health, ingest_state=ingest)
    return SeriesHealth(
        symbol=symbol, timeframe=tf, policy=policy, first_ts=first, latest_ts=latest,
        forecast=forecast, forecast_input_ts=input_ts, forecast_problem=problem, history=history,
        prediction=_prediction(input_ts, problem, tf, now_ms, policy, health, ingest),
        health=health, ingest=ingest, from_store=store is not None,
    )


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _series_dict(s: SeriesHealth) -> dict[str, object]:
    def fresh(f: Freshness | None) -> dict[str, object] | None:
        return None if f is None else {"status": f.status, "served": f.served, "age_s": f.age_s, "reason": f.reason}

    return {
        "series": s.name, "visible": s.visible, "status": s.status, "signals": list(s.signals),
        "latest_ts": s.latest_ts, "forecast_input_ts": s.forecast_input_ts, "from_store": s.from_store,
        "history": fresh(s.history), "prediction": fresh(s.prediction),
        "ingest": None if s.ingest is None else s.ingest.model_dump(),
        "prediction_health": None if s.health is None else s.health.model_dump(),
    }


def picture_dict(picture: StatusPicture) -> dict[str, object]:
    """The whole picture as JSON-ready data, error text in full (``coin-predict status``)."""
    status, reason = picture.overall
    usage = picture.storage
    return {
        "generated_at": picture.generated_at, "overall": status, "reason": reason,
        "store": vars(picture.store),
        "storage": {"used_bytes": usage.used_bytes, "budget_bytes": usage.budget_bytes,
                    "used_ratio": usage.ratio, "warn_ratio": usage.warn_ratio, "warning": usage.warning},
        "heartbeats": [{"timeframe": b.timeframe, "age_s": b.age_s, "late": b.late,
                        "last_finished_at": None if b.last is None else b.last.finished_at} for b in picture.heartbeats],
        "runtime": [{"flow": f.flow, "windows": {k: vars(w) for k, w in f.windows.items()},
                     "steps_p95_s": f.steps_p95_s} for f in picture.metrics],
        "series": [_series_dict(s) for s in picture.series],
    }


# ---- the whole picture -------------------------------------------------------------------------

def _error_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def unmoved(store: CandleStore, settings: Settings, h: SeriesHealth) -> bool:
    """Whether a series read earlier at the same clock still reads the same: its candle bounds,
    latest forecast (by identity: a stored forecast never changes) and both records. Costs a
    fifth of :func:`read_series`, which decodes and checks the forecast."""
    data_dir = Path(settings.data_dir)
    seen = None if h.forecast is None else (h.forecast.issued_at, h.forecast.model_version, h.forecast.input_last_ts)
    return (h.from_store
            and store.bounds(h.symbol, h.timeframe) == (None if h.latest_ts is None else (h.first_ts, h.latest_ts))
            and (store.latest_forecast_id(h.symbol, h.timeframe) if h.policy.predicted else None) == seen
            and read_ingest_state(data_dir, h.symbol, h.timeframe) == h.ingest
            and read_prediction_health(data_dir, h.symbol, h.timeframe) == h.health)


def _read_all(store: CandleStore, settings: Settings, now_ms: int,
              known: Mapping[tuple[str, Timeframe], SeriesHealth]) -> tuple[list[SeriesHealth], int | None]:
    store.ping()
    series = []
    for symbol, tf in settings.series():
        h = known.get((symbol, tf))
        series.append(h if h is not None and unmoved(store, settings, h) else read_series(store, settings, symbol, tf, now_ms))
    return series, store.size_bytes()


def _heartbeats(settings: Settings, now_ms: int) -> list[Heartbeat]:
    beats = []
    for tf in settings.ingest_timeframes:
        last = last_run(Path(settings.data_dir), f"cycle {tf}")
        age = None if last is None else (now_ms - last.finished_at) / 1000.0
        beats.append(Heartbeat(tf, tfs.interval_ms(tf) // 1000, last, age))
    return beats


def run_budgets(settings: Settings) -> dict[str, float]:
    """Overrun budget per flow kind (the first word of a run record's flow)."""
    return {"cycle": settings.cycle_budget_s, "train": settings.train_budget_s, "monitor": settings.monitor_budget_s}


def build_status(
    settings: Settings, *, now_ms: int, store: CandleStore | None = None,
    opener: Callable[[Settings], CandleStore] = open_store,
    known: Mapping[tuple[str, Timeframe], SeriesHealth] | None = None,
) -> StatusPicture:
    """The full picture at ``now_ms``; never raises because the store is down (it says so).

    ``store`` reuses an open store (publish, the cycle); otherwise one is opened and closed here.
    ``known``: series read already at ``now_ms`` (a cycle's early publish, in its workers), taken
    as they are while :func:`unmoved`, else read again.
    """
    backend = settings.store
    known = known or {}
    try:
        if store is not None:
            series, used = _read_all(store, settings, now_ms, known)
        else:
            with opener(settings) as opened:
                series, used = _read_all(opened, settings, now_ms, known)
        store_health = StoreHealth(backend, True)
        _save_last_known(Path(settings.data_dir), series)
    except StorageError as exc:
        log.info("status: the %s store cannot be read: %s", backend, exc)  # callers report it
        store_health = StoreHealth(backend, False, _error_line(exc))
        series = [read_series(None, settings, s, tf, now_ms) for s, tf in settings.series()]
        used = None
    try:
        beats = _heartbeats(settings, now_ms)
        metrics = summarize(Path(settings.data_dir), now_ms=now_ms, budgets=run_budgets(settings))
    except StorageError as exc:  # unreadable metrics must not hide the freshness picture
        log.warning("status: %s", exc)
        beats, metrics = [], []
    return StatusPicture(
        generated_at=now_ms, store=store_health,
        storage=StorageUsage(used, settings.storage_budget_bytes, settings.storage_warn_ratio),
        series=series, heartbeats=beats, metrics=metrics,
    )
