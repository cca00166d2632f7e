"""The published data files, one pydantic model each; their JSON Schemas are published beside them.

A blocked artifact (``hard_stale``, ``corrupt``, or a series hidden while it backfills) is not
removed: its file is replaced by a *blocked marker*, the same model with ``served: false``, no
candles or points, and the ``reason``. A static host then answers with an explanation instead of
a 404 or, worse, the last file that must no longer be served. Readers check ``served`` first.

Bump ``SCHEMA_VERSION`` (and the schema file names) on any incompatible change.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..freshness import FreshnessStatus, Signal
from ..lifecycle.report import TrackRecord
from ..timeframes import Timeframe

__all__ = [
    "SCHEMA_VERSION",
    "CandleRow",
    "ForecastPoint",
    "HistoryFile",
    "PredictionFile",
    "ArtifactRef",
    "ManifestSeries",
    "ManifestFile",
    "StatusArtifact",
    "StatusSeries",
    "StatusFile",
    "StoreInfo",
    "StorageInfo",
    "RuntimeWindow",
    "RuntimeFlow",
    "HeartbeatInfo",
    "TrackRecordFile",
    "SCHEMA_MODELS",
    "schema_name",
]

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CandleRow(_Model):
    ts: int = Field(description="candle open time, UTC milliseconds")
    open: float
    high: float
    low: float
    close: float
    volume: float


class ForecastPoint(_Model):
    ts: int = Field(description="open time of the forecast candle, UTC milliseconds")
    yhat: float
    yhat_lower: float
    yhat_upper: float


class _SeriesArtifact(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    symbol: str = Field(description="ccxt unified symbol, e.g. BTC/USDT")
    timeframe: Timeframe
    served: bool = Field(description="false: a blocked marker, nothing below may be shown")
    status: FreshnessStatus
    signals: list[Signal]
    reason: str


class HistoryFile(_SeriesArtifact):
    """``history_{SLUG}_{TF}.json``: the latest served candles of one series, ascending."""

    kind: Literal["history"] = "history"
    latest_ts: int | None = Field(description="open time of the latest stored candle")
    candles: list[CandleRow]


class PredictionFile(_SeriesArtifact):
    """``prediction_{SLUG}_{TF}.json``: the latest forecast, first point = next candle."""

    kind: Literal["prediction"] = "prediction"
    model_version: str | None
    issued_at: int | None
    input_last_ts: int | None = Field(description="latest candle the forecast was made from")
    points: list[ForecastPoint]


class ArtifactRef(_Model):
    file: str
    served: bool
    status: FreshnessStatus
    reason: str


class ManifestSeries(_Model):
    symbol: str
    slug: str
    timeframe: Timeframe
    visible: bool = Field(description="false while the first backfill runs (hidden_backfilling)")
    status: FreshnessStatus = Field(description="freshness of the series' candles")
    signals: list[Signal]
    page: str
    history: ArtifactRef
    prediction: ArtifactRef | None = Field(description="null for a timeframe that is not predicted")
    last_close: float | None
    latest_ts: int | None


class ManifestFile(_Model):
    """``manifest.json``: every configured series, its status and its files."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["manifest"] = "manifest"
    site_title: str
    schemas: dict[str, str]
    series: list[ManifestSeries]


class StatusArtifact(_Model):
    status: FreshnessStatus
    served: bool
    age_s: float | None = Field(description="seconds since the input's latest candle closed")
    reason: str


class StatusSeries(_Model):
    symbol: str
    timeframe: Timeframe
    visible: bool
    signals: list[Signal]
    history: StatusArtifact
    prediction: StatusArtifact | None
    last_error: str | None = Field(description="the last prediction failure, if any")
    ingest_error: str | None = Field(default=None, description="the kind of the last ingest failure, if any")
    last_ingest_at: int | None = Field(default=None, description="when ingest last ran for this series")


class StoreInfo(_Model):
    backend: str
    reachable: bool = Field(description="false: the store could not be read; ages come from the last known candles")
    error: str | None = Field(default=None, description="the kind of the failure, if any")


class StorageInfo(_Model):
    used_bytes: int | None = Field(description="store size, null when unknown (store down)")
    budget_bytes: int
    used_ratio: float | None
    warn_ratio: float
    warning: bool


class RuntimeWindow(_Model):
    runs: int
    failed: int
    p50_s: float | None
    p95_s: float | None
    max_s: float | None
    overruns: int = Field(description="runs longer than budget_s")
    budget_s: float | None


class RuntimeFlow(_Model):
    flow: str = Field(description="flow and scope, e.g. 'cycle 1h'")
    windows: dict[str, RuntimeWindow] = Field(description="'24h' and '7d'")
    steps_p95_s: dict[str, float]
    last_finished_at: int | None


class HeartbeatInfo(_Model):
    timeframe: Timeframe
    last_finished_at: int | None = Field(description="when a cycle of this timeframe last finished")
    late: bool = Field(description="no cycle finished within two periods")


class StatusFile(_Model):
    """``status.json``: overall and per-series freshness at ``generated_at`` (the old /status)."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["status"] = "status"
    generated_at: int
    overall: FreshnessStatus
    reason: str
    counts: dict[str, int]
    series: list[StatusSeries]
    store: StoreInfo | None = None
    storage: StorageInfo | None = None
    heartbeats: list[HeartbeatInfo] = []
    runtime: list[RuntimeFlow] = []


class TrackRecordFile(_Model):
    """``track_record.json``: per predicted series, what serves, its live record against naive,
    its shadows, the last gate decisions and model events, and recent forecasts vs realised closes."""

    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["track_record"] = "track_record"
    series: list[TrackRecord]


SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "history": HistoryFile,
    "prediction": PredictionFile,
    "manifest": ManifestFile,
    "status": StatusFile,
    "track_record": TrackRecordFile,
}


def schema_name(kind: str) -> str:
    """Published path of a kind's schema, relative to the site root."""
    return f"schemas/{kind}.v{SCHEMA_VERSION}.json"
