"""Concurrency of the data plane: one throttle for many clients, series side by side, and the
shared pieces (SQLite connections, ingest records) staying correct when threads share them.

Real components: the simulated exchange over loopback HTTP, the real ccxt client, real SQLite.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from coin_core.clients import ClientPool
from coin_core.config import Settings
from coin_core.cycle import needs_forecast, run_series
from coin_core.exchange_sim import SimClock, SimExchange
from coin_core.health import IngestState, read_ingest_state, update_ingest_state
from coin_core.pipeline import run_cycle
from coin_core.storage.sqlite import SQLiteStore
from coin_core.throttle import SharedThrottle

from tests.fixtures.exchange import INGEST_NOW as NOW  # noqa: E402 - the fixtures' clock
KLINES = "/api/v3/klines"
LOOKBACK_DAYS = 10  # the first backfill (tests.fixtures.exchange.cfg)


def test_shared_throttle_books_consecutive_slots_across_threads() -> None:
    throttle = SharedThrottle(50, clock=lambda: 100.0, sleep=lambda s: None)
    with ThreadPoolExecutor(8) as pool:
        waits = sorted(pool.map(lambda _: throttle.reserve(0.4), range(40)))
    # 40 requests of cost 0.4 at 50 ms: one every 20 ms, whichever thread asks.
    assert waits == pytest.approx([i * 0.02 for i in range(40)])
    assert throttle.requests == 40 and throttle.mean_interval_ms() == pytest.approx(20.0)


def test_clients_of_many_threads_share_one_request_budget(cfg: Settings, sim_exchange: SimExchange) -> None:
    """8 threads, 24 requests: every one books a slot of the ONE throttle, spaced by ccxt's own
    rateLimit x klines cost, and they overlap the 0.2 s round trip instead of queueing."""
    sim_exchange.latency_s = 0.2
    with ClientPool(cfg, rate_limit_ms=25) as pool:
        pool.throttle.booked.clear()
        with ThreadPoolExecutor(8) as executor:
            list(executor.map(lambda _: pool.client().fetch_ohlcv("BTC/USDT", "1h", since=None, limit=5), range(24)))
        clients = len(pool._clients)
        parsed = {id(client._exchange.markets) for client in pool._clients}
        slots = list(pool.throttle.booked)
    gaps = [b - a for a, b in zip(slots, slots[1:])]
    assert len(slots) == 24 and min(gaps) >= 0.025 * 0.4 - 1e-6, gaps  # ccxt's cost of a spot klines request
    arrivals = sorted(r.at_ms / 1000 for r in sim_exchange.requests if r.path == KLINES)
    assert len(arrivals) == 24
    # Serial requests would arrive one round trip (0.2 s) apart at best.
    assert arrivals[-1] - arrivals[0] < 23 * 0.2 / 2, "requests did not overlap their round trips"
    assert clients >= 2, "each thread fetches with its own ccxt client"
    assert sim_exchange.count("/api/v3/exchangeInfo") == 1, "one market load for the whole pool"
    assert len(parsed) == 1, "the markets are parsed once and shared, not parsed again by each thread's client"


def test_run_series_ingests_all_series_side_by_side_and_exactly(cfg: Settings, frozen: SimClock) -> None:
    symbols = [f"S{i:02d}/USDT" for i in range(12)]
    with SimExchange(symbols, clock=frozen, latency_s=0.05) as sim:
        settings = cfg.model_copy(update={"exchange_api_url": sim.base_url, "target_symbols": symbols,
                                          "exchange_concurrency": 6})
        with SQLiteStore(settings.data_dir / "c.sqlite3") as store:
            run = run_series(store, settings, forecast=False)
            assert run.ingest.ok and run.now_ms == int(NOW * 1000)
            for symbol in symbols:
                rows = store.read_candles(symbol, "1h").values.tolist()
                assert rows == sim.expected_closed(symbol, "1h", int(rows[0][0]), 2**62)
        assert sim.count("/api/v3/time") == 1, "the run's clock is read once, not once per series"


def test_cli_cycle_skips_an_unlisted_symbol_and_gates_forecasts(cfg: Settings, sim_exchange: SimExchange,
                                                                 frozen: SimClock) -> None:
    settings = cfg.model_copy(update={"target_symbols": ["BTC/USDT", "DOGE/USDT", "ETH/USDT"]})
    first = run_cycle(settings)
    by = {s.symbol: s for s in first.ingest.series}
    assert "not listed" in (by["DOGE/USDT"].error or "")
    assert by["BTC/USDT"].error is None and by["ETH/USDT"].new_candles == 10 * 24
    assert set(first.forecasts) == {"BTC/USDT 1h", "ETH/USDT 1h"}
    assert "not listed" in (read_ingest_state(settings.data_dir, "DOGE/USDT", "1h").last_error or "")
    with SQLiteStore(settings.data_dir / "candles.sqlite3") as store:
        assert not needs_forecast(store, "BTC/USDT", "1h")
        issued = store.latest_forecast("BTC/USDT", "1h").issued_at
    again = run_cycle(settings)
    assert again.forecasts == {}, "the input did not move: no new forecast"
    frozen.advance(3600)
    third = run_cycle(settings)
    assert set(third.forecasts) == {"BTC/USDT 1h", "ETH/USDT 1h"}
    with SQLiteStore(settings.data_dir / "candles.sqlite3") as store:
        assert store.latest_forecast("BTC/USDT", "1h").issued_at > issued


def _book(path: Path) -> Any:
    from coin_core.lifecycle import ScoreBook

    return ScoreBook(path)


@pytest.mark.parametrize("open_it, use, empty", [
    (SQLiteStore, lambda store: store.count("BTC/USDT", "1h"), 0),
    (_book, lambda book: book.watermark("BTC/USDT", "1h"), None),  # the flows share one book across threads
], ids=["candle-store", "score-book"])
def test_close_closes_the_connection_of_every_thread(tmp_path: Path, open_it: Any, use: Any, empty: Any) -> None:
    db = open_it(tmp_path / "db.sqlite3")
    barrier = threading.Barrier(3)

    def work(_: int) -> None:
        use(db)
        barrier.wait()  # three live threads, three connections

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(work, range(3)))
    opened = list(db._conns._open)
    assert len(opened) >= 3
    db.close()
    for conn in opened:
        with pytest.raises(Exception, match="closed"):
            conn.execute("SELECT 1")
    assert use(db) == empty, "a closed store or book reopens on next use"
    db.close()


def _bump(data_dir: str, times: int) -> None:
    for _ in range(times):
        update_ingest_state(Path(data_dir), "BTC/USDT", "1h",
                            lambda s: s.model_copy(update={"last_new_candles": s.last_new_candles + 1}))


def test_ingest_record_updates_are_not_lost_across_threads_and_processes(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_bump, args=(str(tmp_path), 40)) for _ in range(2)]
    for p in procs:
        p.start()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: _bump(str(tmp_path), 40), range(4)))
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    state = read_ingest_state(tmp_path, "BTC/USDT", "1h")
    assert state is not None and state.last_new_candles == 6 * 40, "a read-modify-write was lost"
    assert IngestState.model_validate(json.loads((tmp_path / "state" / "ingest_BTC-USDT_1h.json").read_text()))


def test_simulated_exchange_serves_cached_rows_identical_to_built_ones(sim_exchange: SimExchange, frozen: SimClock) -> None:
    import httpx

    end = int(NOW * 1000)
    cached = sim_exchange.prebuild("BTC/USDT", "1h", end - 48 * 3_600_000, end)
    assert cached == 47 and len(sim_exchange.wire) == 47  # 13:00 two days ago .. 11:00 (12:00 is open)
    params = {"symbol": "BTCUSDT", "interval": "1h", "startTime": end - 50 * 3_600_000, "limit": 1000}
    fast = httpx.get(sim_exchange.base_url + KLINES, params=params).json()
    built = [k.wire() for k in sim_exchange.klines("BTC/USDT", "1h", params["startTime"], None, 1000)]
    assert fast == built and fast[-1][0] == end - end % 3_600_000, "in-progress candle included, built fresh"


def test_simulated_exchange_keeps_every_prebuilt_row_past_its_default_bound(sim_exchange: SimExchange, frozen: SimClock) -> None:
    """A benchmark's prebuilt history never evicts itself: past the cache's bound the bound
    grows, so every page is served from cached rows (with 24 series x a year it did not, and the
    simulator became the benchmark's bottleneck at ~30 ms of CPU a page)."""
    hour, end = 3_600_000, int(NOW * 1000)
    sim_exchange.wire.max_rows = 30
    first = sim_exchange.prebuild("BTC/USDT", "1h", end - 25 * hour, end)
    second = sim_exchange.prebuild("ETH/USDT", "1h", end - 25 * hour, end)
    assert first == second == 24 and len(sim_exchange.wire) == 48 and sim_exchange.wire.max_rows >= 48
    built: list[str] = []
    for symbol in ("BTC/USDT", "ETH/USDT"):
        rows = sim_exchange.wire.rows(symbol, "1h", [end - k * hour - end % hour for k in range(24, 0, -1)],
                                      end, lambda ts: built.append(symbol))
        assert None not in rows and len(rows) == 24
    assert built == [], "a prebuilt row was evicted and built again"


def test_simulated_exchange_fast_pages_equal_built_ones_across_a_hole(sim_exchange: SimExchange, frozen: SimClock) -> None:
    import httpx

    hour, end = 3_600_000, int(NOW * 1000)
    sim_exchange.prebuild("BTC/USDT", "1h", end - 30 * hour, end)
    sim_exchange.missing_range("BTC/USDT", "1h", end - 20 * hour, end - 15 * hour)
    queries = [{"startTime": end - 40 * hour, "limit": 12},   # uncached rows, then the hole is skipped
               {"startTime": end - 25 * hour, "endTime": end - 10 * hour, "limit": 1000},
               {"endTime": end - 14 * hour, "limit": 8}]       # backwards over the hole
    for query in queries:
        fast = httpx.get(sim_exchange.base_url + KLINES, params={"symbol": "BTCUSDT", "interval": "1h", **query}).json()
        built = [k.wire() for k in sim_exchange.klines("BTC/USDT", "1h", query.get("startTime"), query.get("endTime"),
                                                       query["limit"])]
        assert fast == built and fast, query
        assert not [r for r in fast if end - 20 * hour <= r[0] <= end - 15 * hour], "a missing candle was served"
    newest = (end - 14 * hour) // hour * hour
    assert len(built) == 8 and built[-1][0] == newest and built[-1][0] - built[-2][0] > hour, "the page jumps the hole"
