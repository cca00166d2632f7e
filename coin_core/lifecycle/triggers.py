"""Retrain triggers beside the weekly schedule and the UI: what makes a series worth refitting now.

* ``age``: the champion was fitted more than ``RETRAIN_MAX_AGE_DAYS`` ago;
* ``new_candles``: ``RETRAIN_NEW_CANDLES`` candles closed after the champion's training data;
* ``drift``: river's ADWIN, fed the champion's live 80 % band misses (one-step points, oldest
  first), found a change and the recent miss rate is above the nominal 20 %;
* ``no_candidate``: a baseline serves and no challenger is registered to replace it.

Each check's result is written to ``DATA_DIR/lifecycle/<SLUG>/<tf>/triggers.json`` (atomic), which
the status page and the models page read; the train flow logs it and lists it in its artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..config import Settings
from ..errors import DataValidationError
from ..forecast import registry
from ..fsutil import atomic_write_text
from ..storage.base import CandleStore
from ..symbols import parse_symbol, slug
from ..timeframes import Timeframe, parse_timeframe
from .scorebook import ScoreBook

__all__ = ["Trigger", "TriggerCheck", "check_triggers", "miss_rate_drift", "triggers_path", "read_triggers"]

TriggerKind = Literal["age", "new_candles", "drift", "no_candidate"]
_DAY_MS = 86_400_000


class Trigger(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TriggerKind
    detail: str


class TriggerCheck(BaseModel):
    model_config = ConfigDict(extra="forbid")

    symbol: str
    timeframe: Timeframe
    checked_at: int
    champion: str | None
    triggers: list[Trigger]


def triggers_path(settings: Settings, symbol: str, tf: Timeframe) -> Path:
    return Path(settings.data_dir) / "lifecycle" / slug(parse_symbol(symbol)) / parse_timeframe(tf) / "triggers.json"


def read_triggers(settings: Settings, symbol: str, tf: Timeframe) -> TriggerCheck | None:
    path = triggers_path(settings, symbol, tf)
    try:
        return TriggerCheck.model_validate(json.loads(path.read_text("utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, ValidationError) as exc:
        raise DataValidationError(f"trigger file {path} is corrupt: {str(exc).splitlines()[0]}") from exc


def miss_rate_drift(misses: list[int], delta: float, nominal: float = 0.2) -> float | None:
    """The recent miss rate when ADWIN detects a change to above ``nominal``, else None."""
    from river.drift import ADWIN  # imported here: only the trigger check pays its import time

    detector, changed = ADWIN(delta=delta), False
    for miss in misses:
        detector.update(miss)
        changed = changed or detector.drift_detected
    rate = float(detector.estimation) if misses else 0.0
    return rate if changed and rate > nominal else None


def _checks(store: CandleStore, settings: Settings, book: ScoreBook, symbol: str, tf: Timeframe,
            now_ms: int) -> tuple[str | None, list[Trigger]]:
    state = registry.read_pointer(settings, symbol, tf)
    meta = registry.champion_summary(settings, symbol, tf)
    if state is None or meta is None:
        return None, []
    found: list[Trigger] = []
    age = (now_ms - meta.trained_at) / _DAY_MS
    if age > settings.retrain_max_age_days:
        found.append(Trigger(kind="age", detail=f"champion fitted {age:.1f} days ago (> {settings.retrain_max_age_days:g})"))
    new = store.count(symbol, tf, meta.last_ts + 1, None)
    if new >= settings.retrain_new_candles:
        found.append(Trigger(kind="new_candles", detail=f"{new} candles closed since its training data"))
    misses = [int(not r.lo80 <= r.y <= r.hi80) for r in book.rows(symbol, tf, role="champion", step=1)]
    rate = miss_rate_drift(misses, settings.retrain_drift_delta)
    if rate is not None:
        found.append(Trigger(kind="drift", detail=f"80 % band misses rose to {rate:.0%} of recent points (ADWIN)"))
    if meta.spec.name in registry.BASELINES and not state.challengers:
        found.append(Trigger(kind="no_candidate", detail=f"the {meta.spec.name} baseline serves and no challenger is registered"))
    return meta.model_version, found


def check_triggers(store: CandleStore, settings: Settings, book: ScoreBook, symbol: str, tf: Timeframe, *,
                   now_ms: int) -> TriggerCheck:
    """Evaluate every trigger of one series and record the result for the site."""
    symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
    champion, found = _checks(store, settings, book, symbol, tf, now_ms)
    check = TriggerCheck(symbol=symbol, timeframe=tf, checked_at=now_ms, champion=champion, triggers=found)
    atomic_write_text(triggers_path(settings, symbol, tf), check.model_dump_json())
    return check
