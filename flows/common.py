"""What every flow needs at its entry and exit: settings, its series, a verdict from task states."""

from __future__ import annotations

import asyncio
import concurrent.futures
from contextlib import contextmanager
from typing import Any, Iterable, Iterator
from uuid import UUID

from prefect import get_client, get_run_logger, runtime
from prefect.states import State

from coin_core.config import Settings, load_settings
from coin_core.errors import ConfigError, StorageError
from coin_core.forecast.events import Actor
from coin_core.forecast.predict import short_error
from coin_core.metrics import RunTimer

__all__ = ["SeriesFailed", "flow_settings", "state_error", "fail_if_any", "recorded_run", "flow_actor"]


class SeriesFailed(RuntimeError):
    """Raised at the END of a flow when some series failed: the others ran, the site was published."""


def flow_settings(symbols: Iterable[str] | None = None, timeframes: Iterable[str] | None = None) -> Settings:
    """Settings from the environment, once per run, narrowed to the run's symbols/timeframes.

    A parameter narrows the configured series and never widens them: an empty list, a symbol
    not in TARGET_SYMBOLS or a timeframe not in INGEST_TIMEFRAMES fails the run with a
    ConfigError naming it (a UI run never ends Completed having done nothing).
    """
    return load_settings().narrowed(_listed(symbols, "symbols"), _listed(timeframes, "timeframes"))


def _listed(value: Any, name: str) -> list[Any] | None:
    """A UI-typed parameter is JSON: a bare string instead of a list is taken as comma-separated."""
    if value is None or isinstance(value, str):
        return None if value is None else value.split(",")
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"parameter {name} must be a list of strings, got {type(value).__name__}")
    return list(value)


def state_error(state: State) -> str | None:
    """None for a completed task state, else a one-line, secret-free reason."""
    if state.is_completed():
        return None
    exc = state.result(raise_on_failure=False)
    return short_error(exc) if isinstance(exc, BaseException) else (state.message or state.name or "failed")


def fail_if_any(what: str, failures: dict[str, str]) -> None:
    """End the run Failed, naming every failed series, once all the work has been done."""
    if failures:
        listed = "; ".join(f"{name}: {error}" for name, error in failures.items())
        raise SeriesFailed(f"{len(failures)} {what} failed: {listed}")


@contextmanager
def recorded_run(settings: Settings, flow: str) -> Iterator[RunTimer]:
    """Time the run and its steps (``timer.step``) and append its record, whatever the outcome.

    The records are the runtime metrics and the cycle heartbeat; failing to write one is logged,
    never a reason to fail the run.
    """
    timer = RunTimer(flow)
    outcome = "failed"
    try:
        yield timer
        outcome = "completed"
    finally:
        try:
            timer.record(settings.data_dir, outcome, settings.metrics_retention_days)
        except (StorageError, OSError) as exc:
            get_run_logger().warning("could not record the run's metrics: %s", exc)


async def _auto_scheduled(run_id: str) -> bool:
    async with get_client() as client:
        return bool((await client.read_flow_run(UUID(run_id))).auto_scheduled)


def flow_actor() -> Actor:
    """Who started this run, for the model event log: its deployment's schedule, or an operator
    (the UI, or ``prefect deployment run``) - every run a scheduler did not create."""
    run_id = runtime.flow_run.id
    if not run_id:
        return "ui"
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:  # inside the flow's event loop
        return "schedule" if pool.submit(asyncio.run, _auto_scheduled(str(run_id))).result() else "ui"
