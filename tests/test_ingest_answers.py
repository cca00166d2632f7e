"""Ingest against hostile exchange answers: garbage HTTP 200 bodies, rows ccxt would drop, rows
off the candle grid, impossible values, a lying clock, and refills next to known gaps.

Real ccxt against the simulated exchange, into a real SQLite store. The rule under test: a range
becomes a known exchange gap only when a well-formed answer demonstrably skips it (it holds
candles after the range and none in it); anything else keeps the hole, to be refetched.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from coin_core import timeframes as tfs
from coin_core.config import Settings
from coin_core.errors import TransientExchangeError
from coin_core.exchange import ExchangeClient
from coin_core.exchange_sim import SimClock, SimExchange
from coin_core.ingest import JUMP_FACTOR, find_missing_ranges, ingest_series
from coin_core.storage import CandleStore
from coin_core.storage.sqlite import SQLiteStore

H = 3_600_000
from tests.fixtures.exchange import INGEST_NOW as NOW  # noqa: E402 - the fixtures' clock
KLINES = "/api/v3/klines"


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


HOLE = (ms(2024, 3, 4, 3), ms(2024, 3, 4, 7))  # five candles


def assert_store_equals_exchange(store: CandleStore, sim: SimExchange, symbol: str = "BTC/USDT", tf: str = "1h") -> None:
    rows = store.read_candles(symbol, tf).values.tolist()
    assert rows, "nothing stored"
    assert rows == sim.expected_closed(symbol, tf, int(rows[0][0]), 2**62)


def holed(store: CandleStore, client: ExchangeClient, cfg: Settings, clock: SimClock) -> None:
    """A complete 20-day store, then five candles lost, then one new candle to fetch."""
    ingest_series(store, client, cfg, "BTC/USDT", "1h")
    store.delete_range("BTC/USDT", "1h", *HOLE)
    assert find_missing_ranges(store, "BTC/USDT", "1h") == [HOLE]
    clock.advance(3600)


def let_forward_page_through(sim: SimExchange) -> None:
    """Faults are consumed in order: this zero-latency one takes the forward pass's request."""
    sim.faults.add("latency", count=1, seconds=0.0, path=KLINES)


# -- D1: garbage HTTP 200 answers ----------------------------------------------------------------

@pytest.mark.parametrize("variant", ["html", "truncated_json", "empty", "object", "empty_list", "number"])
def test_garbage_answer_to_a_refill_keeps_the_hole_and_a_later_run_restores_it(
        variant, store, cfg, sim_exchange, sim_client, frozen) -> None:
    holed(store, sim_client, cfg, frozen)
    let_forward_page_through(sim_exchange)
    sim_exchange.faults.add("bad_body", count=None, variant=variant)  # every later klines answer
    with pytest.raises(TransientExchangeError):
        ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert store.known_gaps("BTC/USDT", "1h") == [], "a garbage answer made a known gap"
    assert find_missing_ranges(store, "BTC/USDT", "1h") == [HOLE]
    assert store.latest_ts("BTC/USDT", "1h") == ms(2024, 3, 10, 12)  # the forward page was kept
    sim_exchange.faults.clear()
    frozen.advance(3600)  # the next cycle (the detection gate skips a series with nothing new)
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert (report.error, report.gaps_found, report.gaps_filled, report.known_gaps) == (None, 1, 1, 0)
    assert len(store.read_candles("BTC/USDT", "1h", *HOLE)) == 5  # 5 of 5 restored
    assert_store_equals_exchange(store, sim_exchange)


@pytest.mark.parametrize("variant", ["html", "truncated_json", "empty", "object", "number"])
def test_one_garbage_answer_is_retried_in_the_same_run(variant, store, cfg, sim_exchange, sim_client, frozen) -> None:
    holed(store, sim_client, cfg, frozen)
    let_forward_page_through(sim_exchange)
    sim_exchange.faults.add("bad_body", count=1, variant=variant)
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert (report.error, report.gaps_filled, report.known_gaps) == (None, 1, 0)
    refills = [r for r in sim_exchange.requests if r.path == KLINES][-2:]
    assert [(r.fault, r.params["startTime"]) for r in refills] == [("bad_body", str(HOLE[0])), (None, str(HOLE[0]))]
    assert_store_equals_exchange(store, sim_exchange)


def test_garbage_first_backfill_stores_nothing_and_records_nothing(store, cfg, sim_exchange, sim_client, frozen) -> None:
    sim_exchange.faults.add("bad_body", count=None, variant="html")
    with pytest.raises(TransientExchangeError, match="not a JSON object or list"):
        ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert store.count("BTC/USDT", "1h") == 0 and store.known_gaps("BTC/USDT", "1h") == []


# -- D1: rows ccxt would drop, D3: rows off the grid, D2: impossible values ------------------------

@pytest.mark.parametrize("variant, reason", [
    ("dict_row", "row is not a list of 6 values"),
    ("null_row", "row is not a list of 6 values"),
    ("negative_time", "timestamp out of range"),
    ("future_time", "open time in the future"),
    ("misaligned_time", "timestamp not aligned to 1h"),
    ("huge_value", "price above 1e+12"),
    ("short_row", "row is not a list of 6 values"),
])
def test_a_row_dropped_before_validation_is_counted_and_its_candle_refilled(
        variant, reason, store, cfg, sim_exchange, sim_client, frozen) -> None:
    sim_exchange.faults.add("malformed", count=1, variant=variant, row=5)
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert (report.error, report.rejected, report.rejected_reasons) == (None, 1, {reason: 1})
    assert (report.gaps_found, report.gaps_filled, report.known_gaps) == (1, 1, 0)
    assert store.known_gaps("BTC/USDT", "1h") == []
    assert_store_equals_exchange(store, sim_exchange)


def test_a_row_of_unknown_place_served_twice_never_becomes_a_known_gap(store, cfg, sim_exchange, sim_client, frozen) -> None:
    first = ms(2024, 2, 19, 12)  # the backfill's first candle; row 5 is five hours later
    sim_exchange.faults.add("malformed", count=1, variant="null_row", row=5)  # the forward page
    sim_exchange.faults.add("malformed", count=1, variant="null_row", row=0)  # the refill: same candle
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert (report.error, report.rejected, report.known_gaps) == (None, 2, 0)
    assert store.known_gaps("BTC/USDT", "1h") == []
    assert find_missing_ranges(store, "BTC/USDT", "1h") == [(first + 5 * H, first + 5 * H)]
    frozen.advance(3600)
    again = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert (again.gaps_filled, again.known_gaps) == (1, 0)
    assert_store_equals_exchange(store, sim_exchange)


def test_a_hidden_first_candle_of_a_backfill_is_not_lost(store, cfg, sim_exchange, sim_client, frozen) -> None:
    """Row 0 of the first page has no stored candle before it: nothing would ever refill it."""
    sim_exchange.faults.add("malformed", count=1, variant="null_row", row=0)
    with pytest.raises(TransientExchangeError, match="first candle"):
        ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert store.count("BTC/USDT", "1h") == 0
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert report.new_candles == 20 * 24 and store.bounds("BTC/USDT", "1h")[0] == ms(2024, 2, 19, 12)
    assert_store_equals_exchange(store, sim_exchange)


def test_tenfold_jump_is_stored_and_flagged_not_dropped(store, cfg, sim_exchange, sim_client, frozen) -> None:
    spike = ms(2024, 3, 6, 9)
    series = sim_exchange.series("BTC/USDT", "1h")
    original = series.candle

    def spiky(open_ms: int, as_of_ms: int | None = None):
        kline = original(open_ms, as_of_ms)
        if open_ms != spike or kline is None:
            return kline
        return dataclasses.replace(kline, high=f"{float(kline.open) * (JUMP_FACTOR + 1):.8f}")

    series.candle = spiky
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert (report.error, report.rejected, report.flagged, report.flagged_at) == (None, 0, 1, [spike])
    assert report.as_row()["flagged"] == 1
    assert_store_equals_exchange(store, sim_exchange)  # stored as served: a human decides


# -- _subtract: a refill next to a known gap ------------------------------------------------------

GAP = (ms(2024, 3, 1, 0), ms(2024, 3, 2, 10))  # like Binance 2018-02-08 00:00 -> 02-09 10:00
AFTER = tfs.add(GAP[1], "1h", 1)


def test_refill_of_the_candle_just_after_a_known_gap(store, cfg, sim_exchange, sim_client, frozen) -> None:
    sim_exchange.missing_range("BTC/USDT", "1h", *GAP)
    ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    store.delete_range("BTC/USDT", "1h", AFTER, AFTER)
    assert find_missing_ranges(store, "BTC/USDT", "1h") == [(AFTER, AFTER)]  # cut by a whole candle
    frozen.advance(3600)
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert (report.error, report.gaps_filled, report.known_gaps) == (None, 1, 0)
    assert store.known_gaps("BTC/USDT", "1h") == [GAP]
    assert_store_equals_exchange(store, sim_exchange)


def test_a_candle_after_a_known_gap_served_invalid_forever_fails_no_run(store, cfg, sim_exchange, sim_client, frozen) -> None:
    sim_exchange.missing_range("BTC/USDT", "1h", *GAP)
    series = sim_exchange.series("BTC/USDT", "1h")
    original = series.candle

    def broken(open_ms: int, as_of_ms: int | None = None):
        kline = original(open_ms, as_of_ms)
        return dataclasses.replace(kline, high="0.00000001") if open_ms == AFTER and kline else kline

    series.candle = broken
    for run in range(3):
        report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
        assert report.error is None, f"run {run}: {report.error}"
        frozen.advance(3600)
    assert store.known_gaps("BTC/USDT", "1h") == [GAP, (AFTER, AFTER)]
    assert find_missing_ranges(store, "BTC/USDT", "1h") == []


def test_a_misaligned_row_next_to_a_gap_fails_nothing(store, cfg, sim_exchange, sim_client, frozen) -> None:
    """D3 at a gap's edge: the 1 ms-off row must not be taken as the candle the jump ends at."""
    sim_exchange.missing_range("BTC/USDT", "1h", *GAP)
    row = (AFTER - ms(2024, 2, 19, 12)) // H - (GAP[1] - GAP[0]) // H - 1  # index of AFTER in the page
    sim_exchange.faults.add("malformed", count=1, variant="misaligned_time", row=row)
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert (report.error, report.rejected_reasons) == (None, {"timestamp not aligned to 1h": 1})
    assert store.known_gaps("BTC/USDT", "1h") == [GAP]  # recorded by the refill's clean answer
    assert_store_equals_exchange(store, sim_exchange)


# -- D12: the exchange's clock --------------------------------------------------------------------

def test_exchange_clock_a_day_ahead_does_not_close_the_in_progress_candle(
        store, cfg, sim_exchange, frozen) -> None:
    sim_exchange.faults.add("clock_skew", count=None, seconds=86_400)
    with ExchangeClient(cfg, backoff_base_s=0.01, rate_limit_ms=1, clock=frozen) as client:
        report = ingest_series(store, client, cfg, "BTC/USDT", "1h")
    assert store.latest_ts("BTC/USDT", "1h") == ms(2024, 3, 10, 11)  # 12:00 is still trading
    assert report.clock_note is not None and "86,400 s ahead" in report.clock_note
    assert_store_equals_exchange(store, sim_exchange)


def test_exchange_time_a_day_ahead_of_the_real_clock_is_not_trusted(store, cfg, sim_exchange, sim_client) -> None:
    """The sim's candles follow the real clock; only its /api/v3/time lies (a day ahead)."""
    import time

    sim_exchange.faults.add("clock_skew", count=None, seconds=86_400)
    before = int(time.time() * 1000)
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    after = int(time.time() * 1000)
    latest = store.latest_ts("BTC/USDT", "1h")
    assert tfs.last_closed_open(before, "1h") <= latest and tfs.close_time(latest, "1h") <= after
    assert report.clock_note is not None and "ahead" in report.clock_note
    rows = store.read_candles("BTC/USDT", "1h").values.tolist()
    assert rows == sim_exchange.expected_closed("BTC/USDT", "1h", int(rows[0][0]), latest, now_ms=after)


def test_exchange_clock_within_the_bound_is_used(store, cfg, sim_exchange, frozen) -> None:
    frozen.set(NOW + 31 * 60)  # 13:01 by the exchange: the 12:00 candle is closed
    local = SimClock(NOW + 28 * 60)  # 12:58 local, 3 min behind: within the 5 min bound
    with ExchangeClient(cfg, backoff_base_s=0.01, rate_limit_ms=1, clock=local) as client:
        report = ingest_series(store, client, cfg, "BTC/USDT", "1h")
    assert report.clock_note is None
    assert store.latest_ts("BTC/USDT", "1h") == ms(2024, 3, 10, 12)
    assert_store_equals_exchange(store, sim_exchange)


def test_the_runbook_re_probe_of_a_known_gap(store, cfg, sim_exchange, sim_client, frozen) -> None:
    """docs/runbooks.md: delete the gap records, the next ingest refetches and records it again."""
    sim_exchange.missing_range("BTC/USDT", "1h", *GAP)
    ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    import sqlite3

    with sqlite3.connect(cfg.data_dir / "c.sqlite3") as operator:  # the runbook's SQL, from outside
        operator.execute("DELETE FROM known_gaps WHERE symbol='BTC/USDT' AND timeframe='1h'")
    assert find_missing_ranges(store, "BTC/USDT", "1h") == [GAP]
    frozen.advance(3600)
    before = sim_exchange.count(KLINES)
    report = ingest_series(store, sim_client, cfg, "BTC/USDT", "1h")
    assert (report.error, report.gaps_found, report.known_gaps) == (None, 1, 1)
    assert sim_exchange.count(KLINES) - before == 2  # the new candle, then the one re-probe
    assert store.known_gaps("BTC/USDT", "1h") == [GAP]


def test_retention_of_the_1m_window_is_not_driven_by_a_clock_running_ahead(cfg, sim_exchange, frozen) -> None:
    """Retention deletes by "now": an exchange clock a week ahead would empty the 1m window."""
    cfg = cfg.model_copy(update={"timeframe_policy": {"1m": {"lookback_days": 1, "retention_days": 1}}})
    with SQLiteStore(cfg.data_dir / "m.sqlite3") as store, \
            ExchangeClient(cfg, backoff_base_s=0.01, rate_limit_ms=1, clock=frozen) as client:
        ingest_series(store, client, cfg, "BTC/USDT", "1m")
        sim_exchange.faults.add("clock_skew", count=None, seconds=7 * 86_400)
        frozen.advance(3600)
        report = ingest_series(store, client, cfg, "BTC/USDT", "1m")
        assert (report.error, report.new_candles) == (None, 60) and "ahead" in (report.clock_note or "")
        assert store.count("BTC/USDT", "1m") == 1440 and store.latest_ts("BTC/USDT", "1m") == ms(2024, 3, 10, 13, 29)
        assert_store_equals_exchange(store, sim_exchange, "BTC/USDT", "1m")
