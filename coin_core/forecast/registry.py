"""Model registry on disk: versioned JSON artifacts and a champion pointer per series.

Layout under ``DATA_DIR/models/<SLUG>/<tf>/``::

    prophet-1a2b3c4d-20250101000000.json   one artifact per version (JSON envelope, atomic)
    champion.json                          {"version": ..., "previous": ..., "updated_at": ...}

``previous`` allows a one-step rollback. Only the ``keep`` newest artifacts survive pruning,
plus whatever the pointer names. Every failure (missing, corrupt, mismatched) is a ModelError
naming the file, never a raw traceback from json or pydantic.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import Settings
from ..errors import ModelError
from ..fsutil import atomic_write_json, safe_child
from ..symbols import parse_symbol, slug
from ..timeframes import Timeframe, parse_timeframe
from .base import Model, ModelMetadata, read_artifact, read_metadata

__all__ = [
    "KEEP_VERSIONS",
    "ChampionPointer",
    "series_dir",
    "artifact_path",
    "register",
    "promote_version",
    "rollback",
    "read_pointer",
    "champion_metadata",
    "champion_summary",
    "load_champion",
    "load_version",
    "list_versions",
]

KEEP_VERSIONS = 3
POINTER = "champion.json"
_VERSION = re.compile(r"^[a-z][a-z0-9_]{0,31}-[0-9a-f]{8}-(\d{14})(?:-(\d{1,3}))?$")


class ChampionPointer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str = Field(pattern=_VERSION.pattern)
    previous: str | None = Field(default=None, pattern=_VERSION.pattern)
    updated_at: int
    #: A copy of the champion's metadata, so readers such as publish need not parse the
    #: artifact (a Prophet artifact is ~1.4 MB of JSON: ~8 ms a series, every cycle).
    metadata: ModelMetadata | None = None


def series_dir(settings: Settings, symbol: str, tf: Timeframe) -> Path:
    return Path(settings.data_dir) / "models" / slug(symbol) / parse_timeframe(tf)


def artifact_path(settings: Settings, symbol: str, tf: Timeframe, version: str) -> Path:
    if not _VERSION.match(version):
        raise ModelError(f"invalid model version {version!r}")
    return safe_child(series_dir(settings, symbol, tf), f"{version}.json")


def _order(version: str) -> tuple[str, int]:
    found = _VERSION.match(version)
    assert found is not None
    return found.group(1), int(found.group(2) or 0)


def list_versions(settings: Settings, symbol: str, tf: Timeframe) -> list[str]:
    """Stored versions, oldest first."""
    root = series_dir(settings, symbol, tf)
    if not root.is_dir():
        return []
    names = [p.stem for p in root.glob("*.json") if _VERSION.match(p.stem)]
    return sorted(names, key=_order)


def read_pointer(settings: Settings, symbol: str, tf: Timeframe) -> ChampionPointer | None:
    path = series_dir(settings, symbol, tf) / POINTER
    try:
        return ChampionPointer.model_validate(json.loads(path.read_text("utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as exc:
        raise ModelError(f"champion pointer of {parse_symbol(symbol)} {tf} is unreadable (corrupt?)") from exc


def _write_pointer(settings: Settings, symbol: str, tf: Timeframe, pointer: ChampionPointer) -> None:
    try:
        atomic_write_json(series_dir(settings, symbol, tf) / POINTER, pointer.model_dump(mode="json"))
    except OSError as exc:
        raise ModelError(f"cannot write the champion pointer of {symbol} {tf}: {exc.strerror or exc}") from exc


def _unique_version(settings: Settings, symbol: str, tf: Timeframe, version: str) -> str:
    """Two fits in the same second must not overwrite each other: add a counter."""
    candidate, n = version, 0
    while artifact_path(settings, symbol, tf, candidate).exists():
        n += 1
        if n > 999:
            raise ModelError(f"too many versions named {version}")
        candidate = f"{version}-{n}"
    return candidate


def register(
    settings: Settings, symbol: str, tf: Timeframe, model: Model, metadata: ModelMetadata,
    *, promote: bool = True, keep: int = KEEP_VERSIONS, now_ms: int | None = None,
) -> ModelMetadata:
    """Store a fitted model as a new version (and make it champion); returns the stored metadata."""
    symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
    if (metadata.symbol, metadata.timeframe) != (symbol, tf):
        raise ModelError(f"metadata is for {metadata.symbol} {metadata.timeframe}, not {symbol} {tf}")
    if metadata.spec != model.spec:
        raise ModelError("metadata spec differs from the model's spec")
    version = _unique_version(settings, symbol, tf, metadata.model_version)
    metadata = metadata.model_copy(update={"model_version": version})
    model.save(artifact_path(settings, symbol, tf, version), metadata)
    model.metadata_ = metadata
    if promote:
        promote_version(settings, symbol, tf, version, now_ms=now_ms)
    _prune(settings, symbol, tf, keep)
    return metadata


def promote_version(settings: Settings, symbol: str, tf: Timeframe, version: str, *, now_ms: int | None = None) -> ChampionPointer:
    """Make a stored version champion; the current one becomes ``previous``."""
    _, meta = load_version(settings, symbol, tf, version)  # never point at something unloadable
    try:
        current = read_pointer(settings, symbol, tf)
    except ModelError:
        current = None  # a corrupt pointer is replaced, not kept as "previous"
    previous = current.version if current and current.version != version else (current.previous if current else None)
    pointer = ChampionPointer(version=version, previous=previous, updated_at=now_ms or int(time.time() * 1000),
                              metadata=meta)
    _write_pointer(settings, symbol, tf, pointer)
    return pointer


def rollback(settings: Settings, symbol: str, tf: Timeframe, *, now_ms: int | None = None) -> ModelMetadata:
    """Serve the previous champion again (one step: afterwards there is no previous)."""
    pointer = read_pointer(settings, symbol, tf)
    if pointer is None or pointer.previous is None:
        raise ModelError(f"no previous champion to roll back to for {parse_symbol(symbol)} {tf}")
    _, meta = load_version(settings, symbol, tf, pointer.previous)
    _write_pointer(settings, symbol, tf, ChampionPointer(
        version=pointer.previous, previous=None, updated_at=now_ms or int(time.time() * 1000), metadata=meta))
    return meta


def load_version(settings: Settings, symbol: str, tf: Timeframe, version: str) -> tuple[Model, ModelMetadata]:
    model, meta = read_artifact(artifact_path(settings, symbol, tf, version))
    if meta is None or meta.model_version != version:
        raise ModelError(f"artifact {version}.json carries no or mismatched metadata")
    return model, meta


def load_champion(settings: Settings, symbol: str, tf: Timeframe) -> tuple[Model, ModelMetadata] | None:
    """The serving model, or None when the series has none yet."""
    pointer = read_pointer(settings, symbol, tf)
    return None if pointer is None else load_version(settings, symbol, tf, pointer.version)


def champion_summary(settings: Settings, symbol: str, tf: Timeframe) -> ModelMetadata | None:
    """The champion's metadata as the pointer records it (reads only the small pointer file).

    For display; it does not prove the artifact is intact (:func:`champion_metadata` reads it).
    """
    pointer = read_pointer(settings, symbol, tf)
    if pointer is not None and pointer.metadata is not None and pointer.metadata.model_version == pointer.version:
        return pointer.metadata
    return champion_metadata(settings, symbol, tf)  # a pointer written before it carried a copy


def champion_metadata(settings: Settings, symbol: str, tf: Timeframe) -> ModelMetadata | None:
    """The champion's metadata read from its artifact, without building the model."""
    pointer = read_pointer(settings, symbol, tf)
    if pointer is None:
        return None
    return read_metadata(artifact_path(settings, symbol, tf, pointer.version))


def _prune(settings: Settings, symbol: str, tf: Timeframe, keep: int) -> None:
    try:
        pointer = read_pointer(settings, symbol, tf)
    except ModelError:
        return  # do not delete anything while the pointer cannot be trusted
    pinned = {pointer.version, pointer.previous} if pointer else set()
    versions = list_versions(settings, symbol, tf)
    for version in versions[: max(0, len(versions) - max(1, keep))]:
        if version not in pinned:
            artifact_path(settings, symbol, tf, version).unlink(missing_ok=True)
