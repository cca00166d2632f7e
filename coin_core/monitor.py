"""One monitor pass: status picture -> alert state machine -> outbox delivery.

The ``monitor`` flow and ``coin-predict monitor`` both call :func:`run_monitor`. Sending is a
callable (the flow passes a Prefect notification block's ``notify``); a send that fails after
``ALERT_SEND_ATTEMPTS`` tries stops delivery for this pass (the endpoint is down) and every
unsent message stays in the outbox for the next pass: nothing is dropped, the pass itself still
succeeds and the report says what is pending and why. Without a sender (no ``ALERT_BLOCK``)
messages go to the log only and are marked sent on channel ``log``, unless ``hold`` is set (the
CLI with an ``ALERT_BLOCK`` configured: it cannot load a Prefect block, so it leaves its messages
pending for the monitor flow to send).

Passes never overlap: an exclusive lock on ``DATA_DIR/alerts/monitor.lock`` (released by the OS
if the process dies).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .alerts import AlertBook, AlertPolicy, OutboxMessage, conditions_of, evaluate_alerts, load_book, prune_outbox, save_book
from .config import Settings
from .errors import LockError
from .status import StatusPicture, build_status

__all__ = ["Sender", "MonitorReport", "run_monitor", "deliver", "monitor_lock", "scrub_urls"]

log = logging.getLogger(__name__)

#: Sends one message; raises anything on failure (it is caught, logged and retried later).
Sender = Callable[[OutboxMessage], None]


@dataclass
class MonitorReport:
    picture: StatusPicture
    queued: list[OutboxMessage] = field(default_factory=list)
    sent: list[OutboxMessage] = field(default_factory=list)
    pending: list[OutboxMessage] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    firing: list[str] = field(default_factory=list)

    @property
    def delivered_all(self) -> bool:
        return not self.pending


@contextmanager
def monitor_lock(data_dir: Path) -> Iterator[None]:
    path = Path(data_dir) / "alerts" / "monitor.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise LockError(f"another monitor pass holds {path}") from exc
        yield
    finally:
        os.close(fd)


_URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://([^/\s'\"]+)[^\s'\"]*", re.IGNORECASE)


def scrub_urls(text: str) -> str:
    """Keep only scheme and host of every URL: a webhook's path is often its secret token."""
    return _URL.sub(lambda m: f"{m.group(1)}://{m.group(2).rsplit('@', 1)[-1]}/…", text)


def _try_send(send: Sender, msg: OutboxMessage, attempts: int, delay_s: float,
              sleep: Callable[[float], None]) -> str | None:
    """None once sent, else the last error (one line) after ``attempts`` tries."""
    error = None
    for attempt in range(attempts):
        if attempt:
            sleep(delay_s * attempt)
        msg.attempts += 1
        try:
            send(msg)
            return None
        except Exception as exc:  # any failure of a third-party endpoint: keep the message
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            error = scrub_urls(f"{type(exc).__name__}: {first}")[:300]
            log.warning("sending alert %s failed (try %d of %d): %s", msg.event_id, attempt + 1, attempts, error)
    return error


def deliver(book: AlertBook, data_dir: Path, send: Sender | None, *, now_ms: int, attempts: int = 3,
            delay_s: float = 2.0, sleep: Callable[[float], None] = time.sleep, hold: bool = False,
            ) -> tuple[list[OutboxMessage], list[str]]:
    """Send every pending message in order, saving the book after each; returns (sent, errors)."""
    sent: list[OutboxMessage] = []
    for msg in [] if send is None and hold else book.pending:
        if send is None:
            log.warning("alert (no ALERT_BLOCK configured, log only): %s", msg.text)
            channel = "log"
        else:
            error = _try_send(send, msg, attempts, delay_s, sleep)
            if error is not None:
                msg.last_error = error
                save_book(data_dir, book)
                return sent, [f"{msg.event_id}: {error}"]
            channel = "webhook"
        msg.sent_at, msg.channel, msg.last_error = now_ms, channel, None
        save_book(data_dir, book)
        sent.append(msg)
    return sent, []


def run_monitor(settings: Settings, *, now_ms: int, send: Sender | None, hold: bool = False,
                picture: StatusPicture | None = None, sleep: Callable[[float], None] = time.sleep) -> MonitorReport:
    """One pass at ``now_ms``: judge, record intent, deliver, prune. See the module docstring."""
    data_dir = Path(settings.data_dir)
    with monitor_lock(data_dir):
        picture = picture or build_status(settings, now_ms=now_ms)
        book = load_book(data_dir)
        policy = AlertPolicy(settings.alert_repeat_s, settings.alert_escalate_s)
        report = MonitorReport(picture, queued=evaluate_alerts(book, conditions_of(picture), now_ms, policy))
        save_book(data_dir, book)  # intent first: a crash from here on loses nothing
        report.sent, report.errors = deliver(book, data_dir, send, now_ms=now_ms, attempts=settings.alert_send_attempts,
                                             delay_s=settings.alert_retry_delay_s, sleep=sleep, hold=hold)
        if prune_outbox(book, now_ms):
            save_book(data_dir, book)
        report.pending = book.pending
        report.firing = sorted(k for k, rec in book.alerts.items() if rec.firing)
    return report
