"""Per-series status records that are *not* cursors: what the last ingest and prediction did.

Cursors always come from the store (latest stored candle). These small JSON records only say
what a store cannot: whether a series' first backfill has completed (``hidden_backfilling``
until it has) and whether this cycle's prediction failed (``degraded``, last good kept). Each
file is written atomically; a missing or unreadable one reads as "nothing known yet".

Series run in parallel threads, and a manual run may overlap a scheduled one, so a record is
changed read-modify-write under a lock (:func:`update_ingest_state`): ``flock`` on a sibling
``.lock`` file, which excludes other threads and other processes alike. Without it, two writers that
read the same old record would each drop the other's change (e.g. ``backfill_complete_at``).
"""

from __future__ import annotations

import fcntl
import json
import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .fsutil import atomic_write_text
from .symbols import slug
from .timeframes import Timeframe, parse_timeframe

__all__ = [
    "IngestState", "PredictionHealth", "read_ingest_state", "write_ingest_state", "update_ingest_state",
    "read_prediction_health", "write_prediction_health",
]

log = logging.getLogger(__name__)

PredictionStatus = Literal["ok", "degraded", "insufficient_data"]


class IngestState(BaseModel):
    model_config = ConfigDict(extra="ignore")

    backfill_complete_at: int | None = None
    last_run_at: int | None = None
    last_new_candles: int = 0
    last_rejected: int = 0
    last_error: str | None = None


class PredictionHealth(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status: PredictionStatus
    updated_at: int
    last_success_at: int | None = None
    last_error: str | None = None
    model_version: str | None = None


def _path(data_dir: Path, kind: str, symbol: str, tf: Timeframe) -> Path:
    return Path(data_dir) / "state" / f"{kind}_{slug(symbol)}_{parse_timeframe(tf)}.json"


def _read(path: Path, model: type[BaseModel]) -> BaseModel | None:
    try:
        return model.model_validate(json.loads(path.read_text("utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("ignoring unreadable status record %s: %s", path.name, exc)
        return None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive access to one record, across threads and processes (the lock file stays)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # flock excludes per open file description, so threads of one process exclude each other too.
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_ingest_state(data_dir: Path, symbol: str, tf: Timeframe,
                        change: Callable[[IngestState], IngestState]) -> IngestState:
    """Read, change and write the ingest record of a series as one step; returns what was written."""
    path = _path(data_dir, "ingest", symbol, tf)
    with _locked(path):
        state = change(read_ingest_state(data_dir, symbol, tf) or IngestState())
        atomic_write_text(path, state.model_dump_json())
    return state


def read_ingest_state(data_dir: Path, symbol: str, tf: Timeframe) -> IngestState | None:
    return _read(_path(data_dir, "ingest", symbol, tf), IngestState)  # type: ignore[return-value]


def write_ingest_state(data_dir: Path, symbol: str, tf: Timeframe, state: IngestState) -> None:
    path = _path(data_dir, "ingest", symbol, tf)
    with _locked(path):
        atomic_write_text(path, state.model_dump_json())


def read_prediction_health(data_dir: Path, symbol: str, tf: Timeframe) -> PredictionHealth | None:
    return _read(_path(data_dir, "prediction", symbol, tf), PredictionHealth)  # type: ignore[return-value]


def write_prediction_health(data_dir: Path, symbol: str, tf: Timeframe, health: PredictionHealth) -> None:
    atomic_write_text(_path(data_dir, "prediction", symbol, tf), health.model_dump_json())
