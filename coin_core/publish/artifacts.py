"""Data files (history, prediction, manifest, status) and schemas, built from collected state."""

from __future__ import annotations

import json
from functools import lru_cache

import pandas as pd
import pydantic_core

from ..errors import PublishError
from ..freshness import SIGNALS, STATUSES, Freshness
from ..status import StatusPicture
from ..status import overall as judge_overall
from .collect import SeriesState, public_error
from .models import (
    SCHEMA_MODELS,
    ArtifactRef,
    CandleRow,
    ForecastPoint,
    HistoryFile,
    ManifestFile,
    ManifestSeries,
    PredictionFile,
    StatusArtifact,
    StatusFile,
    StatusSeries,
    HeartbeatInfo,
    RuntimeFlow,
    RuntimeWindow,
    StorageInfo,
    StoreInfo,
    TrackRecordFile,
    schema_name,
)

__all__ = ["history_bytes", "prediction_bytes", "manifest_file", "status_file", "track_record_file", "overall",
           "schema_files", "to_bytes"]


def to_bytes(model: HistoryFile | PredictionFile | ManifestFile | StatusFile | TrackRecordFile) -> bytes:
    """Deterministic compact JSON: the same state always gives the same bytes."""
    return model.model_dump_json().encode("utf-8")


def history_bytes(state: SeriesState) -> bytes:
    """``history_*.json``: candles when served; a blocked marker (no candles, the reason) otherwise."""
    fresh = state.history
    envelope = HistoryFile(
        symbol=state.symbol, timeframe=state.timeframe, served=fresh.served, status=fresh.status,
        signals=list(fresh.signals), reason=fresh.reason, latest_ts=state.latest_ts, candles=[],
    )
    return _with_rows(envelope, "candles", _records(state.candles, CANDLE_FIELDS) if fresh.served else [])


def prediction_bytes(state: SeriesState) -> bytes | None:
    """``prediction_*.json``: the served forecast, a blocked marker, or None for a timeframe
    that is not predicted."""
    fresh, forecast = state.prediction, state.forecast
    if fresh is None:
        return None
    points = state.served_points
    shown = forecast if points is not None else None
    envelope = PredictionFile(
        symbol=state.symbol, timeframe=state.timeframe, served=fresh.served, status=fresh.status,
        signals=list(fresh.signals), reason=fresh.reason,
        model_version=None if shown is None else shown.model_version,
        issued_at=None if shown is None else shown.issued_at,
        input_last_ts=None if shown is None else shown.input_last_ts, points=[],
    )
    return _with_rows(envelope, "points", [] if points is None else _records(points, POINT_FIELDS))


CANDLE_FIELDS = tuple(CandleRow.model_fields)
POINT_FIELDS = tuple(ForecastPoint.model_fields)


def _records(frame: pd.DataFrame, fields: tuple[str, ...]) -> list[dict[str, int | float]]:
    """Rows as plain dicts in the row model's field order: ``ts`` an int, the rest floats."""
    columns = [frame[name].to_numpy(dtype="int64" if name == "ts" else "float64").tolist() for name in fields]
    return [dict(zip(fields, row)) for row in zip(*columns)]


def _with_rows(envelope: HistoryFile | PredictionFile, field: str, rows: list[dict[str, int | float]]) -> bytes:
    """The envelope's JSON with its (last, empty) list ``field`` filled with ``rows``.

    The envelope is validated by its model; the rows, typed by :func:`_records`, are serialised
    by the same pydantic-core serializer: the bytes equal ``model_dump_json`` of the full model
    (a test checks), without building one model per candle (that was a third of a publish).
    """
    head, empty = to_bytes(envelope), f'"{field}":[]}}'.encode()
    if not head.endswith(empty):
        raise PublishError(f"{type(envelope).__name__}.{field} must be the model's last field")
    return head[: -len(b"[]}")] + pydantic_core.to_json(rows) + b"}"


def _ref(file: str, fresh: Freshness) -> ArtifactRef:
    return ArtifactRef(file=file, served=fresh.served, status=fresh.status, reason=fresh.reason)


def manifest_file(states: list[SeriesState], site_title: str) -> ManifestFile:
    entries = [
        ManifestSeries(
            symbol=s.symbol, slug=s.slug, timeframe=s.timeframe, visible=s.visible, status=s.status,
            signals=list(s.signals), page=s.files.page, history=_ref(s.files.history, s.history),
            prediction=None if s.prediction is None else _ref(s.files.prediction, s.prediction),
            last_close=s.last_close if s.history.served else None, latest_ts=s.latest_ts,
        )
        for s in states
    ]
    schemas = {kind: schema_name(kind) for kind in SCHEMA_MODELS}
    return ManifestFile(site_title=site_title, schemas=schemas, series=entries)


def overall(states: list[SeriesState], picture: StatusPicture | None = None) -> tuple[str, str]:
    """(status, reason) of the whole site: the worst visible series (and a store outage)."""
    return judge_overall(states, None if picture is None else picture.store)


def _status_artifact(fresh: Freshness) -> StatusArtifact:
    return StatusArtifact(status=fresh.status, served=fresh.served, age_s=fresh.age_s, reason=fresh.reason)


def _operations(picture: StatusPicture) -> dict[str, object]:
    """Store, storage, heartbeat and runtime sections of ``status.json`` (error text as its kind)."""
    usage = picture.storage
    return {
        "store": StoreInfo(backend=picture.store.backend, reachable=picture.store.reachable,
                           error=public_error(picture.store.error, "store unreachable")),
        "storage": StorageInfo(used_bytes=usage.used_bytes, budget_bytes=usage.budget_bytes,
                               used_ratio=None if usage.ratio is None else round(usage.ratio, 6),
                               warn_ratio=usage.warn_ratio, warning=usage.warning),
        "heartbeats": [HeartbeatInfo(timeframe=b.timeframe, late=b.late,
                                     last_finished_at=None if b.last is None else b.last.finished_at)
                       for b in picture.heartbeats],
        "runtime": [RuntimeFlow(flow=f.flow, steps_p95_s=f.steps_p95_s,
                                last_finished_at=None if f.last is None else f.last.finished_at,
                                windows={k: RuntimeWindow(**vars(w)) for k, w in f.windows.items()})
                    for f in picture.metrics],
    }


def status_file(states: list[SeriesState], now_ms: int, picture: StatusPicture | None = None) -> StatusFile:
    status, reason = overall(states, picture)
    visible = [s for s in states if s.visible]
    counts = {name: sum(1 for s in visible if s.status == name) for name in STATUSES}
    counts.update({name: sum(1 for s in states if name in s.signals) for name in SIGNALS})
    series = [
        StatusSeries(
            symbol=s.symbol, timeframe=s.timeframe, visible=s.visible, signals=list(s.signals),
            history=_status_artifact(s.history),
            prediction=None if s.prediction is None else _status_artifact(s.prediction),
            last_error=None if s.health is None else s.health.last_error,
            ingest_error=None if s.ingest is None else public_error(s.ingest.last_error, "ingest failed"),
            last_ingest_at=None if s.ingest is None else s.ingest.last_run_at,
        )
        for s in states
    ]
    extra = {} if picture is None else _operations(picture)
    return StatusFile(generated_at=now_ms, overall=status, reason=reason, counts=counts, series=series, **extra)  # type: ignore[arg-type]


def track_record_file(states: list[SeriesState]) -> TrackRecordFile:
    """No timestamp of its own: it changes only when a forecast is scored or a model changes."""
    return TrackRecordFile(series=[s.track for s in states if s.track is not None])


@lru_cache(maxsize=1)
def schema_files() -> tuple[tuple[str, bytes], ...]:
    """Each model's JSON Schema (draft 2020-12), identified by its relative published path.

    ``$schema`` is left out on purpose: the site carries no external URL at all. Built once per
    process: the models are fixed, and generating the schemas cost a publish ~0.15 s.
    """
    out = []
    for kind, model in SCHEMA_MODELS.items():
        schema = {"$id": schema_name(kind), **model.model_json_schema()}
        out.append((schema_name(kind), json.dumps(schema, indent=2, sort_keys=True).encode("utf-8")))
    return tuple(out)
