"""Per-series status records that are *not* cursors: what the last ingest and prediction did.

Cursors always come from the store (latest stored candle). These small JSON records only say
what a store cannot: whether a series' first backfill has completed (``hidden_backfilling``
until it has) and whether this cycle's prediction failed (``degraded``, last good kept). Each
file is written atomically; a missing or unreadable one reads as "nothing known yet".

Writing a record never raises: it reports on work that already happened, and is often written
by an error handler, so its own failure (a full disk under ``DATA_DIR``) must neither replace
the real error with a traceback nor stop the other series. It must not leave a lie behind
either: when the write fails, the previous record (say ``ok`` while this prediction failed) is
removed, which frees its space, and the write is tried once more. The outcome is the new record
or none at all ("nothing known"), never the stale one; each failure is one warning line.
"""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .fsutil import atomic_write_text
from .symbols import slug
from .timeframes import Timeframe, parse_timeframe

__all__ = ["IngestState", "PredictionHealth", "read_ingest_state", "write_ingest_state", "read_prediction_health", "write_prediction_health"]

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


def _write(path: Path, record: BaseModel, what: str) -> bool:
    """Replace the record at ``path``; True when written (see the module docstring when not)."""
    data = record.model_dump_json()
    try:
        atomic_write_text(path, data)
        return True
    except OSError as exc:
        first = exc
    try:
        path.unlink(missing_ok=True)  # a stale record must not outlive a failed update
        atomic_write_text(path, data)
        log.warning("%s: first write failed (%s); rewrote it after removing the old record", what, _why(first))
        return True
    except OSError as exc:
        log.warning("cannot record %s (%s): the old record is removed, nothing is known until the next run",
                    what, _why(exc))
        return False


def _why(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, type(exc).__name__)


def read_ingest_state(data_dir: Path, symbol: str, tf: Timeframe) -> IngestState | None:
    return _read(_path(data_dir, "ingest", symbol, tf), IngestState)  # type: ignore[return-value]


def write_ingest_state(data_dir: Path, symbol: str, tf: Timeframe, state: IngestState) -> bool:
    return _write(_path(data_dir, "ingest", symbol, tf), state, f"ingest state of {symbol} {tf}")


def read_prediction_health(data_dir: Path, symbol: str, tf: Timeframe) -> PredictionHealth | None:
    return _read(_path(data_dir, "prediction", symbol, tf), PredictionHealth)  # type: ignore[return-value]


def write_prediction_health(data_dir: Path, symbol: str, tf: Timeframe, health: PredictionHealth) -> bool:
    return _write(_path(data_dir, "prediction", symbol, tf), health, f"prediction health of {symbol} {tf}")
