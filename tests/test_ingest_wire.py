"""Ingest's fast page path: Binance's wire rows converted column-wise exactly as ccxt parses them,
pages validated once (the store trusts only what validation made), a budget guard that measures
only near its line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import ccxt
import numpy as np
import pytest

from coin_core import timeframes as tfs
from coin_core.candles import CheckedCandles, rows_matrix, to_frame, validate_candles, validate_matrix
from coin_core.config import Settings
from coin_core.errors import DataValidationError, StorageBudgetExceeded
from coin_core.exchange import ExchangeClient, _wire_matrix
from coin_core.exchange_sim import SimClock, SimExchange
from coin_core.exchange_sim.faults import MalformedVariant
from coin_core.storage.sqlite import SQLiteStore
from tests.fixtures.common import WIRE

NOW_MS = 1_706_660_434_567  # 2024-01-31 00:20:34.567 UTC
H = 3_600_000


def _recorded_klines() -> list[list[Any]]:
    """Every recorded ``GET /api/v3/klines`` answer: ccxt's static responses and a live recording."""
    ccxt_static = json.loads((WIRE / "ccxt_static_response_binance_fetchOHLCV.json").read_text())
    answers = [case["httpResponse"] for case in ccxt_static["methods"]["fetchOHLCV"]
               if isinstance(case.get("httpResponse"), list)]
    answers.append(json.loads((WIRE / "nautilus_http_spot_market_klines.json").read_text()))
    return answers


def _ccxt_parse(rows: list[Any]) -> np.ndarray:
    exchange = ccxt.binance()
    return rows_matrix([exchange.parse_ohlcv(r, None) for r in rows])


def test_recorded_wire_rows_convert_exactly_as_ccxt_parses_them() -> None:
    answers = _recorded_klines()
    assert sum(len(a) for a in answers) >= 10
    for rows in answers:
        fast = _wire_matrix(rows)
        assert fast is not None and fast.shape == (len(rows), 6)
        assert np.array_equal(fast, _ccxt_parse(rows))  # bit for bit, open times exact


@pytest.mark.parametrize("value", ["1_000", " 1.5", "nan", "1e400", "+3", "-0"])
def test_odd_numeric_strings_read_as_ccxt_reads_them(value: str) -> None:
    row = [1706630400000, value, "2", "1", "1.5", "10", 1706633999999]
    assert np.array_equal(_wire_matrix([row]), _ccxt_parse([row]), equal_nan=True)


@pytest.mark.parametrize("row", [
    [1706630400000, "abc", "2", "1", "1.5", "10"],       # not a number
    [1706630400000, 1.5, "2", "1", "1.5", "10"],         # a number where Binance sends a string
    [True, "1", "2", "1", "1.5", "10"],                  # a bool open time
    [1706630400000.0, "1", "2", "1", "1.5", "10"],       # a float open time
    ["1706630400000", "1", "2", "1", "1.5", "10"],       # a string open time
])
def test_any_other_value_type_leaves_the_page_to_ccxt(row: list[Any]) -> None:
    assert _wire_matrix([row]) is None


@pytest.fixture
def client(sim_settings: Settings, sim_clock: SimClock) -> ExchangeClient:
    sim_clock.set_ms(NOW_MS)
    with ExchangeClient(sim_settings, backoff_base_s=0.01, rate_limit_ms=1) as client:
        yield client


@pytest.mark.parametrize("variant", get_args(MalformedVariant))
def test_a_hostile_row_reaches_validation_as_ccxt_would_hand_it_over(client: ExchangeClient, sim_exchange: SimExchange,
                                                                     variant: str) -> None:
    since = NOW_MS - 10 * H
    for _ in range(2):
        sim_exchange.faults.add("malformed", variant=variant, row=1)
    page = client.fetch_klines("BTC/USDT", "1h", since=since, limit=6)
    rows = client.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=6)
    whole = [r for r in rows if isinstance(r, list) and len(r) >= 6]
    assert len(page) == len(rows) == 6 and page.malformed == len(rows) - len(whole)
    order = np.argsort(page.matrix[:, 0], kind="stable")  # ccxt sorts its rows by open time
    expected = rows_matrix(whole)
    assert np.array_equal(page.matrix[order], expected[np.argsort(expected[:, 0], kind="stable")], equal_nan=True)
    same = validate_candles(to_frame(whole), "1h", NOW_MS)  # the slow path's verdict on ccxt's rows
    checked = validate_matrix(page.matrix, "1h", NOW_MS)
    assert sorted(r.reason for r in checked.rejected) == sorted(r.reason for r in same.rejected)
    assert checked.valid.equals(same.valid)


def test_the_klines_request_is_the_one_ccxt_sends(client: ExchangeClient, sim_exchange: SimExchange) -> None:
    since, until = NOW_MS - 10 * H, tfs.floor(NOW_MS, "1h") - H
    client.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=5, until=until)
    client.fetch_klines("BTC/USDT", "1h", since=since, limit=5, until=until)
    ccxt_sent, ours = [r for r in sim_exchange.requests if r.path == "/api/v3/klines"][-2:]
    assert ours.params == ccxt_sent.params


def test_checked_candles_come_only_from_validation_and_cannot_change() -> None:
    report = validate_candles(to_frame([[H, 1, 2, 0.5, 1.5, 10], [2 * H, 1, 2, 0.5, 1.5, 10]]), "1h")
    checked = report.checked
    with pytest.raises(TypeError, match="validate_matrix"):
        CheckedCandles("1h", checked.ts.copy(), checked.values.copy())
    with pytest.raises(ValueError, match="read-only"):
        checked.values[0, 0] = -1.0
    report.valid.loc[0, "close"] = -1.0  # the frame is a copy: the checked candles stay as validated
    assert checked.column("close")[0] == 1.5


def test_a_store_revalidates_anything_but_checked_candles_of_its_timeframe(tmp_path: Path) -> None:
    hourly = validate_candles(to_frame([[H, 1, 2, 0.5, 1.5, 10], [2 * H, 1, 2, 0.5, 1.5, 10]]), "1h").checked
    with SQLiteStore(tmp_path / "s.sqlite3") as store:
        with pytest.raises(DataValidationError, match="not aligned to 1d"):
            store.write_candles("BTC/USDT", "1d", hourly)  # checked for another grid: checked again here
        bad = hourly.frame()
        bad.loc[1, "low"] = 5.0
        with pytest.raises(DataValidationError, match="low above open/close"):
            store.write_candles("BTC/USDT", "1h", bad)
        assert store.write_candles("BTC/USDT", "1h", hourly) == 2
        assert store.read_candles("BTC/USDT", "1h").equals(hourly.frame())


class CountingStore(SQLiteStore):
    measured = 0

    def _size_bytes(self) -> int:
        self.measured += 1
        return super()._size_bytes()


def test_budget_guard_measures_only_near_its_line(tmp_path: Path) -> None:
    frames = [validate_candles(to_frame([[t * H, 1, 2, 0.5, 1.5, 10]]), "1h").checked for t in range(1, 41)]
    with CountingStore(tmp_path / "s.sqlite3", budget_bytes=10 * 1024**3) as store:
        for checked in frames[:20]:
            store.write_candles("BTC/USDT", "1h", checked)
        assert store.measured == 1  # far below the line: one measurement bounds the growth
        store.budget_bytes = int(store.size_bytes() / 0.95)  # now past the warning line
        store.measured = 0
        for checked in frames[20:30]:
            store.write_candles("BTC/USDT", "1h", checked)
        assert store.measured == 10  # near the line: measured on every write
        store.budget_bytes = store.size_bytes()
        with pytest.raises(StorageBudgetExceeded):
            store.write_candles("BTC/USDT", "1h", frames[30])
        assert store.count("BTC/USDT", "1h") == 30
