"""Server-side setup the flows rely on: the global concurrency limits, created ACTIVE.

Prefect 2.20 auto-creates a global concurrency limit that ``concurrency()`` names but does not
find, and creates it *inactive*: it then limits nothing, silently. So the project creates its
limits itself, active, and re-activates them if someone disabled them. Run it once per server
(``python -m flows.setup``); ``train_flow`` also runs it before taking its slot, so a fresh
server is safe even if the operator forgot.

A slot is only released by the run that holds it. A train run whose worker died mid-run leaves
its slot occupied and every later train run would wait forever; :func:`release_stale_slots`
frees the limit when no other train run is RUNNING on the server (see docs/deployment.md).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Coroutine, TypeVar
from uuid import UUID

import httpx
from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.client.schemas.filters import (
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Crashed
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.exceptions import ObjectNotFound

from flows.notify import RUN_STATES

__all__ = [
    "CONCURRENCY_LIMITS",
    "TRAIN_LIMIT",
    "CYCLE_LIMIT",
    "ensure_concurrency_limits",
    "release_stale_slots",
    "STALE_RUN_AFTER",
    "read_concurrency_limit",
    "main",
]

log = logging.getLogger(__name__)

TRAIN_LIMIT = "train"
CYCLE_LIMIT = "cycle"
#: name -> slots. ``train`` = 1: a fit holds a whole series in memory; two at once on a small VM
#: is how the original system ran out of memory. ``cycle`` = 1: every cycle (any timeframe)
#: writes the same store series and the same public/, so a slow run and the next scheduled one
#: must not interleave.
CONCURRENCY_LIMITS: dict[str, int] = {TRAIN_LIMIT: 1, CYCLE_LIMIT: 1}

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code, even inside a running flow's event loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _ensure_one(client: PrefectClient, name: str, limit: int) -> GlobalConcurrencyLimitResponse:
    try:
        found = await client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound:
        try:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=limit, active=True)
            )
        except httpx.HTTPStatusError as exc:
            # Two runs racing to create it: the other one won, which is just as good.
            if exc.response.status_code != httpx.codes.CONFLICT:
                raise
        return await client.read_global_concurrency_limit_by_name(name)
    if not found.active or found.limit != limit:
        log.warning("concurrency limit %r was active=%s limit=%s: re-activating with limit %s",
                    name, found.active, found.limit, limit)
        await client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(active=True, limit=limit)
        )
        found = await client.read_global_concurrency_limit_by_name(name)
    return found


async def _ensure_all() -> list[GlobalConcurrencyLimitResponse]:
    async with get_client() as client:
        return [await _ensure_one(client, name, n) for name, n in CONCURRENCY_LIMITS.items()]


def ensure_concurrency_limits() -> list[GlobalConcurrencyLimitResponse]:
    """Create (or re-activate) every limit of :data:`CONCURRENCY_LIMITS`; returns them as stored."""
    return _run(_ensure_all())


async def _read(name: str) -> GlobalConcurrencyLimitResponse | None:
    async with get_client() as client:
        try:
            return await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return None


def read_concurrency_limit(name: str) -> GlobalConcurrencyLimitResponse | None:
    """The limit as the server holds it, or None when it does not exist."""
    return _run(_read(name))


#: Prefect 2.20 has no flow-run heartbeat: a run whose worker or VM died stays RUNNING forever
#: and would hold its slot forever. A RUNNING run older than this is taken for dead.
STALE_RUN_AFTER: dict[str, timedelta] = {TRAIN_LIMIT: timedelta(hours=6), CYCLE_LIMIT: timedelta(hours=2)}


async def _release_stale(name: str, flow_name: str, current_run: str | None) -> bool:
    async with get_client() as client:
        limit = await client.read_global_concurrency_limit_by_name(name)
        if limit.active_slots == 0:
            return False
        running = await client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            ),
        )
        oldest_live = datetime.now(timezone.utc) - STALE_RUN_AFTER.get(name, timedelta(hours=6))
        others = [run for run in running if str(run.id) != current_run]
        for run in others:
            if run.start_time is not None and run.start_time < oldest_live:
                log.warning("flow run %s of %r has been RUNNING since %s: marking it crashed",
                            run.id, flow_name, run.start_time)
                await client.set_flow_run_state(
                    run.id, Crashed(message="no progress for too long: its worker is presumed dead"), force=True)
        if any(run.start_time is None or run.start_time >= oldest_live for run in others):
            return False  # a live holder exists: its slot is not stale
        log.warning("releasing %d stale slot(s) of %r: no other %r run is running",
                    limit.active_slots, name, flow_name)
        await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
        return True


def release_stale_slots(name: str, flow_name: str, current_run: str | UUID | None = None) -> bool:
    """Free ``name``'s slots when no run of ``flow_name`` but ``current_run`` is alive.

    A run RUNNING for longer than :data:`STALE_RUN_AFTER` is marked Crashed first (its worker
    died: Prefect 2.20 would show it RUNNING forever).

    Returns True when stale slots were released. Called before acquiring, so the only way to
    be wrong is two runs starting within the same instant, which the schedule never does.
    """
    return _run(_release_stale(name, flow_name, None if current_run is None else str(current_run)))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m flows.setup", description=(
        "Create the global concurrency limits (active) on the server PREFECT_API_URL names, and "
        "optionally the alert webhook block and a Failed/Crashed flow-run notification."))
    parser.add_argument("--alert-webhook", metavar="URL",
                        help="create/update the custom-webhook block that receives alerts (Slack-compatible JSON)")
    parser.add_argument("--block-name", default="coin-predict-alerts", help="name of that block")
    parser.add_argument("--alert-block", metavar="TYPE/NAME",
                        help="an existing notification block to notify Failed/Crashed runs to instead")
    parser.add_argument("--run-tags", default="coin-predict",
                        help="comma-separated flow-run tags to notify on (empty: every run)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.setup``: limits, and with ``--alert-webhook``/``--alert-block`` notifications."""
    from coin_core.errors import CoinPredictError
    from flows.notify import ensure_run_notifications, parse_block_ref, save_webhook_block

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        ref = args.alert_block and "/".join(parse_block_ref(args.alert_block))
        if args.alert_webhook:
            ref = save_webhook_block(args.block_name, args.alert_webhook)
            print(f"notification block {ref!r} saved: set ALERT_BLOCK={ref} in the worker's environment")
        for found in ensure_concurrency_limits():
            print(f"concurrency limit {found.name!r}: limit={found.limit} active={found.active}")
        if ref:
            tags = [t.strip() for t in args.run_tags.split(",") if t.strip()]
            policy = ensure_run_notifications(ref, tags)
            print(f"flow-run notification {policy}: {'/'.join(RUN_STATES)} runs tagged {tags or 'anything'} -> {ref}")
    except CoinPredictError as exc:
        print(f"flows.setup: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
