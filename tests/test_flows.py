"""The Prefect flows, run for real: Prefect test harness (SQLite API), the embedded SQLite store,
the real ccxt client against the simulated exchange, real Prophet fits on small histories.

Settings reach the flows the production way: from environment variables read at flow entry.
"""

from __future__ import annotations

import asyncio
import json
import time
import threading
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.client.schemas.objects import TaskRun
from prefect.states import State

from coin_core.config import Settings
from coin_core.exchange_sim import SimClock, SimExchange
from coin_core.forecast.registry import artifact_path, list_versions, load_champion, read_pointer
from coin_core.storage.sqlite import SQLiteStore
from flows import cycle_flow, ingest_flow, train_flow
from flows.setup import TRAIN_LIMIT, ensure_concurrency_limits, read_concurrency_limit, release_stale_slots
from flows.tasks import (
    exchange_markets,
    fit_keys_task,
    forecast_task,
    publish_task,
    train_task,
    units_task,
)
from tests.fixtures.prefect import PrefectHarness

pytestmark = pytest.mark.usefixtures("prefect_harness")

KLINES = "/api/v3/klines"


@pytest.fixture
def flow_env(sim_settings: Settings, sim_exchange: SimExchange, sim_clock: Any, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Environment a worker would have: 14 days of 1h history keeps fits to about a second.

    The exchange's clock is frozen mid-hour, so no candle closes while a test runs (a wall
    clock crossing the hour made the detection-gate assertions flaky).
    """
    now = time.time()
    sim_clock.set(now - now % 3600 + 1800)
    env = {
        "DATA_DIR": str(sim_settings.data_dir), "PUBLIC_DIR": str(sim_settings.public_dir),
        "EXCHANGE_API_URL": sim_exchange.base_url, "EXCHANGE_TIMEOUT_S": "5",
        "EXCHANGE_MAX_RETRIES": "0",  # the client gives up at once: Prefect's retries are under test
        # The tests move the exchange's clock an hour on, not the machine's: allow that lead.
        "EXCHANGE_MAX_CLOCK_SKEW_S": "86400",
        "TIMEFRAME_POLICY": json.dumps({"1h": {"lookback_days": 14}}),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return sim_settings


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _artifact_rows(flow_run_id: Any) -> list[dict[str, Any]]:
    async with get_client() as client:
        found = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    tables = [a for a in found if a.type == "table"]
    assert len(tables) == 1, f"expected one table artifact, got {[a.key for a in found]}"
    data = tables[0].data
    return json.loads(data) if isinstance(data, str) else data


async def _task_runs(flow_run_id: Any) -> list[TaskRun]:
    async with get_client() as client:
        return await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _rows(state: State) -> dict[str, dict[str, Any]]:
    return {row["series"]: row for row in _run(_artifact_rows(state.state_details.flow_run_id))}


def _store(settings: Settings) -> SQLiteStore:
    return SQLiteStore(settings.data_dir / "candles.sqlite3")


@pytest.mark.slow
def test_cycle_ingests_forecasts_publishes_then_gate_skips(flow_env: Settings, sim_exchange: SimExchange) -> None:
    loads = sim_exchange.count("/api/v3/exchangeInfo")
    first = cycle_flow(return_state=True)
    assert first.is_completed(), first.message
    # One market load for the run; each series' task fetches with its own client on the snapshot.
    assert sim_exchange.count("/api/v3/exchangeInfo") - loads <= 1
    rows = _rows(first)
    assert set(rows) == {"BTC/USDT 1h", "ETH/USDT 1h"}, "one artifact row per series"
    for row in rows.values():
        assert row["new candles"] >= 14 * 24 - 1 and row["error"] == "" and row["forecast"] == "ok"
    public = flow_env.public_dir
    assert (public / "index.html").is_file()
    manifest = json.loads((public / "manifest.json").read_text())
    assert "BTC/USDT" in json.dumps(manifest)
    with _store(flow_env) as store:
        forecast = store.latest_forecast("BTC/USDT", "1h")
        assert forecast is not None and forecast.input_last_ts == store.latest_ts("BTC/USDT", "1h")

    klines, info = sim_exchange.count(KLINES), sim_exchange.count("/api/v3/exchangeInfo")
    second = cycle_flow(return_state=True)
    assert second.is_completed(), second.message
    again = _rows(second)
    assert all(r["skipped"] and r["new candles"] == 0 and r["forecast"] == "not run" for r in again.values())
    assert sim_exchange.count(KLINES) == klines, "detection gate: no klines request without a new candle"
    assert sim_exchange.count("/api/v3/exchangeInfo") == info, "market list came from the task cache"


def test_forecast_flow_refreshes_every_series_from_its_stored_candles_and_publishes(
        flow_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows import forecast_flow

    assert ingest_flow(return_state=True).is_completed()
    with _store(flow_env) as store:
        assert store.latest_forecast("BTC/USDT", "1h") is None
    state = forecast_flow(return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == {"BTC/USDT 1h": "ok", "ETH/USDT 1h": "ok"}
    with _store(flow_env) as store:
        for symbol in ("BTC/USDT", "ETH/USDT"):
            forecast = store.latest_forecast(symbol, "1h")
            assert forecast is not None and forecast.input_last_ts == store.latest_ts(symbol, "1h")
    assert "BTC/USDT" in (flow_env.public_dir / "manifest.json").read_text()
    # A configured series with nothing stored fails the run, naming it; the others are forecast.
    monkeypatch.setenv("TARGET_SYMBOLS", "BTC/USDT,SOL/USDT,ETH/USDT")
    failed = forecast_flow(return_state=True)
    assert failed.is_failed() and "SOL/USDT 1h" in failed.message and "BTC/USDT 1h" not in failed.message


def test_failing_series_does_not_stop_the_others(flow_env: Settings, sim_exchange: SimExchange,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARGET_SYMBOLS", "BTC/USDT,XRP/USDT,ETH/USDT")
    state = cycle_flow(return_state=True)
    assert state.is_failed()
    assert "XRP/USDT 1h" in state.message and "not listed" in state.message
    rows = _rows(state)
    assert list(rows) == ["BTC/USDT 1h", "XRP/USDT 1h", "ETH/USDT 1h"]
    assert "not listed" in rows["XRP/USDT 1h"]["error"]
    for ok in ("BTC/USDT 1h", "ETH/USDT 1h"):
        assert rows[ok]["error"] == "" and rows[ok]["new candles"] > 0 and rows[ok]["forecast"] == "ok"
    assert (flow_env.public_dir / "index.html").is_file(), "the site is published despite the failure"


def test_permanent_exchange_error_fails_its_series_without_retry(
    flow_env: Settings, sim_exchange: SimExchange, sim_clock: SimClock
) -> None:
    assert ingest_flow(return_state=True).is_completed()  # caches the market list, ETH included
    sim_clock.advance(3600)  # a new candle closes on the exchange
    sim_exchange.delist("ETH/USDT")  # still in the cached list; klines now answers Invalid symbol
    sim_exchange.clear_requests()
    state = ingest_flow(return_state=True)
    assert state.is_failed() and "ETH/USDT 1h" in state.message
    eth = [r for r in sim_exchange.requests if r.path == KLINES and r.params.get("symbol") == "ETHUSDT"]
    assert len(eth) == 1, "a permanent error is not retried"
    rows = _rows(state)
    assert rows["ETH/USDT 1h"]["error"].startswith("PermanentExchangeError")
    assert rows["BTC/USDT 1h"]["error"] == "" and rows["BTC/USDT 1h"]["new candles"] >= 1


def test_transient_error_fails_only_its_series_and_the_next_run_catches_up(
        flow_env: Settings, sim_exchange: SimExchange) -> None:
    sim_exchange.faults.add("server_error", count=1, path=KLINES, status=503)
    state = ingest_flow(return_state=True)
    assert state.is_failed(), "a series the exchange did not serve must not end Completed"
    rows = _rows(state)
    failed = [name for name, row in rows.items() if row["error"]]
    assert len(failed) == 1 and len(rows) == len(flow_env.series()), rows
    assert failed[0] in state.message
    # One task runs every series' unit: no per-series task run to orchestrate.
    units = [t for t in _run(_task_runs(state.state_details.flow_run_id)) if t.name.startswith("ingest ")]
    assert [t.name for t in units] == [f"ingest {len(flow_env.series())} series"]
    again = ingest_flow(return_state=True)
    assert again.is_completed(), again.message
    assert all(row["error"] == "" for row in _rows(again).values())
    with _store(flow_env) as store:  # the faulted series holds as many candles as the others
        counts = {f"{symbol} {tf}": store.count(symbol, tf) for symbol, tf in flow_env.series()}
    assert len(set(counts.values())) == 1 and min(counts.values()) > 0, counts


def test_retry_policy_is_io_only_with_whole_second_delays() -> None:
    for io in (exchange_markets, publish_task, fit_keys_task):
        assert io.retries >= 1 and io.retry_condition_fn is not None, io.name
        delays = io.retry_delay_seconds if isinstance(io.retry_delay_seconds, list) else [io.retry_delay_seconds]
        assert all(isinstance(d, int) and d >= 1 for d in delays), (io.name, delays)
        assert not io.retry_jitter_factor
    for cpu in (forecast_task, train_task):
        assert cpu.retries == 0, f"{cpu.name} is CPU-bound: retrying repeats the same failure"
    for step in (units_task,):  # per-series errors are rows; the next cycle catches up
        assert step.retries == 0, f"{step.name} would redo every series"


def _train_rows(state: State) -> dict[str, dict[str, Any]]:
    """One row per series and candidate model."""
    assert state.is_completed(), state.message
    rows = _run(_artifact_rows(state.state_details.flow_run_id))
    return {f"{row['series']} {row['model']}": row for row in rows}


@pytest.mark.slow
def test_train_reuses_cached_fit_and_recomputes_a_deleted_result(
    flow_env: Settings, prefect_harness: PrefectHarness
) -> None:
    assert ingest_flow(return_state=True).is_completed()
    first = _train_rows(train_flow(return_state=True))
    assert len(first) == 8, "two series x four candidates (naive, drift, prophet, ets)"
    assert {r["status"] for r in first.values()} == {"trained"} and not any(r["cached"] for r in first.values())
    versions = list_versions(flow_env, "BTC/USDT", "1h")

    second = _train_rows(train_flow(return_state=True))
    assert all(r["cached"] and r["version"] == first[s]["version"] for s, r in second.items()), "no refit"
    assert list_versions(flow_env, "BTC/USDT", "1h") == versions

    results = sorted(prefect_harness.storage.glob("fit-*-1h-*"))
    assert len(results) >= 2
    for path in results:
        path.unlink()
    third = _train_rows(train_flow(return_state=True))  # Prefect 2.20 alone would fail this run
    assert not any(r["cached"] for r in third.values())
    assert all(p.is_file() for p in results), "the recomputed results were persisted again"
    assert all(r["cached"] for r in _train_rows(train_flow(return_state=True)).values())

    champion = read_pointer(flow_env, "BTC/USDT", "1h").version
    artifact_path(flow_env, "BTC/USDT", "1h", champion).write_text("{ corrupt")
    fifth = _train_rows(train_flow(return_state=True))
    assert not fifth["BTC/USDT 1h naive"]["cached"] and fifth["ETH/USDT 1h naive"]["cached"], "a corrupt model is refitted"
    assert load_champion(flow_env, "BTC/USDT", "1h") is not None, "the gate healed the series with a fresh baseline"
    assert fifth["BTC/USDT 1h naive"]["serving"] == read_pointer(flow_env, "BTC/USDT", "1h").version != champion


def test_train_gates_every_candidate_and_publishes(flow_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """However a retrain starts, it ends gated and published; nothing it fits serves ungated."""
    assert ingest_flow(return_state=True).is_completed()
    rows = _train_rows(train_flow(symbols=["BTC/USDT"], return_state=True))
    assert {r["model"] for r in rows.values()} == {"naive", "drift", "prophet", "ets"}
    assert all(r["gate"] == "insufficient_data" and r["trigger"] == "requested" for r in rows.values()), rows
    state = read_pointer(flow_env, "BTC/USDT", "1h")
    assert state.version.startswith("naive-"), "with too little history to evaluate, the naive baseline serves"
    assert set(state.challengers) == {"prophet", "ets"} and set(state.baselines) == {"naive", "drift"}
    assert (flow_env.public_dir / "index.html").is_file(), "a train run republishes"
    from coin_core.forecast.registry import model_events

    kinds = [(e.kind, e.actor) for e in model_events(flow_env, "BTC/USDT", "1h")]
    assert kinds.count(("registered", "ui")) == 4 and kinds[-1] == ("promoted", "ui")
    assert _train_rows(train_flow(symbols=["BTC/USDT"], triggered_only=True, return_state=True)) == {}, "no trigger fired"
    monkeypatch.setenv("RETRAIN_MAX_AGE_DAYS", "0.000001")  # the champion is now "old"
    triggered = _train_rows(train_flow(symbols=["BTC/USDT"], triggered_only=True, return_state=True))
    assert {r["trigger"].split(":")[0] for r in triggered.values()} == {"age"} and len(triggered) == 4
    assert all(r["cached"] for r in triggered.values()), "same data, same specs: nothing refitted"


async def _set_limit(**changes: Any) -> None:
    async with get_client() as client:
        await client.update_global_concurrency_limit(TRAIN_LIMIT, GlobalConcurrencyLimitUpdate(**changes))


def test_concurrency_limit_is_created_active_and_reactivated() -> None:
    ensure_concurrency_limits()
    _run(_set_limit(active=False, limit=5))
    ensure_concurrency_limits()
    found = read_concurrency_limit(TRAIN_LIMIT)
    assert found is not None and found.active and found.limit == 1


@pytest.mark.slow
def test_stale_slot_is_released_only_without_a_running_train(flow_env: Settings) -> None:
    ensure_concurrency_limits()
    _run(_set_limit(active_slots=1))  # what a train run killed with its worker leaves behind
    assert release_stale_slots(TRAIN_LIMIT, "train") is True
    assert read_concurrency_limit(TRAIN_LIMIT).active_slots == 0
    assert release_stale_slots(TRAIN_LIMIT, "train") is False  # nothing to release

    _run(_set_limit(active_slots=1))
    done: list[State] = []
    worker = threading.Thread(target=lambda: done.append(train_flow(return_state=True)), daemon=True)
    worker.start()
    worker.join(timeout=180)
    assert done, "a leaked slot must not block the next train run"
    # It ran to its end: with nothing stored yet, a train run fails naming that (never Completed with 0 models).
    assert done[0].is_failed() and "no candles stored" in (done[0].message or ""), done[0]
    assert read_concurrency_limit(TRAIN_LIMIT).active_slots == 0


@pytest.mark.slow
def test_a_cycle_of_one_timeframe_publishes_every_configured_series(flow_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENABLE_MULTI_TIMEFRAMES", "true")
    monkeypatch.setenv("INGEST_TIMEFRAMES", "1h,1w")
    state = cycle_flow(timeframe="1w", symbols=["BTC/USDT"], return_state=True)
    assert state.is_completed(), state.message
    rows = _rows(state)
    assert set(rows) == {"BTC/USDT 1w"}, "ingest and forecast cover the run's timeframe and symbols only"
    manifest = json.loads((flow_env.public_dir / "manifest.json").read_text())
    listed = {(s["symbol"], s["timeframe"]) for s in manifest["series"]}
    assert listed == {(s, tf) for s in ("BTC/USDT", "ETH/USDT") for tf in ("1h", "1w")}, "the site never shrinks"


def test_a_run_whose_worker_died_is_crashed_and_its_slot_released(flow_env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prefect 2.20 leaves a dead worker's run RUNNING forever; past STALE_RUN_AFTER it is dead."""
    from datetime import timedelta

    from prefect.states import Running

    import flows.setup as setup

    async def _running_train_run() -> Any:
        async with get_client() as client:
            return await client.create_flow_run(train_flow, state=Running())

    dead = _run(_running_train_run())
    ensure_concurrency_limits()
    _run(_set_limit(active_slots=1))
    assert release_stale_slots(TRAIN_LIMIT, "train") is False, "within the limit it counts as alive"
    monkeypatch.setitem(setup.STALE_RUN_AFTER, TRAIN_LIMIT, timedelta(seconds=0))
    assert release_stale_slots(TRAIN_LIMIT, "train") is True
    assert read_concurrency_limit(TRAIN_LIMIT).active_slots == 0

    async def _state() -> Any:
        async with get_client() as client:
            return (await client.read_flow_run(dead.id)).state

    assert _run(_state()).type.value == "CRASHED"


def test_rollback_flow_serves_the_previous_champion_and_republishes(flow_env: Settings) -> None:
    from coin_core.forecast import registry
    from coin_core.lifecycle import decide
    from flows import rollback_flow
    from tests.test_lifecycle import Score

    first = cycle_flow(symbols=["BTC/USDT"], return_state=True)
    assert first.is_completed(), first.message
    assert _rows(first)["BTC/USDT 1h"]["scored"] == 0, "the cycle scores before it forecasts"
    found = registry.registered(flow_env, "BTC/USDT", "1h")
    naive = next(m for m in found if m.role == "champion")
    drift = next(m for m in found if m.metadata.spec.name == "drift")
    registry.promote(flow_env, decide(flow_env, drift, naive, candidate_score=Score(0.9, 0.8),
                                      champion_score=Score(1.0, 0.8), live=None, now_ms=0), actor="cli")
    page = flow_env.public_dir / "models.html"
    before = page.read_text()
    state = rollback_flow(symbol="BTC/USDT", timeframe="1h", reason="looks wrong", return_state=True)
    assert state.is_completed(), state.message
    assert state.result() == naive.version == read_pointer(flow_env, "BTC/USDT", "1h").version
    event = registry.model_events(flow_env, "BTC/USDT", "1h")[-1]
    assert (event.kind, event.actor, event.reason) == ("rolled_back", "ui", "looks wrong")
    assert page.read_text() != before and "rolled back" in page.read_text(), "republished at once"
    again = rollback_flow(symbol="BTC/USDT", timeframe="1h", return_state=True)
    assert again.is_failed() and "no previous champion" in again.message
