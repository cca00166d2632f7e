"""The monitor flow: every few minutes, turn the status picture into alerts (``prefect.yaml``).

All the logic is :func:`coin_core.monitor.run_monitor`; this flow loads the notification block
named by ``ALERT_BLOCK`` (or the ``block`` parameter), runs one pass and reports it: each queued
alert and every delivery failure go to the run's log, the runtime metrics to a table artifact.

An unreachable webhook never fails the run: its alerts stay in the outbox and the next pass
retries them (the log says how many are pending and why). A block that does not exist or is
not a notification block fails the run at once with a clear message.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task

from coin_core.config import Settings
from coin_core.monitor import MonitorReport, Sender, run_monitor
from coin_core.status import StatusPicture

from flows.artifacts import artifact_key, publish_table
from flows.common import flow_settings, recorded_run
from flows.notify import load_sender

__all__ = ["monitor_task", "metrics_rows", "monitor_flow"]


@task(name="monitor-pass")
def monitor_task(settings: Settings, now_ms: int, send: Sender | None) -> MonitorReport:
    return run_monitor(settings, now_ms=now_ms, send=send)


def metrics_rows(picture: StatusPicture) -> list[dict[str, object]]:
    """One row per flow and window: what the runtime-metrics artifact and status page show."""
    return [
        {"flow": stats.flow, "window": label, "runs": w.runs, "failed": w.failed, "p50 s": w.p50_s,
         "p95 s": w.p95_s, "max s": w.max_s, "overruns": w.overruns, "budget s": w.budget_s}
        for stats in picture.metrics for label, w in stats.windows.items()
    ]


def _log(report: MonitorReport) -> None:
    logger = get_run_logger()
    for msg in report.queued:
        logger.warning("%s", msg.text)
    for error in report.errors:
        logger.warning("alert delivery failed, %d alert(s) kept for the next pass: %s", len(report.pending), error)
    logger.info("monitor pass: %d queued, %d sent, %d pending; firing: %s", len(report.queued),
                len(report.sent), len(report.pending), ", ".join(report.firing) or "none")


@flow(name="monitor")
def monitor_flow(block: str | None = None) -> dict[str, object]:
    """One monitor pass; ``block`` (``type-slug/name``) overrides ``ALERT_BLOCK``."""
    settings = flow_settings()
    with recorded_run(settings, "monitor"):
        send = load_sender(block or settings.alert_block)
        report = monitor_task(settings, int(time.time() * 1000), send)
        _log(report)
        usage = report.picture.storage
        used = "unknown" if usage.ratio is None else f"{usage.ratio:.1%}"
        publish_table(artifact_key("runtime", "metrics"), metrics_rows(report.picture),
                      f"Runtime over 24 h and 7 days; storage {used} of the budget; "
                      f"firing alerts: {', '.join(report.firing) or 'none'}.")
    return {"queued": [m.event_id for m in report.queued], "sent": [m.event_id for m in report.sent],
            "pending": [m.event_id for m in report.pending], "firing": report.firing}
