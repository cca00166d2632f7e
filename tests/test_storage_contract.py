"""The storage contract: the same tests held against every backend (SQLite and a real influxd)."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pandas as pd
import pytest

from coin_core import timeframes as tfs
from coin_core.candles import COLUMNS
from coin_core.errors import DataValidationError, StorageBudgetExceeded
from coin_core.storage import CandleStore, Forecast
from coin_core.storage.base import BAND50_COLUMNS, FORECAST_COLUMNS
from coin_core.storage.sqlite import SQLiteStore

T0 = 1_672_531_200_000  # 2023-01-01 00:00 UTC, aligned to every timeframe but 1w
HOUR = 3_600_000


def candles(n: int, tf: tfs.Timeframe = "1h", start: int = T0, seed: int = 1) -> pd.DataFrame:
    """``n`` consecutive valid candles with non-round prices (exact float round-trips matter)."""
    rng = np.random.default_rng(seed)
    ts = [start]
    for _ in range(n - 1):
        ts.append(tfs.add(ts[-1], tf))
    close = 20_000 + np.cumsum(rng.normal(0, 25, n)) + rng.random(n) / 7
    open_ = close + rng.normal(0, 10, n)
    high = np.maximum(open_, close) + rng.random(n) * 5
    low = np.minimum(open_, close) - rng.random(n) * 5
    volume = rng.random(n) * 100
    return pd.DataFrame({"ts": np.array(ts, dtype="int64"), "open": open_, "high": high, "low": low,
                         "close": close, "volume": volume})


@pytest.fixture(params=["sqlite", pytest.param("influxdb", marks=pytest.mark.influx)])
def store(request: pytest.FixtureRequest, tmp_path) -> Iterator[CandleStore]:
    if request.param == "sqlite":
        backend: CandleStore = SQLiteStore(tmp_path / "candles.sqlite3")
        yield backend
        backend.close()
    else:
        yield request.getfixturevalue("influx_store")


def test_upsert_is_idempotent(store: CandleStore) -> None:
    frame = candles(30)
    assert store.write_candles("BTC/USDT", "1h", frame) == 30
    assert store.write_candles("BTC/USDT", "1h", frame) == 30
    assert store.count("BTC/USDT", "1h") == 30
    pd.testing.assert_frame_equal(store.read_candles("BTC/USDT", "1h"), frame)


def test_conflicting_rewrite_replaces(store: CandleStore) -> None:
    frame = candles(10)
    store.write_candles("BTC/USDT", "1h", frame)
    changed = frame.iloc[3:6].copy()
    changed[["open", "high", "low", "close"]] = [[101.5, 110.25, 99.125, 105.0]] * 3
    store.write_candles("BTC/USDT", "1h", changed)
    expected = frame.copy()
    expected.iloc[3:6, 1:5] = [[101.5, 110.25, 99.125, 105.0]] * 3
    assert store.count("BTC/USDT", "1h") == 10
    pd.testing.assert_frame_equal(store.read_candles("BTC/USDT", "1h"), expected)


def test_unsorted_input_is_stored_in_order(store: CandleStore) -> None:
    frame = candles(20)
    shuffled = frame.sample(frac=1.0, random_state=7)
    assert not shuffled["ts"].is_monotonic_increasing
    store.write_candles("BTC/USDT", "1h", shuffled)
    pd.testing.assert_frame_equal(store.read_candles("BTC/USDT", "1h"), frame)


def test_paged_reads_are_bounded_and_window_is_inclusive(store: CandleStore) -> None:
    frame = candles(25)
    store.write_candles("BTC/USDT", "1h", frame)
    pages = list(store.iter_candles("BTC/USDT", "1h", chunk_size=7))
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    pd.testing.assert_frame_equal(pd.concat(pages, ignore_index=True), frame)
    ts = frame["ts"]
    window = store.read_candles("BTC/USDT", "1h", start=int(ts[3]), end=int(ts[10]))
    pd.testing.assert_frame_equal(window, frame.iloc[3:11].reset_index(drop=True))
    between = store.read_candles("BTC/USDT", "1h", start=int(ts[3]) + 1, end=int(ts[10]) - 1)
    assert between["ts"].tolist() == ts[4:10].tolist()
    assert store.read_candles("BTC/USDT", "1h", start=int(ts[24]) + 1).empty


def test_read_closes_is_the_window_of_read_candles_without_a_frame(store: CandleStore) -> None:
    frame = candles(25)
    store.write_candles("BTC/USDT", "1h", frame.sample(frac=1.0, random_state=5))
    ts = frame["ts"]
    got = store.read_closes("BTC/USDT", "1h", int(ts[3]), int(ts[10]))
    assert got == (ts[3:11].tolist(), frame["close"][3:11].tolist())
    assert all(type(t) is int for t in got[0]) and all(type(c) is float for c in got[1])
    assert store.read_closes("BTC/USDT", "1h", int(ts[24]) + 1, int(ts[24]) + HOUR) == ([], [])
    assert store.read_closes("ETH/USDT", "1h", T0, T0 + 30 * HOUR) == ([], [])


def test_iter_candles_never_yields_more_than_chunk_size(store: CandleStore) -> None:
    store.write_candles("ETH/USDT", "1h", candles(21))
    pages = list(store.iter_candles("ETH/USDT", "1h", start=T0, chunk_size=7))
    assert [len(p) for p in pages] == [7, 7, 7]
    assert all(p["ts"].is_monotonic_increasing for p in pages)
    assert pages[0]["ts"].iloc[-1] < pages[1]["ts"].iloc[0]
    singles = list(store.iter_candles("ETH/USDT", "1h", chunk_size=1))
    assert len(singles) == 21 and max(len(p) for p in singles) == 1


def test_tail_returns_latest_ascending(store: CandleStore) -> None:
    frame = candles(25)
    store.write_candles("BTC/USDT", "1h", frame.sample(frac=1.0, random_state=3))
    pd.testing.assert_frame_equal(store.tail("BTC/USDT", "1h", 5), frame.iloc[-5:].reset_index(drop=True))
    pd.testing.assert_frame_equal(store.tail("BTC/USDT", "1h", 100), frame)
    assert store.tail("ETH/USDT", "1h", 5).empty


def test_bounds_and_latest(store: CandleStore) -> None:
    assert store.bounds("BTC/USDT", "1h") is None
    assert store.latest_ts("BTC/USDT", "1h") is None
    frame = candles(12)
    store.write_candles("BTC/USDT", "1h", frame)
    assert store.bounds("BTC/USDT", "1h") == (T0, T0 + 11 * HOUR)
    assert store.latest_ts("BTC/USDT", "1h") == T0 + 11 * HOUR


def test_count_with_windows(store: CandleStore) -> None:
    store.write_candles("BTC/USDT", "1h", candles(24))
    assert store.count("BTC/USDT", "1h") == 24
    assert store.count("BTC/USDT", "1h", start=T0 + 20 * HOUR) == 4
    assert store.count("BTC/USDT", "1h", end=T0 + 2 * HOUR) == 3
    assert store.count("BTC/USDT", "1h", start=T0 + HOUR, end=T0 + 3 * HOUR) == 3
    assert store.count("BTC/USDT", "1h", start=T0 + 30 * HOUR) == 0
    assert store.count("BTC/USDT", "1d") == 0


def test_delete_range_is_inclusive(store: CandleStore) -> None:
    frame = candles(20)
    store.write_candles("BTC/USDT", "1h", frame)
    store.delete_range("BTC/USDT", "1h", T0 + 5 * HOUR, T0 + 9 * HOUR)
    assert store.count("BTC/USDT", "1h") == 15
    remaining = store.read_candles("BTC/USDT", "1h")["ts"].tolist()
    assert remaining == [T0 + i * HOUR for i in range(20) if not 5 <= i <= 9]
    store.delete_range("BTC/USDT", "1h", None, T0 + 2 * HOUR)  # retention: everything up to end
    assert store.bounds("BTC/USDT", "1h") == (T0 + 3 * HOUR, T0 + 19 * HOUR)
    assert store.count("BTC/USDT", "1h") == 12


def test_series_are_isolated_by_symbol_and_timeframe(store: CandleStore) -> None:
    btc_h, eth_h = candles(10, seed=1), candles(10, seed=2)
    btc_d, btc_min = candles(5, "1d", seed=3), candles(6, "1m", seed=4)
    btc_month = candles(4, "1M", start=1_672_531_200_000, seed=5)
    store.write_candles("BTC/USDT", "1h", btc_h)
    store.write_candles("ETH/USDT", "1h", eth_h)
    store.write_candles("BTC/USDT", "1d", btc_d)
    store.write_candles("BTC/USDT", "1m", btc_min)
    store.write_candles("BTC/USDT", "1M", btc_month)
    pd.testing.assert_frame_equal(store.read_candles("ETH/USDT", "1h"), eth_h)
    pd.testing.assert_frame_equal(store.read_candles("BTC/USDT", "1m"), btc_min)  # "1m" is not "1M"
    pd.testing.assert_frame_equal(store.read_candles("BTC/USDT", "1M"), btc_month)
    store.delete_range("BTC/USDT", "1h", None, T0 + 100 * HOUR)
    assert store.count("BTC/USDT", "1h") == 0
    assert store.count("ETH/USDT", "1h") == 10 and store.count("BTC/USDT", "1d") == 5
    pd.testing.assert_frame_equal(store.tail("BTC/USDT", "1d", 2), btc_d.iloc[-2:].reset_index(drop=True))


def test_series_listing(store: CandleStore) -> None:
    assert store.series() == []
    store.write_candles("ETH/USDT", "1h", candles(3))
    store.write_candles("BTC/USDT", "1d", candles(3, "1d"))
    store.write_candles("BTC/USDT", "1h", candles(3))
    assert store.series() == [("BTC/USDT", "1d"), ("BTC/USDT", "1h"), ("ETH/USDT", "1h")]
    store.delete_range("BTC/USDT", "1d", None, T0 + 10 * 24 * HOUR)
    assert store.series() == [("BTC/USDT", "1h"), ("ETH/USDT", "1h")]


def test_known_gaps_round_trip(store: CandleStore) -> None:
    assert store.known_gaps("BTC/USDT", "1h") == []
    store.add_known_gap("BTC/USDT", "1h", T0 + 10 * HOUR, T0 + 12 * HOUR)
    store.add_known_gap("BTC/USDT", "1h", T0, T0 + 2 * HOUR)
    store.add_known_gap("ETH/USDT", "1h", T0 + 5 * HOUR, T0 + 5 * HOUR)
    store.add_known_gap("BTC/USDT", "1h", T0 + 10 * HOUR, T0 + 13 * HOUR)  # same start: replaced
    assert store.known_gaps("BTC/USDT", "1h") == [(T0, T0 + 2 * HOUR), (T0 + 10 * HOUR, T0 + 13 * HOUR)]
    assert store.known_gaps("ETH/USDT", "1h") == [(T0 + 5 * HOUR, T0 + 5 * HOUR)]
    assert store.known_gaps("BTC/USDT", "1d") == []
    with pytest.raises(DataValidationError):
        store.add_known_gap("BTC/USDT", "1h", T0 + HOUR, T0)


def _forecast(issued_at: int, version: str, seed: int, symbol: str = "BTC/USDT", role: str = "champion",
              band50: bool = False) -> Forecast:
    rng = np.random.default_rng(seed)
    yhat = 20_000 + rng.normal(0, 50, 24)
    points = pd.DataFrame({"ts": np.arange(24, dtype="int64") * HOUR + T0 + 48 * HOUR, "yhat": yhat,
                           "yhat_lower": yhat - rng.random(24) * 30, "yhat_upper": yhat + rng.random(24) * 30})
    if band50:
        points["yhat_lower_50"] = yhat - rng.random(24) * 10
        points["yhat_upper_50"] = yhat + rng.random(24) * 10
        points.loc[3, ["yhat_lower_50", "yhat_upper_50"]] = np.nan  # nullable per point
    return Forecast(symbol, "1h", issued_at, version, T0 + 47 * HOUR, points, role)  # type: ignore[arg-type]


def test_forecast_round_trip_latest_wins(store: CandleStore) -> None:
    assert store.latest_forecast("BTC/USDT", "1h") is None
    newer, older = _forecast(T0 + 48 * HOUR + 61_234, "prophet-v2", 1), _forecast(T0 + 47 * HOUR + 5, "prophet-v1", 2)
    store.write_forecast(newer)
    store.write_forecast(older)  # written last but issued earlier: not the latest
    store.write_forecast(_forecast(T0 + 50 * HOUR, "naive", 3, symbol="ETH/USDT"))
    got = store.latest_forecast("BTC/USDT", "1h")
    assert got is not None
    assert (got.symbol, got.timeframe, got.issued_at, got.model_version, got.input_last_ts, got.role, got.model) == (
        "BTC/USDT", "1h", newer.issued_at, "prophet-v2", newer.input_last_ts, "champion", "prophet")
    pd.testing.assert_frame_equal(got.points[list(FORECAST_COLUMNS)], newer.points)
    assert got.points[list(BAND50_COLUMNS)].isna().all().all(), "no 50 % band written: nulls, not zeros"
    assert store.latest_forecast_id("BTC/USDT", "1h") == (newer.issued_at, "prophet-v2", newer.input_last_ts)
    assert store.latest_forecast_id("BTC/USDT", "1d") is None
    assert store.latest_forecast("BTC/USDT", "1d") is None
    with pytest.raises(DataValidationError, match="yhat_upper"):
        store.write_forecast(Forecast("BTC/USDT", "1h", T0, "x", T0, newer.points.drop(columns="yhat_upper")))


def test_forecast_points_as_plain_columns_store_like_a_frame(store: CandleStore) -> None:
    """The serving path hands its points over as arrays by column (no frame per model)."""
    framed = _forecast(T0 + 48 * HOUR, "prophet-v1", 7, band50=True)
    columns = {name: framed.points[name].to_numpy() for name in framed.points.columns}
    store.write_forecast(Forecast("ETH/USDT", "1h", framed.issued_at, "prophet-v1", framed.input_last_ts, columns))
    store.write_forecast(framed)
    plain, frame = store.latest_forecast("ETH/USDT", "1h"), store.latest_forecast("BTC/USDT", "1h")
    assert plain is not None and frame is not None
    pd.testing.assert_frame_equal(plain.points, frame.points)  # NaN of the 50 % band included
    short = {**columns, "yhat_upper": columns["yhat_upper"][:-1]}
    with pytest.raises(DataValidationError, match="different lengths"):
        store.write_forecast(Forecast("ETH/USDT", "1h", T0, "x", T0, short))
    with pytest.raises(DataValidationError, match="yhat_lower"):
        store.write_forecast(Forecast("ETH/USDT", "1h", T0, "x", T0, {k: v for k, v in columns.items() if k != "yhat_lower"}))


def test_shadow_runs_of_one_snapshot_are_kept_apart_and_never_served(store: CandleStore) -> None:
    issued = T0 + 48 * HOUR + 60_000
    champion = _forecast(issued, "prophet-aaaaaaaa-20230103000000", 1, band50=True)
    challenger = _forecast(issued, "prophet-bbbbbbbb-20230103000000", 2, role="challenger", band50=True)
    naive = _forecast(issued, "naive-cccccccc-20230103000000", 3, role="baseline")
    drift = _forecast(issued + HOUR, "drift-dddddddd-20230103000000", 4, role="baseline")
    for run in (champion, challenger, naive, drift):
        store.write_forecast(run)
    served = store.latest_forecast("BTC/USDT", "1h")
    assert served is not None and served.model_version == champion.model_version, "a later shadow is not served"
    pd.testing.assert_frame_equal(served.points, champion.points)  # the 50 % band round-trips, NaN included
    assert store.latest_forecast("BTC/USDT", "1h", role="baseline").model == "drift"
    every = store.read_forecasts("BTC/USDT", "1h")
    assert [(f.issued_at, f.role, f.model) for f in every] == [
        (issued, "champion", "prophet"), (issued, "challenger", "prophet"), (issued, "baseline", "naive"),
        (issued + HOUR, "baseline", "drift")]
    assert [f.model for f in store.read_forecasts("BTC/USDT", "1h", issued_from=issued + 1)] == ["drift"]
    assert [f.role for f in store.read_forecasts("BTC/USDT", "1h", issued_to=issued, role="challenger")] == ["challenger"]
    # Scoring's frame-free read: the same runs, in the same order, with the same values.
    plain = store.read_forecast_columns("BTC/USDT", "1h")
    assert [(f.issued_at, f.role, f.model, f.model_version, f.input_last_ts) for f in plain] == [
        (f.issued_at, f.role, f.model, f.model_version, f.input_last_ts) for f in every]
    for frame, cols in zip(every, plain):
        assert cols.columns["ts"] == frame.points["ts"].tolist()
        for column in ("yhat", "yhat_lower", "yhat_upper", "yhat_lower_50", "yhat_upper_50"):
            np.testing.assert_array_equal(np.asarray(cols.floats(column)), frame.points[column].to_numpy())  # NaN too
    assert [f.model for f in store.read_forecast_columns("BTC/USDT", "1h", issued_from=issued + 1)] == ["drift"]
    store.write_forecast(_forecast(issued, "prophet-eeeeeeee-20230103000000", 5, role="challenger"))  # same slot: replaced
    assert [f.model_version for f in store.read_forecasts("BTC/USDT", "1h", role="challenger")] == [
        "prophet-eeeeeeee-20230103000000"]
    with pytest.raises(DataValidationError, match="role"):
        store.write_forecast(_forecast(issued, "naive", 6, role="served"))
    store.prune_forecasts("BTC/USDT", "1h", issued_before=issued + 1)
    assert [f.model for f in store.read_forecasts("BTC/USDT", "1h")] == ["drift"], "pruning covers every role"


def test_prune_forecasts_drops_only_older_runs_of_one_series(store: CandleStore) -> None:
    runs = [_forecast(T0 + k * HOUR, f"v{k}", k) for k in (1, 2, 3)]
    for run in runs:
        store.write_forecast(run)
    store.write_forecast(_forecast(T0 + HOUR, "eth", 9, symbol="ETH/USDT"))
    store.prune_forecasts("BTC/USDT", "1h", issued_before=runs[2].issued_at)
    assert store.latest_forecast("BTC/USDT", "1h").issued_at == runs[2].issued_at
    store.prune_forecasts("BTC/USDT", "1h", issued_before=runs[2].issued_at + 1)
    assert store.latest_forecast("BTC/USDT", "1h") is None
    assert store.latest_forecast("ETH/USDT", "1h").model_version == "eth", "other series untouched"


@pytest.mark.parametrize("defect", ["high below close", "misaligned", "nan"])
def test_invalid_candle_is_refused_and_nothing_stored(store: CandleStore, defect: str) -> None:
    frame = candles(10)
    if defect == "high below close":
        frame.loc[4, "high"] = frame.loc[4, "close"] - 1
    elif defect == "misaligned":
        frame.loc[4, "ts"] += 60_000
    else:
        frame.loc[4, "volume"] = float("nan")
    with pytest.raises(DataValidationError, match="invalid candle"):
        store.write_candles("BTC/USDT", "1h", frame)
    assert store.count("BTC/USDT", "1h") == 0
    assert store.series() == []


def test_budget_guard_refuses_to_grow(store: CandleStore) -> None:
    store.write_candles("BTC/USDT", "1h", candles(10))
    assert store.size_bytes() > 0
    store.budget_bytes = 1
    with pytest.raises(StorageBudgetExceeded, match="STORAGE_BUDGET_GB"):
        store.write_candles("BTC/USDT", "1h", candles(5, start=T0 + 10 * HOUR))
    assert store.count("BTC/USDT", "1h") == 10
    store.budget_bytes = 10 * 1024**3
    assert store.write_candles("BTC/USDT", "1h", candles(5, start=T0 + 10 * HOUR)) == 5


def test_month_timeframe_uses_calendar_boundaries(store: CandleStore) -> None:
    frame = candles(14, "1M", start=1_635_724_800_000)  # 2021-11-01, across a year end and February
    store.write_candles("BTC/USDT", "1M", frame)
    got = store.read_candles("BTC/USDT", "1M")
    days = [tfs.to_datetime(int(t)).strftime("%Y-%m-%d %H:%M") for t in got["ts"]]
    assert days[:5] == ["2021-11-01 00:00", "2021-12-01 00:00", "2022-01-01 00:00", "2022-02-01 00:00", "2022-03-01 00:00"]
    assert days[-1] == "2022-12-01 00:00"
    assert store.bounds("BTC/USDT", "1M") == (1_635_724_800_000, int(frame["ts"].iloc[-1]))
    assert store.count("BTC/USDT", "1M", start=1_640_995_200_000, end=1_643_673_600_000) == 2  # Jan+Feb 2022


def test_empty_write_is_a_no_op(store: CandleStore) -> None:
    assert store.write_candles("BTC/USDT", "1h", candles(3).iloc[0:0]) == 0
    assert store.count("BTC/USDT", "1h") == 0
    assert list(COLUMNS) == list(store.read_candles("BTC/USDT", "1h").columns)


def test_extreme_values_round_trip_exactly(store: CandleStore) -> None:
    frame = candles(4, "1d")
    frame["volume"] = [0.0, 1e-9, 123456789012345.67, 3.0]
    frame.loc[1, ["open", "high", "low", "close"]] = [1e-8, 3e-8, 1e-8, 2.000000000000001e-8]
    frame.loc[2, ["open", "high", "low", "close"]] = [7.5e11, 1e12, 5e11, 8.75e11]  # up to MAX_PRICE
    store.write_candles("SHIB/USDT", "1d", frame)
    pd.testing.assert_frame_equal(store.read_candles("SHIB/USDT", "1d"), frame, check_exact=True)
    beyond = frame.copy()
    beyond.loc[2, "high"] = 1e300  # no market has it: refused by the store too, not only by ingest
    with pytest.raises(DataValidationError, match="price above"):
        store.write_candles("SHIB/USDT", "1d", beyond)
    pd.testing.assert_frame_equal(store.read_candles("SHIB/USDT", "1d"), frame, check_exact=True)


def test_sqlite_store_migrates_forecasts_written_before_roles(tmp_path) -> None:
    import json
    import sqlite3

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # the layout of a store written before forecast roles
        conn.execute("CREATE TABLE forecasts (symbol TEXT NOT NULL, timeframe TEXT NOT NULL, issued_at INTEGER NOT NULL, "
                     "model_version TEXT NOT NULL, input_last_ts INTEGER NOT NULL, points TEXT NOT NULL, "
                     "PRIMARY KEY (symbol, timeframe, issued_at))")
        points = {"ts": [T0 + HOUR], "yhat": [1.5], "yhat_lower": [1.0], "yhat_upper": [2.0]}
        conn.execute("INSERT INTO forecasts VALUES (?,?,?,?,?,?)",
                     ("BTC/USDT", "1h", T0 + 60_000, "prophet-1a2b3c4d-20230101000000", T0, json.dumps(points)))
    store = SQLiteStore(path)
    got = store.latest_forecast("BTC/USDT", "1h")
    assert got is not None and (got.role, got.model, got.issued_at) == ("champion", "prophet", T0 + 60_000)
    assert float(got.points["yhat"].iloc[0]) == 1.5 and got.points["yhat_lower_50"].isna().all()
    store.close()
    assert SQLiteStore(path).latest_forecast("BTC/USDT", "1h").issued_at == T0 + 60_000, "migration runs once"
