"""The rollback flow: an operator serves a series' previous champion again from the Prefect UI.

One step back (``coin_core.forecast.registry.rollback``: logged in the series' event log with
the operator's reason), then the site is republished at once so the change is visible now, not
at the next cycle. Refused cleanly (the run fails, saying why) when there is no previous champion
or another model change of the series is running.
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger

from flows.common import flow_actor, flow_settings
from flows.tasks import publish_task, rollback_task
from coin_core.storage import open_store

__all__ = ["rollback_flow"]


@flow(name="rollback")
def rollback_flow(symbol: str, timeframe: str = "1h", reason: str = "operator rollback from the UI") -> str:
    """Roll ``symbol`` ``timeframe`` back one champion and republish; returns the champion now serving."""
    settings = flow_settings()
    event = rollback_task(settings, symbol, timeframe, flow_actor(), reason)
    with open_store(settings) as store:
        publish_task(store, settings, int(time.time() * 1000))
    get_run_logger().info("%s %s rolled back: %s -> %s", symbol, timeframe, event.champion_before, event.champion_after)
    return str(event.champion_after)
