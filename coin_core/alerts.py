"""The alert state machine: status picture -> conditions -> alert messages, with persisted state.

Every check yields one :class:`Condition` per subject on every pass, good or bad. Its ``key``
(``check:subject``, e.g. ``freshness:BTC/USDT 1h``, ``store:influxdb``) is the stable
de-duplication key of the alert. Per key, :func:`evaluate_alerts` moves an
:class:`AlertRecord` through::

    ok --bad--> firing   queue "alert"
    firing      level got worse (stale -> hard_stale)         queue "worse"
    firing      bad for longer than ALERT_ESCALATE_S, once    queue "escalated"
    firing      nothing sent for ALERT_REPEAT_S               queue "repeat"
    firing --good (or no longer monitored)--> ok              queue "resolved"

A condition with ``grace_s`` is only bad once the key has been watched that long (a cycle that
has never run on a fresh install is not late until two periods have passed).

Messages go to an *outbox* persisted with the alert state in one JSON file
(``DATA_DIR/alerts/state.json``, atomic rewrite): intent is recorded before a send and a message
is marked sent after it, so a crash loses nothing; a crash between a send and its mark re-sends
it with the same ``event_id`` (``key#seq``), which a receiver can use to drop the duplicate.
Everything here is pure and Prefect-free; :mod:`coin_core.monitor` runs a pass.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import DataValidationError
from .freshness import format_age
from .fsutil import atomic_write_text
from .status import HEARTBEAT_PERIODS, StatusPicture

__all__ = [
    "Condition",
    "AlertPolicy",
    "AlertRecord",
    "OutboxMessage",
    "AlertBook",
    "conditions_of",
    "evaluate_alerts",
    "book_path",
    "load_book",
    "save_book",
    "prune_outbox",
    "LEVELS",
]

log = logging.getLogger(__name__)

MessageKind = Literal["alert", "worse", "escalated", "repeat", "resolved"]

#: Levels of one check, least to most severe ("worse" is sent when the rank goes up).
LEVELS: dict[str, tuple[str, ...]] = {
    "freshness": ("stale", "hard_stale", "corrupt"),
    "degraded": ("degraded",),
    "store": ("unreachable",),
    "heartbeat": ("late",),
    "storage": ("warning",),
}
_SENT_KEPT_MS = 7 * 86_400_000
_OUTBOX_MAX = 1000


@dataclass(frozen=True)
class Condition:
    check: str
    subject: str
    bad: bool
    level: str
    detail: str
    grace_s: int = 0

    @property
    def key(self) -> str:
        return f"{self.check}:{self.subject}"


@dataclass(frozen=True)
class AlertPolicy:
    repeat_s: int
    escalate_s: int


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore")


class AlertRecord(_Model):
    key: str
    check: str
    subject: str
    first_seen: int
    firing: bool = False
    level: str | None = None
    bad_since: int | None = None
    last_queued: int | None = None
    escalated: bool = False
    seq: int = 0
    detail: str = ""


class OutboxMessage(_Model):
    event_id: str
    key: str
    kind: MessageKind
    check: str
    subject: str
    level: str
    text: str
    created_at: int
    sent_at: int | None = None
    channel: str | None = None
    attempts: int = 0
    last_error: str | None = None


class AlertBook(_Model):
    version: Literal[1] = 1
    alerts: dict[str, AlertRecord] = {}
    outbox: list[OutboxMessage] = []

    @property
    def pending(self) -> list[OutboxMessage]:
        return [m for m in self.outbox if m.sent_at is None]


# ---- conditions --------------------------------------------------------------------------------

def conditions_of(picture: StatusPicture) -> list[Condition]:
    """One condition per check and subject; series hidden while they backfill never alert."""
    out: list[Condition] = []
    for s in picture.series:
        watched = s.visible
        bad_fresh = watched and s.status != "fresh"
        reason = s.history.reason if s.history.status != "fresh" or s.prediction is None else s.prediction.reason
        out.append(Condition("freshness", s.name, bad_fresh, s.status if bad_fresh else "fresh", reason))
        error = (s.health.last_error if s.health is not None else None) or "last good forecast kept"
        out.append(Condition("degraded", s.name, watched and "degraded" in s.signals, "degraded",
                             f"this cycle's forecast failed ({error})"))
    store = picture.store
    out.append(Condition("store", store.backend, not store.reachable, "unreachable", store.error or ""))
    for beat in picture.heartbeats:
        limit = HEARTBEAT_PERIODS * beat.period_s
        seen = "no cycle has finished yet" if beat.last is None else f"last cycle finished {format_age(beat.age_s or 0)} ago"
        out.append(Condition("heartbeat", f"cycle {beat.timeframe}", beat.last is None or beat.late, "late",
                             f"{seen}; expected one every {format_age(beat.period_s)}",
                             grace_s=limit if beat.last is None else 0))
    usage = picture.storage
    used = "unknown" if usage.ratio is None else f"{usage.ratio:.0%}"
    out.append(Condition("storage", "budget", usage.warning, "warning",
                         f"store uses {used} of its {usage.budget_bytes / 1024**3:.1f} GiB budget "
                         f"(warning at {usage.warn_ratio:.0%})"))
    return out


# ---- the state machine -------------------------------------------------------------------------

_TITLES = {"alert": "ALERT", "worse": "WORSE", "escalated": "ESCALATED", "repeat": "STILL", "resolved": "RESOLVED"}


def _queue(book: AlertBook, rec: AlertRecord, kind: MessageKind, level: str, detail: str, now_ms: int) -> OutboxMessage:
    rec.seq += 1
    rec.last_queued = now_ms
    if kind == "resolved":
        lasted = format_age((now_ms - (rec.bad_since or now_ms)) / 1000)
        text = f"[coin-predict] RESOLVED {rec.check} {rec.subject}: back to normal after {lasted}"
    else:
        lasted = f" (for {format_age((now_ms - (rec.bad_since or now_ms)) / 1000)})" if kind != "alert" else ""
        text = f"[coin-predict] {_TITLES[kind]} {level.replace('_', ' ')}: {rec.subject}{lasted}: {detail}"
    msg = OutboxMessage(event_id=f"{rec.key}#{rec.seq}", key=rec.key, kind=kind, check=rec.check,
                        subject=rec.subject, level=level, text=f"{text} [key {rec.key}]", created_at=now_ms)
    book.outbox.append(msg)
    return msg


def _rank(check: str, level: str | None) -> int:
    levels = LEVELS.get(check, ())
    return levels.index(level) if level in levels else -1


def _step(book: AlertBook, rec: AlertRecord, cond: Condition | None, now_ms: int, policy: AlertPolicy) -> list[OutboxMessage]:
    bad = cond is not None and cond.bad and now_ms - rec.first_seen >= cond.grace_s * 1000
    if cond is not None:
        rec.detail = cond.detail
    if not bad:
        if not rec.firing:
            return []
        msg = _queue(book, rec, "resolved", "ok", rec.detail, now_ms)
        rec.firing, rec.level, rec.bad_since, rec.escalated = False, None, None, False
        return [msg]
    assert cond is not None
    if not rec.firing:
        rec.firing, rec.level, rec.bad_since, rec.escalated = True, cond.level, now_ms, False
        return [_queue(book, rec, "alert", cond.level, cond.detail, now_ms)]
    worse = _rank(cond.check, cond.level) > _rank(cond.check, rec.level)
    rec.level = cond.level
    if worse:
        return [_queue(book, rec, "worse", cond.level, cond.detail, now_ms)]
    if not rec.escalated and now_ms - (rec.bad_since or now_ms) >= policy.escalate_s * 1000:
        rec.escalated = True
        return [_queue(book, rec, "escalated", cond.level, cond.detail, now_ms)]
    if now_ms - (rec.last_queued or 0) >= policy.repeat_s * 1000:
        return [_queue(book, rec, "repeat", cond.level, cond.detail, now_ms)]
    return []


def evaluate_alerts(book: AlertBook, conditions: list[Condition], now_ms: int, policy: AlertPolicy) -> list[OutboxMessage]:
    """Advance every alert of ``book`` by one pass; returns the messages queued in its outbox.

    A firing key with no condition this pass (a series removed from the settings) is resolved.
    """
    by_key = {c.key: c for c in conditions}
    queued: list[OutboxMessage] = []
    for key, cond in by_key.items():
        if key not in book.alerts:
            book.alerts[key] = AlertRecord(key=key, check=cond.check, subject=cond.subject, first_seen=now_ms)
    for key in list(book.alerts):
        rec = book.alerts[key]
        cond = by_key.get(key)
        queued += _step(book, rec, cond, now_ms, policy)
        if cond is None and not rec.firing:
            del book.alerts[key]  # no longer monitored and nothing left to say
    return queued


# ---- persistence -------------------------------------------------------------------------------

def book_path(data_dir: Path) -> Path:
    return Path(data_dir) / "alerts" / "state.json"


def load_book(data_dir: Path) -> AlertBook:
    """The persisted alert state; a missing file is a fresh start, a corrupt one an error.

    A corrupt file is not silently replaced: starting over would forget firing alerts (no
    "resolved" would ever follow them) and re-send old ones. The operator moves it aside.
    """
    path = book_path(data_dir)
    try:
        return AlertBook.model_validate(json.loads(path.read_text("utf-8")))
    except FileNotFoundError:
        return AlertBook()
    except (OSError, ValueError, ValidationError) as exc:
        raise DataValidationError(
            f"alert state {path} is unreadable ({type(exc).__name__}); move it aside to start over "
            "(see docs/runbooks.md)") from exc


def save_book(data_dir: Path, book: AlertBook) -> None:
    atomic_write_text(book_path(data_dir), book.model_dump_json(indent=1))


def prune_outbox(book: AlertBook, now_ms: int) -> int:
    """Drop sent messages older than 7 days, and the oldest beyond 1,000 (pending last)."""
    before = len(book.outbox)
    book.outbox = [m for m in book.outbox if m.sent_at is None or now_ms - m.sent_at < _SENT_KEPT_MS]
    if len(book.outbox) > _OUTBOX_MAX:
        sent = [m for m in book.outbox if m.sent_at is not None]
        drop = {id(m) for m in sent[: len(book.outbox) - _OUTBOX_MAX]}
        book.outbox = [m for m in book.outbox if id(m) not in drop]
        if len(book.outbox) > _OUTBOX_MAX:
            log.warning("alert outbox over %d unsent messages: dropping the oldest", _OUTBOX_MAX)
            book.outbox = book.outbox[-_OUTBOX_MAX:]
    return before - len(book.outbox)
