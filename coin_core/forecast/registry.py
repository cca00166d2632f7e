"""Model registry on disk: versioned JSON artifacts, roles, and one gated way to change the champion.

Layout under ``DATA_DIR/models/<SLUG>/<tf>/``::

    prophet-1a2b3c4d-20250101000000.json   one artifact per version (JSON envelope, atomic)
    champion.json                          the registry state (below)
    events.jsonl                           the append-only model event log (``events.py``)
    .lock                                  the series lock (``locks.py``)

Roles: one **champion** (the only model served), **challengers** (at most one per model name,
forecasting in the shadow) and **baselines** (``naive``, ``drift``). :func:`register` adds a
challenger or a baseline and never touches the champion. The champion changes only through
:func:`promote` (which demands a passed :class:`GateDecision`), :func:`rollback` (one step back)
and :func:`demote` (to a baseline, when the champion loses to naive). Each change takes the
series lock, writes its event to the log first and then the state, so the log is the journal:
a change killed half-way is finished by the next one (:func:`recover`).

Pruning keeps the ``keep`` newest artifacts plus every version the state names. Every failure
(missing, corrupt, mismatched) is an error naming the file, never a raw traceback.
"""

from __future__ import annotations

import json
import logging
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import Settings
from ..errors import LockError, ModelError
from ..fsutil import atomic_write_json, safe_child
from ..symbols import parse_symbol, slug
from ..timeframes import Timeframe, parse_timeframe
from .base import Model, ModelMetadata, read_artifact, read_metadata
from .decision import GateDecision
from .events import EVENTS_FILE, Actor, ModelEvent, append_event, event_count, read_events
from .locks import series_lock
from .serving import load_serving as _load_serving
from .serving import serving_path, write_serving

__all__ = [
    "KEEP_VERSIONS", "BASELINES", "RegistryState", "ChampionPointer", "RegisteredModel", "series_dir",
    "artifact_path", "events_path", "register", "promote", "rollback", "demote", "record_rejection", "recover", "settle",
    "read_pointer",
    "registered", "model_events", "champion_metadata", "champion_summary", "load_champion", "load_version", "load_serving",
    "list_versions",
]

KEEP_VERSIONS = 3
BASELINES = ("naive", "drift")
POINTER = "champion.json"
#: Registration waits for a concurrent change; a champion change is refused instead.
REGISTER_WAIT_S = 30.0
log = logging.getLogger(__name__)
_VERSION = re.compile(r"^[a-z][a-z0-9_]{0,31}-[0-9a-f]{8}-(\d{14})(?:-(\d{1,3}))?$")
ShadowRole = Literal["challenger", "baseline"]


class RegistryState(BaseModel):
    """``champion.json``: who serves, who shadows, and the last event applied."""

    model_config = ConfigDict(extra="ignore")

    version: str | None = Field(default=None, pattern=_VERSION.pattern, description="the champion")
    previous: str | None = Field(default=None, pattern=_VERSION.pattern)
    updated_at: int = 0
    #: A copy of the champion's metadata, so readers such as publish need not parse the
    #: artifact (a Prophet artifact is ~1.4 MB of JSON: ~8 ms a series, every cycle).
    metadata: ModelMetadata | None = None
    challengers: dict[str, ModelMetadata] = Field(default_factory=dict, description="model name -> metadata")
    baselines: dict[str, ModelMetadata] = Field(default_factory=dict, description="model name -> metadata")
    event_seq: int = 0


ChampionPointer = RegistryState  # the name the state had when it held only the champion


class RegisteredModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["champion", "challenger", "baseline"]
    metadata: ModelMetadata

    @property
    def version(self) -> str:
        return self.metadata.model_version


def series_dir(settings: Settings, symbol: str, tf: Timeframe) -> Path:
    return Path(settings.data_dir) / "models" / slug(symbol) / parse_timeframe(tf)


def events_path(settings: Settings, symbol: str, tf: Timeframe) -> Path:
    return series_dir(settings, symbol, tf) / EVENTS_FILE


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


def read_pointer(settings: Settings, symbol: str, tf: Timeframe) -> RegistryState | None:
    """The registry state, or None for a series nothing was ever registered for."""
    path = series_dir(settings, symbol, tf) / POINTER
    try:
        return RegistryState.model_validate(json.loads(path.read_text("utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as exc:
        raise ModelError(f"registry state {path} of {parse_symbol(symbol)} {tf} is unreadable (corrupt?)") from exc


def _write_state(settings: Settings, symbol: str, tf: Timeframe, state: RegistryState) -> None:
    try:
        atomic_write_json(series_dir(settings, symbol, tf) / POINTER, state.model_dump(mode="json"))
    except OSError as exc:
        raise ModelError(f"cannot write the registry state of {symbol} {tf}: {exc.strerror or exc}") from exc


def _readable(settings: Settings, symbol: str, tf: Timeframe, version: str) -> bool:
    try:
        _metadata(settings, symbol, tf, version)
    except ModelError:
        return False
    return True


def registered(settings: Settings, symbol: str, tf: Timeframe, *, intact: bool = False) -> list[RegisteredModel]:
    """Champion, challengers, then baselines (a baseline that serves is listed once, as champion).

    ``intact`` leaves out models whose artifact cannot be read (it parses every artifact: for
    the train flow's fit-skip and healing, not for every cycle).
    """
    state = read_pointer(settings, symbol, tf)
    if state is None:
        return []
    found: list[RegisteredModel] = []
    if state.version is not None and (not intact or _readable(settings, symbol, tf, state.version)):
        meta = state.metadata if state.metadata and state.metadata.model_version == state.version else None
        found.append(RegisteredModel(role="champion", metadata=meta or _metadata(settings, symbol, tf, state.version)))
    for role, group in (("challenger", state.challengers), ("baseline", state.baselines)):
        found += [RegisteredModel(role=role, metadata=m) for m in group.values() if m.model_version != state.version
                  and (not intact or _readable(settings, symbol, tf, m.model_version))]
    return found


def model_events(settings: Settings, symbol: str, tf: Timeframe) -> list[ModelEvent]:
    return read_events(events_path(settings, symbol, tf))


def _unique_version(settings: Settings, symbol: str, tf: Timeframe, version: str) -> str:
    """Two fits in the same second must not overwrite each other: add a counter."""
    candidate, n = version, 0
    while artifact_path(settings, symbol, tf, candidate).exists():
        n += 1
        if n > 999:
            raise ModelError(f"too many versions named {version}")
        candidate = f"{version}-{n}"
    return candidate


def _metadata(settings: Settings, symbol: str, tf: Timeframe, version: str) -> ModelMetadata:
    meta = read_metadata(artifact_path(settings, symbol, tf, version))
    if meta is None or meta.model_version != version:
        raise ModelError(f"artifact {version}.json carries no or mismatched metadata")
    return meta


def _apply(settings: Settings, symbol: str, tf: Timeframe, state: RegistryState, event: ModelEvent) -> RegistryState:
    """The state after ``event``: the one place where roles change (live and in recovery)."""
    update: dict[str, object] = {"event_seq": event.seq, "updated_at": event.at}
    if event.kind == "registered" and event.version:
        meta = _metadata(settings, symbol, tf, event.version)
        group = "baselines" if event.metrics.get("role") == "baseline" else "challengers"
        update[group] = {**getattr(state, group), meta.spec.name: meta}
    elif event.kind in ("promoted", "demoted", "rolled_back") and event.champion_after:
        meta = _metadata(settings, symbol, tf, event.champion_after)
        previous = None if event.kind == "rolled_back" else event.champion_before
        update.update(version=event.champion_after, metadata=meta, previous=previous,
                      challengers={k: m for k, m in state.challengers.items() if m.model_version != event.champion_after})
    return state.model_copy(update=update)


def recover(settings: Settings, symbol: str, tf: Timeframe) -> RegistryState:
    """The state with every logged event applied; rewritten when a killed change left it behind.

    The caller holds the series lock.
    """
    state = read_pointer(settings, symbol, tf) or RegistryState()
    missed = [e for e in model_events(settings, symbol, tf) if e.seq > state.event_seq]
    for event in missed:
        state = _apply(settings, symbol, tf, state, event)
    if missed:
        _write_state(settings, symbol, tf, state)
    return state


def settle(settings: Settings, symbol: str, tf: Timeframe) -> None:
    """Finish a change a killed run left half-done; a cheap read when there is none."""
    state = read_pointer(settings, symbol, tf)
    logged = event_count(events_path(settings, symbol, tf))
    if logged and (state is None or state.event_seq < logged):
        with _changing(settings, symbol, tf, REGISTER_WAIT_S):
            pass


@contextmanager
def _changing(settings: Settings, symbol: str, tf: Timeframe, wait_s: float) -> Iterator[RegistryState]:
    with series_lock(series_dir(settings, symbol, tf), f"{symbol} {tf}", wait_s):
        yield recover(settings, symbol, tf)


def _record(settings: Settings, symbol: str, tf: Timeframe, state: RegistryState, **fields: object) -> ModelEvent:
    """Log first, then the state: a kill in between is finished by the next :func:`recover`."""
    event = append_event(events_path(settings, symbol, tf), symbol=symbol, timeframe=tf, **fields)
    _write_state(settings, symbol, tf, _apply(settings, symbol, tf, state, event))
    return event


def _now(now_ms: int | None) -> int:
    return now_ms if now_ms is not None else int(time.time() * 1000)


def register(
    settings: Settings, symbol: str, tf: Timeframe, model: Model, metadata: ModelMetadata, *,
    role: ShadowRole = "challenger", actor: Actor = "schedule", keep: int = KEEP_VERSIONS,
    now_ms: int | None = None,
) -> ModelMetadata:
    """Store a fitted model as a new challenger or baseline; it never becomes champion here.

    A challenger replaces the registered challenger of the same model name (the newer fit of a
    family supersedes the older); a baseline replaces the baseline of its name.
    """
    symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
    if (metadata.symbol, metadata.timeframe) != (symbol, tf):
        raise ModelError(f"metadata is for {metadata.symbol} {metadata.timeframe}, not {symbol} {tf}")
    if metadata.spec != model.spec:
        raise ModelError("metadata spec differs from the model's spec")
    if role == "baseline" and model.spec.name not in BASELINES:
        raise ModelError(f"{model.spec.name} is not a baseline ({', '.join(BASELINES)})")
    with _changing(settings, symbol, tf, REGISTER_WAIT_S) as state:
        version = _unique_version(settings, symbol, tf, metadata.model_version)
        metadata = metadata.model_copy(update={"model_version": version})
        model.save(artifact_path(settings, symbol, tf, version), metadata)
        model.metadata_ = metadata
        _write_serving(artifact_path(settings, symbol, tf, version), model)
        _record(settings, symbol, tf, state, at=_now(now_ms), kind="registered", actor=actor, version=version,
                champion_before=state.version, champion_after=state.version, reason=f"fitted on {metadata.row_count} candles",
                metrics={"role": role, "rows": metadata.row_count, "first_ts": metadata.first_ts, "last_ts": metadata.last_ts})
        _prune(settings, symbol, tf, keep)
    return metadata


def promote(settings: Settings, decision: GateDecision, *, actor: Actor, now_ms: int | None = None) -> ModelEvent:
    """Make ``decision.candidate`` champion: the only way a model starts serving.

    Refused (ModelError) unless the gate passed it; refused (LockError) when another change of
    the series is running or already changed the champion the decision was made against.
    """
    symbol, tf = parse_symbol(decision.symbol), parse_timeframe(decision.timeframe)
    if not decision.passed:
        raise ModelError(f"{decision.candidate} did not pass the promotion gate: {decision.summary}")
    with _changing(settings, symbol, tf, 0.0) as state:
        if state.version != decision.champion_before:
            raise LockError(f"the champion of {symbol} {tf} changed since the gate decided "
                            f"({decision.champion_before} -> {state.version}): promotion of {decision.candidate} refused")
        load_version(settings, symbol, tf, decision.candidate)  # never serve something unloadable
        return _record(settings, symbol, tf, state, at=_now(now_ms), kind="promoted", actor=actor,
                       version=decision.candidate, champion_before=state.version, champion_after=decision.candidate,
                       reason=decision.summary, metrics={**decision.metrics, "bootstrap": decision.bootstrap})


def rollback(settings: Settings, symbol: str, tf: Timeframe, *, actor: Actor = "cli", reason: str = "operator rollback",
             now_ms: int | None = None) -> ModelEvent:
    """Serve the previous champion again (one step: afterwards there is no previous)."""
    symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
    with _changing(settings, symbol, tf, 5.0) as state:
        if state.version is None or state.previous is None:
            raise ModelError(f"no previous champion to roll back to for {symbol} {tf}")
        load_version(settings, symbol, tf, state.previous)
        return _record(settings, symbol, tf, state, at=_now(now_ms), kind="rolled_back", actor=actor,
                       version=state.version, champion_before=state.version, champion_after=state.previous, reason=reason)


def demote(settings: Settings, symbol: str, tf: Timeframe, baseline: str, *, actor: Actor, reason: str,
           metrics: dict[str, float | int | str | None], expect_champion: str, now_ms: int | None = None) -> ModelEvent:
    """Replace a champion that loses to naive by the registered baseline ``baseline``."""
    symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
    with _changing(settings, symbol, tf, 0.0) as state:
        target = state.baselines.get(baseline)
        if target is None:
            raise ModelError(f"no {baseline} baseline registered for {symbol} {tf}")
        if state.version != expect_champion or state.version == target.model_version:
            raise LockError(f"the champion of {symbol} {tf} is {state.version}, not {expect_champion}: demotion refused")
        return _record(settings, symbol, tf, state, at=_now(now_ms), kind="demoted", actor=actor,
                       version=state.version, champion_before=state.version, champion_after=target.model_version,
                       reason=reason, metrics=metrics)


def record_rejection(settings: Settings, decision: GateDecision, *, actor: Actor, now_ms: int | None = None) -> ModelEvent:
    """Log a failed gate decision with its numbers (the champion stays)."""
    symbol, tf = parse_symbol(decision.symbol), parse_timeframe(decision.timeframe)
    with _changing(settings, symbol, tf, REGISTER_WAIT_S) as state:
        return _record(settings, symbol, tf, state, at=_now(now_ms), kind="rejected", actor=actor,
                       version=decision.candidate, champion_before=state.version, champion_after=state.version,
                       reason=decision.summary, metrics=decision.metrics)


def load_version(settings: Settings, symbol: str, tf: Timeframe, version: str) -> tuple[Model, ModelMetadata]:
    model, meta = read_artifact(artifact_path(settings, symbol, tf, version))
    if meta is None or meta.model_version != version:
        raise ModelError(f"artifact {version}.json carries no or mismatched metadata")
    return model, meta


def load_serving(settings: Settings, symbol: str, tf: Timeframe, version: str) -> Model:
    """The model a cycle forecasts with: from the artifact's compact serving file (``serving.py``)
    when it has a current one, else from the artifact. Errors as :func:`load_version`."""
    return _load_serving(artifact_path(settings, symbol, tf, version), version)


def _write_serving(path: Path, model: Model) -> None:
    """The serving file of a new artifact; one not written is rebuilt by the first cycle."""
    try:
        write_serving(path, model)
    except (OSError, ModelError) as exc:
        log.warning("serving file of %s not written: %s", path.name, exc)


def load_champion(settings: Settings, symbol: str, tf: Timeframe) -> tuple[Model, ModelMetadata] | None:
    """The serving model, or None when the series has none yet."""
    pointer = read_pointer(settings, symbol, tf)
    return None if pointer is None or pointer.version is None else load_version(settings, symbol, tf, pointer.version)


def champion_summary(settings: Settings, symbol: str, tf: Timeframe) -> ModelMetadata | None:
    """The champion's metadata as the state records it (reads only the small state file).

    For display; it does not prove the artifact is intact (:func:`champion_metadata` reads it).
    """
    pointer = read_pointer(settings, symbol, tf)
    if pointer is not None and pointer.metadata is not None and pointer.metadata.model_version == pointer.version:
        return pointer.metadata
    return champion_metadata(settings, symbol, tf)  # a pointer written before it carried a copy


def champion_metadata(settings: Settings, symbol: str, tf: Timeframe) -> ModelMetadata | None:
    """The champion's metadata read from its artifact, without building the model."""
    pointer = read_pointer(settings, symbol, tf)
    if pointer is None or pointer.version is None:
        return None
    return read_metadata(artifact_path(settings, symbol, tf, pointer.version))


def _prune(settings: Settings, symbol: str, tf: Timeframe, keep: int) -> None:
    """Delete old artifacts, never one the state names (champion, previous, shadows)."""
    try:
        state = read_pointer(settings, symbol, tf)
    except ModelError:
        return  # do not delete anything while the state cannot be trusted
    pinned = set()
    if state is not None:
        pinned = {state.version, state.previous} | {m.model_version for m in (*state.challengers.values(), *state.baselines.values())}
    versions = list_versions(settings, symbol, tf)
    for version in versions[: max(0, len(versions) - max(1, keep))]:
        if version not in pinned:
            artifact_path(settings, symbol, tf, version).unlink(missing_ok=True)
            serving_path(artifact_path(settings, symbol, tf, version)).unlink(missing_ok=True)
