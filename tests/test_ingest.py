"""Ingest against the real ccxt client and the simulated exchange, into real stores.

Every fault test ends the same way: the store equals the exchange's closed candles — nothing
lost, nothing duplicated, nothing invalid stored.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

import pytest

from coin_core import timeframes as tfs
from coin_core.errors import StorageBudgetExceeded, StorageUnavailableError
from coin_core.exchange import ExchangeClient
from coin_core.exchange_sim import SimExchange
from coin_core.health import read_ingest_state
from coin_core.ingest import find_missing_ranges, ingest_series, run_ingest
from coin_core.storage import CandleStore
from coin_core.storage.sqlite import SQLiteStore

H = 3_600_000
from tests.fixtures.exchange import INGEST_NOW as NOW  # noqa: E402 - the fixtures' clock


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def stored(store: CandleStore, symbol: str, tf: str) -> list[list[float]]:
    return store.read_candles(symbol, tf).values.tolist()


def assert_store_equals_exchange(store: CandleStore, sim: SimExchange, symbol: str, tf: str) -> None:
    rows = stored(store, symbol, tf)
    assert rows, "nothing stored"
    expected = sim.expected_closed(symbol, tf, int(rows[0][0]), 2**62)
    assert [r[0] for r in rows] == [e[0] for e in expected]
    assert rows == expected  # floats parsed from the same decimal strings: exact
    assert len({r[0] for r in rows}) == len(rows)


def klines_calls(sim: SimExchange) -> int:
    return sum(1 for r in sim.requests if r.path.endswith("/klines"))


def test_backfill_then_detection_gate_then_new_candle(store, cfg, sim_exchange, sim_client, frozen) -> None:
    first = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert first.new_candles == 20 * 24  # 02-19 12:00 .. 03-10 11:00; the 12:00 candle is in progress
    assert store.latest_ts("BTC/USDT", "1h") == ms(2024, 3, 10, 11)
    assert_store_equals_exchange(store, sim_exchange, "BTC/USDT", "1h")
    calls = klines_calls(sim_exchange)
    again = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert again.skipped and again.new_candles == 0 and klines_calls(sim_exchange) == calls
    frozen.advance(3600)
    later = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert later.new_candles == 1 and not later.skipped
    assert_store_equals_exchange(store, sim_exchange, "BTC/USDT", "1h")
    assert read_ingest_state(cfg.data_dir, "BTC/USDT", "1h").backfill_complete_at is not None


def test_missed_boundaries_are_caught_up(store, cfg, sim_exchange, sim_client, frozen) -> None:
    ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    frozen.advance(5 * 3600)  # the worker was down for five boundaries
    assert ingest_series(store, sim_client, cfg, "BTC/USDT", "1h").new_candles == 5
    assert_store_equals_exchange(store, sim_exchange, "BTC/USDT", "1h")


@pytest.mark.parametrize("fault, kwargs", [
    ("rate_limit", {"count": 3, "retry_after": 1}),
    ("server_error", {"count": 3, "status": 502}),
    ("maintenance", {"count": 2}),
    ("disconnect", {"count": 2}),
    ("latency", {"count": 2, "seconds": 2.5}),
])
def test_transient_faults_end_with_exact_store(fault, kwargs, store, cfg, sim_exchange, sim_client, frozen) -> None:
    ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    store.delete_range("BTC/USDT", "1h", ms(2024, 3, 1), 2**62)
    sim_exchange.faults.add(fault, path="/api/v3/klines", **kwargs)
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert report.error is None and report.new_candles > 0
    assert not sim_exchange.faults.pending
    assert_store_equals_exchange(store, sim_exchange, "BTC/USDT", "1h")


@pytest.mark.parametrize("variant", ["non_number", "high_below_low", "missing_fields", "negative_price"])
def test_malformed_rows_rejected_counted_and_refilled(variant, store, cfg, sim_exchange, sim_client, frozen) -> None:
    sim_exchange.faults.add("malformed", count=1, variant=variant, row=5)
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert report.rejected == 1 and sum(report.rejected_reasons.values()) == 1
    # The hole the rejected row left was found and refilled from the exchange in the same run.
    assert report.gaps_found == 1 and report.gaps_filled == 1
    assert store.known_gaps("BTC/USDT", "1h") == []
    assert_store_equals_exchange(store, sim_exchange, "BTC/USDT", "1h")


def test_exchange_gap_recorded_once_and_not_refetched(store, cfg, sim_exchange, sim_client, frozen) -> None:
    gap = (ms(2024, 3, 1, 0), ms(2024, 3, 2, 10))  # like Binance 2018-02-08 00:00 -> 02-09 10:00
    sim_exchange.missing_range("BTC/USDT", "1h", *gap)
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert report.known_gaps == 1
    assert store.known_gaps("BTC/USDT", "1h") == [gap]
    assert find_missing_ranges(store, "BTC/USDT", "1h") == []
    assert_store_equals_exchange(store, sim_exchange, "BTC/USDT", "1h")
    frozen.advance(3600)
    before = list(sim_exchange.requests)
    ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    new = [r for r in sim_exchange.requests[len(before):] if r.path.endswith("/klines")]
    assert len(new) == 1 and int(new[0].params["startTime"]) == ms(2024, 3, 10, 12)


def test_lost_rows_inside_history_are_refilled(store, cfg, sim_exchange, sim_client, frozen) -> None:
    ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    store.delete_range("BTC/USDT", "1h", ms(2024, 3, 3), ms(2024, 3, 4, 5))
    assert find_missing_ranges(store, "BTC/USDT", "1h") == [(ms(2024, 3, 3), ms(2024, 3, 4, 5))]
    frozen.advance(3600)
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert report.gaps_filled == 1
    assert_store_equals_exchange(store, sim_exchange, "BTC/USDT", "1h")


def test_full_fill_from_earliest_candle_for_long_timeframes(cfg, sim_client, sim_exchange, frozen, store) -> None:
    report = ingest_series(store, sim_client, cfg, "ETH/USDT", "1w")
    first = store.bounds("ETH/USDT", "1w")[0]
    # Listed Thursday 2017-08-17 04:00: the first weekly candle opens on that week's Monday.
    assert first == ms(2017, 8, 14) == tfs.floor(sim_exchange.listing_ms("ETH/USDT"), "1w")
    assert report.new_candles == len(sim_exchange.expected_closed("ETH/USDT", "1w", 0, 2**62))
    assert_store_equals_exchange(store, sim_exchange, "ETH/USDT", "1w")
    ingest_series(store, sim_client, cfg, "ETH/USDT", "1M")
    assert all(tfs.is_aligned(int(t), "1M") for t in store.read_candles("ETH/USDT", "1M")["ts"])
    assert_store_equals_exchange(store, sim_exchange, "ETH/USDT", "1M")


def test_rolling_window_and_retention_for_1m(cfg, sim_client, sim_exchange, frozen, store) -> None:
    cfg = cfg.model_copy(update={"timeframe_policy": {"1m": {"lookback_days": 1, "retention_days": 1}}})
    ingest_series(store, sim_client, cfg, "BTC/USDT", "1m")
    assert store.count("BTC/USDT", "1m") == 1440
    frozen.advance(6 * 3600)
    ingest_series(store, sim_client, cfg, "BTC/USDT", "1m")
    first, last = store.bounds("BTC/USDT", "1m")
    assert first >= tfs.floor(int(NOW * 1000) + 6 * H - 86_400_000, "1m")
    assert last == tfs.last_closed_open(int(NOW * 1000) + 6 * H, "1m")
    assert_store_equals_exchange(store, sim_exchange, "BTC/USDT", "1m")


def test_one_failing_series_does_not_stop_the_others(cfg, sim_exchange, frozen) -> None:
    cfg = cfg.model_copy(update={"exchange_max_retries": 1})
    original = sim_exchange.klines_by_id
    sim_exchange.klines_by_id = lambda sid, *a: None if sid == "BTCUSDT" else original(sid, *a)  # -1121 for BTC
    report = run_ingest(cfg)
    by = {s.symbol: s for s in report.series}
    assert not report.ok
    assert "PermanentExchangeError" in (by["BTC/USDT"].error or "")
    assert by["ETH/USDT"].error is None and by["ETH/USDT"].new_candles == 20 * 24
    assert "PermanentExchangeError" in read_ingest_state(cfg.data_dir, "BTC/USDT", "1h").last_error


def test_unknown_symbol_is_a_clear_error_of_its_series_only(cfg, sim_exchange, frozen) -> None:
    report = run_ingest(cfg.model_copy(update={"target_symbols": ["BTC/USDT", "DOGE/USDT"]}))
    by = {s.symbol: s for s in report.series}
    assert not report.ok and "DOGE/USDT is not listed on binance" in (by["DOGE/USDT"].error or "")
    assert by["BTC/USDT"].error is None and by["BTC/USDT"].new_candles == 20 * 24, "the others still run"


def test_budget_guard_refuses_to_grow(cfg, sim_client, sim_exchange, frozen) -> None:
    with SQLiteStore(cfg.data_dir / "b.sqlite3", budget_bytes=1) as tiny:
        with pytest.raises(StorageBudgetExceeded, match="STORAGE_BUDGET_GB"):
            ingest_series(tiny, sim_client, cfg, "BTC/USDT", "1h")
        assert tiny.count("BTC/USDT", "1h") == 0


@pytest.mark.influx
def test_influx_stopped_and_restarted_mid_backfill(influx_server, influx_store, cfg, sim_exchange, frozen) -> None:
    cfg = cfg.model_copy(update={"timeframe_policy": {"1h": {"lookback_days": 200}}})
    client = ExchangeClient(cfg, backoff_base_s=0.01, rate_limit_ms=1)
    pages = []

    def stop_after_two_pages(symbol, tf, count, cursor, target) -> None:
        pages.append(count)
        if len(pages) == 2:
            influx_server.stop()

    with pytest.raises(StorageUnavailableError):
        ingest_series(influx_store, client, cfg, "BTC/USDT", "1h", progress=stop_after_two_pages)
    influx_server.start()
    assert influx_store.count("BTC/USDT", "1h") == 2000  # two whole pages, nothing partial
    report = ingest_series(influx_store, client, cfg, "BTC/USDT", "1h")
    assert report.new_candles == 200 * 24 - 2000
    assert_store_equals_exchange(influx_store, sim_exchange, "BTC/USDT", "1h")
    client.close()


def test_replay_of_real_shaped_csv_with_gap(tmp_path, settings, sim_clock) -> None:
    """A replayed file's own hole (no rows there) becomes a known gap, like Binance's outages."""
    start = ms(2018, 2, 1)
    rows = [start + i * H for i in range(24 * 14) if not ms(2018, 2, 8) <= start + i * H <= ms(2018, 2, 9, 10)]
    csv = tmp_path / "binance_BTC-USDT_1h.csv"
    csv.write_text("timestamp_ms,open,high,low,close,volume\n" + "".join(
        f"{t},{100 + i % 7},{101 + i % 7},{99 + i % 7},{100.5 + i % 7},{10 + i}\n" for i, t in enumerate(rows)))
    sim_clock.set(ms(2018, 3, 1) / 1000)
    with SimExchange(("BTC/USDT",), clock=sim_clock, replay={("BTC/USDT", "1h"): csv}) as sim:
        cfg = settings.model_copy(update={"exchange_api_url": sim.base_url,
                                          "timeframe_policy": {"1h": {"lookback_days": 60}}})
        with SQLiteStore(tmp_path / "r.sqlite3") as store, ExchangeClient(cfg, rate_limit_ms=1) as client:
            report = ingest_series(store, client, cfg, "BTC/USDT", "1h")
            assert report.new_candles == len(rows)
            assert store.known_gaps("BTC/USDT", "1h") == [(ms(2018, 2, 8), ms(2018, 2, 9, 10))]
            assert store.read_candles("BTC/USDT", "1h")["ts"].tolist() == rows


def test_real_binance_1h_history_has_its_27_exchange_gaps_recorded(tmp_path, settings, sim_clock) -> None:
    """Replaying the real BTC/USDT 1h file (2017-08 .. 2022-12): every candle stored, 27 outages known."""
    from tests.fixtures.common import SHARED, require

    csv = SHARED / "data" / "market" / "binance_BTC-USDT_1h.csv"
    require(csv.exists(), f"the real market data at {csv}")
    sim_clock.set(ms(2023, 1, 1, 0, 30) / 1000)
    with SimExchange(("BTC/USDT",), clock=sim_clock, replay={("BTC/USDT", "1h"): csv}) as sim:
        cfg = settings.model_copy(update={"exchange_api_url": sim.base_url,
                                          "timeframe_policy": {"1h": {"lookback_days": 2200}}})
        with SQLiteStore(tmp_path / "r.sqlite3") as store, ExchangeClient(cfg, rate_limit_ms=1) as client:
            report = ingest_series(store, client, cfg, "BTC/USDT", "1h")
            assert (report.new_candles, report.known_gaps, report.error) == (46_981, 27, None)
            assert (ms(2018, 2, 8, 1), ms(2018, 2, 9, 9)) in store.known_gaps("BTC/USDT", "1h")
            assert find_missing_ranges(store, "BTC/USDT", "1h") == []
            sim_clock.advance(3600)
            before = sim.count("/api/v3/klines")
            assert ingest_series(store, client, cfg, "BTC/USDT", "1h").new_candles == 0
            assert sim.count("/api/v3/klines") - before == 1  # no gap is re-fetched


def test_retention_refused_by_the_store_does_not_fail_the_series(cfg, sim_client, sim_exchange, frozen, caplog) -> None:
    """InfluxDB 2.x/3.x refuse v1 DELETE: candles are still stored, the refusal is a warning."""
    from coin_core.errors import StorageError

    class NoDelete(SQLiteStore):
        def _delete(self, symbol, tf, start, end) -> None:
            raise StorageError("InfluxDB answered 405: DELETE is not supported")

    cfg = cfg.model_copy(update={"timeframe_policy": {"1m": {"lookback_days": 1, "retention_days": 1}}})
    with NoDelete(cfg.data_dir / "nd.sqlite3") as store:
        report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1m")
        assert report.error is None and report.new_candles == 1440
    assert "retention of BTC/USDT 1m not applied" in caplog.text


def test_a_store_at_its_budget_makes_room_through_retention(cfg, sim_client, sim_exchange, frozen) -> None:
    """Retention runs before writing and freed space counts: the budget guard is recoverable."""
    cfg = cfg.model_copy(update={"timeframe_policy": {"1m": {"lookback_days": 4, "retention_days": 4}}})
    with SQLiteStore(cfg.data_dir / "budget.sqlite3") as store:
        ingest_series(store, sim_client, cfg, "BTC/USDT", "1m")
        store.budget_bytes = store.size_bytes()  # full: the next write would be refused
        with pytest.raises(StorageBudgetExceeded):
            store.write_candles("BTC/USDT", "1m", store.read_candles("BTC/USDT", "1m").tail(1))
        frozen.advance(2 * 86_400)  # half of the stored window is now past retention
        report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1m")
        assert report.error is None and report.new_candles == 2 * 1440
        assert store.count("BTC/USDT", "1m") == 4 * 1440


def test_a_candle_the_exchange_always_serves_invalid_is_recorded_once(store, cfg, sim_exchange, sim_client, frozen) -> None:
    import dataclasses

    bad_ts = ms(2024, 3, 5, 7)
    series = sim_exchange.series("BTC/USDT", "1h")
    original = series.candle

    def broken(open_ms: int, as_of_ms: int | None = None):
        kline = original(open_ms, as_of_ms)
        return dataclasses.replace(kline, high="0.00000001") if open_ms == bad_ts and kline else kline

    series.candle = broken  # the exchange's own data is wrong there, on every request
    first = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert first.rejected == 2 and first.known_gaps == 1  # forward pass + one refill, then recorded
    assert store.known_gaps("BTC/USDT", "1h") == [(bad_ts, bad_ts)]
    frozen.advance(3600)
    again = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert (again.rejected, again.gaps_found, again.new_candles) == (0, 0, 1), "not refetched every cycle"


KILL_SEED = int(os.environ.get("KILL_SEED", "20240310"))


@pytest.mark.influx
def test_influxd_sigkilled_mid_backfill(influx_server, influx_store, cfg, sim_exchange, frozen) -> None:
    """The server dies (SIGKILL) while the backfill waits for a page (which one: seeded, logged):
    exactly the pages acknowledged before stay, and the next run completes the series exactly."""
    import random

    page = random.Random(KILL_SEED).randint(2, 23)
    print(f"KILL_SEED={KILL_SEED}: influxd is killed when klines request {page} of 24 arrives")
    cfg = cfg.model_copy(update={"timeframe_policy": {"1h": {"lookback_days": 1000}}})

    def kill_at_page(record) -> None:
        if record.path == "/api/v3/klines" and sim_exchange.count("/api/v3/klines") == page:
            influx_server.kill()  # before the page is answered: pages 1..page-1 are stored

    sim_exchange.on_request = kill_at_page
    with ExchangeClient(cfg, backoff_base_s=0.01, rate_limit_ms=1) as client:
        with pytest.raises(StorageUnavailableError):
            ingest_series(influx_store, client, cfg, "BTC/USDT", "1h")
        sim_exchange.on_request = None
        influx_server.start()
        assert influx_store.count("BTC/USDT", "1h") == (page - 1) * 1000, f"KILL_SEED={KILL_SEED}"
        ingest_series(influx_store, client, cfg, "BTC/USDT", "1h")
    assert influx_store.count("BTC/USDT", "1h") == 1000 * 24
    assert_store_equals_exchange(influx_store, sim_exchange, "BTC/USDT", "1h")


def test_ingest_reads_the_store_no_more_than_it_must(store, cfg, sim_client, frozen, monkeypatch) -> None:
    """A backfill of an empty series asks for no close before its start (nothing is stored), and
    the latest candle recorded in the ingest state is the one the hole check read: a series with
    no hole reads its bounds twice a run (before fetching, after writing), not three times."""
    reads: list[str] = []
    for name in ("bounds", "close_at"):
        real = getattr(store, name)
        monkeypatch.setattr(store, name, lambda *a, _real=real, _name=name: reads.append(_name) or _real(*a))
    ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert reads == ["bounds", "bounds"]
    assert read_ingest_state(cfg.data_dir, "BTC/USDT", "1h").backfill_complete_at is not None
    reads.clear()
    frozen.advance(3600)
    assert ingest_series(store, sim_client, cfg, "BTC/USDT", "1h").new_candles == 1
    assert reads == ["bounds", "close_at", "bounds"]  # the jump check needs the close before the page
