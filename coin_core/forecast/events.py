"""The append-only model event log of one series: ``<series dir>/events.jsonl``.

One JSON object a line, numbered (``seq``) from 1. Appending rewrites the file atomically
(temp file + rename) with the old lines byte for byte plus the new one: a kill at any moment
leaves the old log or the new one, never a torn line, and events are rare (a few a week), so
the rewrite is cheap. A log that does not parse is never reset: every reader raises a
DataValidationError naming the file and line (docs/runbooks.md says how to repair it).

The log is also the journal of champion changes: the registry state records the ``seq`` of the
last event it reflects, so a promotion killed between its event and its state write is finished
by the next change of the series (see ``registry.recover``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import DataValidationError, ModelError
from ..fsutil import atomic_write_bytes

__all__ = ["EVENTS_FILE", "EventKind", "Actor", "ModelEvent", "read_events", "append_event", "event_count",
           "CHAMPION_EVENTS"]

EVENTS_FILE = "events.jsonl"
EventKind = Literal["registered", "promoted", "rejected", "rolled_back", "demoted"]
#: who asked: the schedule (a deployment's schedule or the cycle), the Prefect UI, the CLI.
Actor = Literal["schedule", "ui", "cli"]
#: Events that change what serves: re-applied by recovery when the state missed them.
CHAMPION_EVENTS = ("promoted", "rolled_back", "demoted")
Metric = float | int | str | bool | None


class ModelEvent(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1)
    at: int = Field(description="UTC milliseconds")
    kind: EventKind
    actor: Actor
    symbol: str
    timeframe: str
    version: str | None = Field(description="the model the event is about")
    champion_before: str | None = None
    champion_after: str | None = None
    reason: str
    metrics: dict[str, Metric] = Field(default_factory=dict)


def _parse(path: Path, raw: bytes) -> list[ModelEvent]:
    if raw and not raw.endswith(b"\n"):
        raise DataValidationError(f"model event log {path} is truncated (no newline after its last line): "
                                  "repair or move it aside (docs/runbooks.md)")
    events: list[ModelEvent] = []
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            event = ModelEvent.model_validate_json(line)
        except ValidationError as exc:
            raise DataValidationError(f"model event log {path} is corrupt at line {number}: "
                                      f"{exc.errors()[0]['msg']} (docs/runbooks.md)") from exc
        if event.seq != len(events) + 1:
            raise DataValidationError(f"model event log {path} is corrupt at line {number}: "
                                      f"seq {event.seq}, expected {len(events) + 1}")
        events.append(event)
    return events


def _read_raw(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise DataValidationError(f"cannot read model event log {path}: {exc.strerror}") from exc


def read_events(path: Path) -> list[ModelEvent]:
    """Every event, oldest first; [] when the series has none yet."""
    return _parse(Path(path), _read_raw(Path(path)))


def event_count(path: Path) -> int:
    """How many events the log holds, without validating them (a cheap check every cycle)."""
    return _read_raw(Path(path)).count(b"\n")


def append_event(path: Path, **fields: object) -> ModelEvent:
    """Append one event (its ``seq`` is assigned here); the caller holds the series lock."""
    raw = _read_raw(Path(path))
    events = _parse(Path(path), raw)
    event = ModelEvent.model_validate({**fields, "seq": len(events) + 1})
    try:
        atomic_write_bytes(Path(path), raw + event.model_dump_json().encode("utf-8") + b"\n")
    except OSError as exc:
        raise ModelError(f"cannot write the model event log {path}: {exc.strerror or exc}") from exc
    return event
