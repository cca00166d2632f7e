"""The simulated exchange: wire format against recorded real Binance responses, kline query
semantics, in-progress candles, CSV replay, missing ranges and each fault kind on the wire.

Everything runs against the real server on loopback, through plain HTTP or the real ccxt.binance.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import ccxt
import pytest

from coin_core import timeframes as tfs
from coin_core.exchange_sim import DEFAULT_LISTING_MS, SimClock, SimExchange, replay_files
from tests.fixtures.common import MARKET, WIRE, require

DEC8 = re.compile(r"^-?\d+\.\d{8}$")
H = 3_600_000
# Filter fields that are JSON integers on the real wire although ccxt's static file quotes them
# (PROVENANCE.md caveat; TRAILING_DELTA as in live responses recorded by other Binance clients).
WIRE_INTS = {"limit", "avgPriceMins", "maxNumOrders", "maxNumAlgoOrders", "minTrailingAboveDelta",
             "maxTrailingAboveDelta", "minTrailingBelowDelta", "maxTrailingBelowDelta"}
# 2024-01-31 00:20:34.567 UTC, a frozen instant for exact assertions.
NOW_MS = 1_706_660_434_567


def get(base: str, path: str) -> tuple[int, dict[str, str], Any]:
    """GET and decode JSON; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(base + path, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        body = err.read()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = body.decode()
        return err.code, dict(err.headers), payload


def recorded(name: str) -> Any:
    path = WIRE / name
    require(path.exists(), f"recorded wire file {path}")
    return json.loads(path.read_text())


def ccxt_on(sim: SimExchange) -> ccxt.binance:
    """The real ccxt.binance pointed at the sim, spot only (as coin_core.exchange configures it)."""
    ex = ccxt.binance({"enableRateLimit": False, "timeout": 3000})
    ex.urls["api"] = {"public": sim.base_url + "/api/v3", "private": sim.base_url + "/api/v3"}
    ex.options["fetchMarkets"] = {"types": ["spot"]}
    ex.options["fetchCurrencies"] = False
    ex.options["fetchMargins"] = False
    return ex


@pytest.fixture
def frozen(sim_clock: SimClock, sim_exchange: SimExchange) -> SimExchange:
    sim_clock.set_ms(NOW_MS)
    return sim_exchange


# -- wire format -----------------------------------------------------------------------------

def _kline_types(row: list[Any]) -> list[type]:
    return [type(v) for v in row]


def test_kline_rows_match_recorded_wire_format(frozen: SimExchange) -> None:
    real = recorded("nautilus_http_spot_market_klines.json")
    status, headers, rows = get(frozen.base_url, "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=10")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert len(rows) == 10
    for row in rows:
        assert len(row) == len(real[0]) == 12
        assert _kline_types(row) == _kline_types(real[0])
        for i in (1, 2, 3, 4, 5, 7, 9, 10):
            assert DEC8.match(row[i]) and DEC8.match(real[0][i]), (i, row[i])
        assert row[6] == row[0] + 60_000 - 1 and real[0][6] == real[0][0] + 60_000 - 1
        assert row[11] == real[0][11] == "0"
        o, h, low, c = (float(v) for v in row[1:5])
        assert 0 < low <= min(o, c) <= max(o, c) <= h
    assert [r[0] for r in rows] == [tfs.floor(NOW_MS, "1m") - (9 - i) * 60_000 for i in range(10)]


def test_close_time_rule_for_every_timeframe_including_calendar_months(frozen: SimExchange) -> None:
    for tf in tfs.TIMEFRAMES:
        _, _, rows = get(frozen.base_url, f"/api/v3/klines?symbol=ETHUSDT&interval={tf}&limit=3")
        assert rows and all(r[6] == tfs.add(r[0], tf, 1) - 1 for r in rows), tf
    _, _, months = get(frozen.base_url, "/api/v3/klines?symbol=ETHUSDT&interval=1M&startTime=1672531200000&limit=2")
    assert [(r[0], r[6]) for r in months] == [(1672531200000, 1675209599999), (1675209600000, 1677628799999)]


def test_ccxt_static_response_shape_and_since_alignment(frozen: SimExchange) -> None:
    case = recorded("ccxt_static_response_binance_fetchOHLCV.json")["methods"]["fetchOHLCV"][0]
    symbol, tf, since, limit = case["input"]
    _, _, rows = get(frozen.base_url, f"/api/v3/klines?symbol=BTCUSDT&interval={tf}&startTime={since}&limit={limit}")
    # Same rule as the recording: the first row is the next full candle at or after startTime.
    assert [r[0] for r in rows] == [r[0] for r in case["httpResponse"]]
    assert [_kline_types(r) for r in rows] == [_kline_types(r) for r in case["httpResponse"]]


def test_exchange_info_matches_recorded_shapes(frozen: SimExchange) -> None:
    old = recorded("nautilus_http_spot_market_exchange_info.json")
    new = recorded("ccxt_static_markets_binance_symbol_info.json")["BTCUSDT"]
    status, _, info = get(frozen.base_url, "/api/v3/exchangeInfo")
    assert status == 200 and set(info) == set(old)
    assert info["timezone"] == "UTC" and info["serverTime"] == NOW_MS
    assert all(set(r) == set(old["rateLimits"][0]) for r in info["rateLimits"])
    ours = {s["symbol"]: s for s in info["symbols"]}
    assert set(ours) == {"BTCUSDT", "ETHUSDT"}
    btc, real = ours["BTCUSDT"], old["symbols"][0]
    assert set(real) <= set(btc) and set(new) <= set(btc)
    for key, value in real.items():
        assert type(btc[key]) is type(value), key
    assert (btc["status"], btc["baseAsset"], btc["quoteAsset"]) == ("TRADING", "BTC", "USDT")
    assert btc["permissionSets"] == [["SPOT", "MARGIN"]]
    _assert_filters(btc["filters"], real["filters"], new["filters"])


def _assert_filters(ours: list[dict[str, Any]], old: list[dict[str, Any]], new: list[dict[str, Any]]) -> None:
    by_type = {f["filterType"]: f for f in ours}
    assert set(by_type) == {f["filterType"] for f in new}
    for ref in old:  # real wire types (integers are integers)
        if ref["filterType"] in by_type:
            mine = by_type[ref["filterType"]]
            assert set(mine) == set(ref) and all(type(mine[k]) is type(v) for k, v in ref.items())
    for ref in new:  # ccxt's static file stringifies integers: those are ints on the wire
        mine = by_type[ref["filterType"]]
        assert set(mine) == set(ref), ref["filterType"]
        for key, value in ref.items():
            want = int if key in WIRE_INTS else type(value)
            assert type(mine[key]) is want, (ref["filterType"], key)
            if isinstance(value, str) and DEC8.match(value):
                assert DEC8.match(mine[key]), (ref["filterType"], key)


def test_time_ping_and_error_payloads(frozen: SimExchange) -> None:
    base = frozen.base_url
    assert get(base, "/api/v3/ping")[::2] == (200, {})
    assert get(base, "/api/v3/time")[::2] == (200, {"serverTime": NOW_MS})
    status, headers, body = get(base, "/api/v3/klines?symbol=NOPEUSDT&interval=1h")
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    assert headers["Content-Type"].startswith("application/json")
    assert get(base, "/api/v3/exchangeInfo?symbol=NOPEUSDT")[::2] == (400, {"code": -1121, "msg": "Invalid symbol."})
    assert get(base, "/api/v3/klines?symbol=BTCUSDT&interval=2h")[2]["code"] == -1120
    assert get(base, "/api/v3/klines?interval=1h")[2]["code"] == -1102
    assert get(base, "/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime=abc")[2]["code"] == -1100
    assert get(base, "/api/v3/klines?symbol=BTCUSDT&interval=1h&startTime=9&endTime=8")[2]["code"] == -1023


def test_used_weight_header_counts_per_minute(frozen: SimExchange, sim_clock: SimClock) -> None:
    base = frozen.base_url
    first = int(get(base, "/api/v3/ping")[1]["X-MBX-USED-WEIGHT-1M"])
    second = int(get(base, "/api/v3/exchangeInfo")[1]["X-MBX-USED-WEIGHT-1M"])
    assert second == first + 20
    sim_clock.advance(60)
    assert int(get(base, "/api/v3/klines?symbol=BTCUSDT&interval=1h")[1]["X-MBX-USED-WEIGHT-1M"]) == 2


# -- query semantics ---------------------------------------------------------------------------

def test_kline_query_semantics(frozen: SimExchange) -> None:
    base, q = frozen.base_url, "/api/v3/klines?symbol=BTCUSDT&interval=1h"
    current = tfs.floor(NOW_MS, "1h")
    latest = get(base, q)[2]
    assert len(latest) == 500 and latest[-1][0] == current  # default limit, newest last
    assert len(get(base, q + "&limit=5000")[2]) == 1000  # clamped to the maximum
    start = current - 10 * H + 1  # unaligned: the first row is the next full hour
    page = get(base, f"{q}&startTime={start}&limit=3")[2]
    assert [r[0] for r in page] == [current - 9 * H, current - 8 * H, current - 7 * H]
    bounded = get(base, f"{q}&startTime={start}&endTime={current - 8 * H}&limit=50")[2]
    assert [r[0] for r in bounded] == [current - 9 * H, current - 8 * H]
    until = get(base, f"{q}&endTime={current - 5 * H}&limit=2")[2]
    assert [r[0] for r in until] == [current - 6 * H, current - 5 * H]
    before_listing = get(base, f"{q}&startTime=0&limit=1")[2]
    assert before_listing[0][0] == DEFAULT_LISTING_MS
    assert get(base, f"{q}&startTime={current + H}")[2] == []  # the future does not exist yet


def test_candles_are_pure_functions_and_close_as_time_passes(frozen: SimExchange, sim_clock: SimClock) -> None:
    ex = ccxt_on(frozen)
    since = tfs.floor(NOW_MS, "1h") - 5 * H
    before = ex.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=100)
    assert len(before) == 6 and before[-1][0] == tfs.floor(NOW_MS, "1h")
    assert before[:-1] == frozen.expected_closed("BTC/USDT", "1h", since, NOW_MS)
    with SimExchange(clock=sim_clock) as twin:  # another instance: same candles
        assert ccxt_on(twin).fetch_ohlcv("BTC/USDT", "1h", since=since, limit=100) == before
    sim_clock.advance(3600)
    after = ex.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=100)
    assert after[:5] == before[:5] and len(after) == 7
    # The in-progress candle was partial: once closed it shows its final values.
    final = frozen.expected_closed("BTC/USDT", "1h", before[-1][0], before[-1][0], NOW_MS + H)
    assert after[5] == final[0] and after[5] != before[5]
    assert after[5][1] == before[5][1]  # same open, different close/volume
    assert after[5][5] > before[5][5]


def test_in_progress_candle_can_be_disabled(sim_clock: SimClock) -> None:
    sim_clock.set_ms(NOW_MS)
    with SimExchange(clock=sim_clock, in_progress=False) as sim:
        rows = ccxt_on(sim).fetch_ohlcv("ETH/USDT", "1d", limit=3)
        assert rows[-1][0] == tfs.last_closed_open(NOW_MS, "1d")


def test_ccxt_load_markets_and_pagination(frozen: SimExchange) -> None:
    ex = ccxt_on(frozen)
    markets = ex.load_markets()
    assert sorted(markets) == ["BTC/USDT", "ETH/USDT"]
    btc = markets["BTC/USDT"]
    assert btc["spot"] and btc["type"] == "spot" and btc["active"] and btc["id"] == "BTCUSDT"
    assert btc["precision"]["price"] == 0.01
    assert [r.path for r in frozen.requests] == ["/api/v3/exchangeInfo"]  # no sapi/fapi/dapi
    start = NOW_MS - 2500 * H
    rows: list[list[Any]] = []
    since = start
    while True:
        page = ex.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=1000)
        if not page:
            break
        rows += page
        since = page[-1][0] + H
    closed = [r for r in rows if tfs.close_time(r[0], "1h") <= NOW_MS]
    assert closed == frozen.expected_closed("BTC/USDT", "1h", start, NOW_MS)
    assert len(rows) == len({r[0] for r in rows}) == len(closed) + 1
    assert frozen.count("/api/v3/klines") == 4  # 1000 + 1000 + 501 rows, then an empty page


def test_missing_range_has_no_rows_and_the_page_continues_after_it(frozen: SimExchange) -> None:
    current = tfs.floor(NOW_MS, "1h")
    hole = (current - 40 * H, current - 30 * H)
    frozen.missing_range("BTC/USDT", "1h", *hole)
    rows = ccxt_on(frozen).fetch_ohlcv("BTC/USDT", "1h", since=current - 45 * H, limit=10)
    opens = [r[0] for r in rows]
    assert opens[:5] == [current - (45 - i) * H for i in range(5)]
    assert opens[5:] == [current - (29 - i) * H for i in range(5)]
    truth = frozen.expected_closed("BTC/USDT", "1h", current - 45 * H, current - 25 * H)
    assert [r[0] for r in truth] == opens[:5] + [current - (29 - i) * H for i in range(5)]
    eth = ccxt_on(frozen).fetch_ohlcv("ETH/USDT", "1h", since=current - 45 * H, limit=10)
    assert [r[0] for r in eth] == [current - (45 - i) * H for i in range(10)]  # other series intact
    newest = ccxt_on(frozen).fetch_ohlcv("BTC/USDT", "1h", params={"until": hole[1]}, limit=2)
    assert [r[0] for r in newest] == [hole[0] - 2 * H, hole[0] - H]


# -- CSV replay --------------------------------------------------------------------------------

def test_replay_of_a_generated_csv_keeps_its_rows_and_gaps(tmp_path: Path, sim_clock: SimClock) -> None:
    day = 86_400_000
    opens = [1_600_000_000_000 // day * day + i * day for i in (0, 1, 2, 5, 6)]
    lines = ["timestamp_ms,open,high,low,close,volume"]
    lines += [f"{t},{100 + i},{110 + i},{90 + i},{105 + i},{1.5 + i}" for i, t in enumerate(opens)]
    path = tmp_path / "binance_ABC-USDT_1d.csv"
    path.write_text("\n".join(lines) + "\n")
    assert replay_files(tmp_path) == {("ABC/USDT", "1d"): path}
    with SimExchange(("BTC/USDT",), clock=sim_clock, replay=replay_files(tmp_path)) as sim:
        _, _, raw = get(sim.base_url, "/api/v3/klines?symbol=ABCUSDT&interval=1d&startTime=0")
        assert [r[0] for r in raw] == opens
        assert raw[0][1:6] == ["100.00000000", "110.00000000", "90.00000000", "105.00000000", "1.50000000"]
        rows = ccxt_on(sim).fetch_ohlcv("ABC/USDT", "1d", since=0)
        assert rows == [[t, 100 + i, 110 + i, 90 + i, 105 + i, 1.5 + i] for i, t in enumerate(opens)]
        assert rows == sim.expected_closed("ABC/USDT", "1d", 0, opens[-1])


def test_replay_of_the_real_btc_file_reproduces_rows_and_the_2018_outage(sim_clock: SimClock) -> None:
    path = MARKET / "binance_BTC-USDT_1h.csv"
    require(path.exists(), f"real market data {path}")
    start, end = 1_518_001_200_000, 1_518_249_600_000  # 2018-02-07 11:00 .. 02-10 08:00 UTC
    with path.open() as handle:
        next(handle)
        want = [[int(t), *map(float, rest)] for t, *rest in (line.strip().split(",") for line in handle)
                if start <= int(t) <= end]
    with SimExchange((), clock=sim_clock, replay={("BTC/USDT", "1h"): path}) as sim:
        rows = ccxt_on(sim).fetch_ohlcv("BTC/USDT", "1h", since=start, params={"until": end})
        assert rows == want
        opens = [r[0] for r in rows]
        gap_start, gap_end = 1_518_048_000_000, 1_518_170_400_000  # 02-08 00:00 and 02-09 10:00
        assert opens[opens.index(gap_start) + 1] == gap_end
        assert not [t for t in opens if gap_start < t < gap_end]
        assert ccxt_on(sim).fetch_ohlcv("BTC/USDT", "1h", since=0, limit=1)[0][0] == 1_502_942_400_000


# -- faults on the wire ------------------------------------------------------------------------

def test_rate_limit_and_ban_faults(frozen: SimExchange) -> None:
    frozen.faults.add("rate_limit", count=2, retry_after=7, path="/api/v3/klines")
    frozen.faults.add("ban", retry_after=120)
    base, q = frozen.base_url, "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1"
    assert get(base, "/api/v3/ping")[0] == 418  # the ban is not path-scoped; the 429s are
    for _ in range(2):
        status, headers, body = get(base, q)
        assert (status, headers["Retry-After"], body["code"]) == (429, "7", -1003)
        assert "X-MBX-USED-WEIGHT-1M" in headers
    assert get(base, q)[0] == 200
    assert [(r.status, r.fault) for r in frozen.requests] == [(418, "ban"), (429, "rate_limit"),
                                                              (429, "rate_limit"), (200, None)]


def test_server_error_maintenance_and_disconnect_faults(frozen: SimExchange) -> None:
    base = frozen.base_url
    frozen.faults.add("server_error", status=502)
    frozen.faults.add("maintenance", style="-1001")
    frozen.faults.add("maintenance", style="503")
    frozen.faults.add("disconnect")
    assert get(base, "/api/v3/time")[0] == 502
    assert get(base, "/api/v3/time")[::2] == (503, {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."})
    assert get(base, "/api/v3/time")[0] == 503
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(base + "/api/v3/time", timeout=5).read()
    assert get(base, "/api/v3/time")[0] == 200
    assert frozen.faults.pending == []


def test_permanent_fault_until_cleared(frozen: SimExchange) -> None:
    frozen.faults.add("server_error", count=None, status=500)
    assert [get(frozen.base_url, "/api/v3/ping")[0] for _ in range(3)] == [500, 500, 500]
    frozen.faults.clear()
    assert get(frozen.base_url, "/api/v3/ping")[0] == 200


@pytest.mark.parametrize("variant, check", [
    ("non_number", lambda row: row[2] is None),
    ("high_below_low", lambda row: row[2] < row[3]),
    ("missing_fields", lambda row: row[4] is None and row[5] is None),
    ("negative_price", lambda row: row[3] < 0),
])
def test_malformed_rows_reach_ccxt(frozen: SimExchange, variant: str, check: Any) -> None:
    frozen.faults.add("malformed", variant=variant, row=1)  # type: ignore[arg-type]
    ex = ccxt_on(frozen)
    rows = ex.fetch_ohlcv("BTC/USDT", "1h", limit=4)
    assert check(rows[1]) and not check(rows[0]) and not check(rows[2])
    assert ex.fetch_ohlcv("BTC/USDT", "1h", limit=4)[1][2] is not None  # only the next response


def test_fault_arguments_are_validated(sim_exchange: SimExchange) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim_exchange.faults.add("explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="5xx"):
        sim_exchange.faults.add("server_error", status=404)
    with pytest.raises(ValueError, match="count"):
        sim_exchange.faults.add("latency", count=0)


def test_latency_fault_delays_only_its_path(frozen: SimExchange) -> None:
    import time

    frozen.faults.add("latency", seconds=0.4, path="/api/v3/klines")
    assert get(frozen.base_url, "/api/v3/time")[0] == 200
    assert len(frozen.faults.pending) == 1  # another path does not consume it
    t0 = time.monotonic()
    assert get(frozen.base_url, "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1")[0] == 200
    assert time.monotonic() - t0 >= 0.4
    assert frozen.faults.pending == []


def test_unreadable_replay_file_is_a_clear_error(tmp_path: Path, sim_clock: SimClock) -> None:
    from coin_core.errors import DataValidationError

    path = tmp_path / "binance_ABC-USDT_1h.csv"
    path.write_text("timestamp_ms,open,high,low,close,volume\n0,1,2,0.5,1,3\n3600000,1,two,0.5,1,3\n")
    with SimExchange((), clock=sim_clock, replay={("ABC/USDT", "1h"): path}) as sim:
        with pytest.raises(DataValidationError, match="line 3"):
            sim.series("ABC/USDT", "1h")
        status, _, body = get(sim.base_url, "/api/v3/klines?symbol=ABCUSDT&interval=1h")
        assert status == 500 and body["code"] == -1000 and "line 3" in body["msg"]


def test_serve_forever_prints_its_url_and_serves(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.fixtures.common import REPO, free_port

    port = free_port()
    code = f"from coin_core.exchange_sim import serve_forever; serve_forever(port={port}, symbols=['SOL/USDT'])"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert f"http://127.0.0.1:{port}" in line
        _, _, info = get(f"http://127.0.0.1:{port}", "/api/v3/exchangeInfo")
        assert [s["symbol"] for s in info["symbols"]] == ["SOLUSDT"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def raw_get(base: str, path: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(base + path, timeout=5) as resp:
        return resp.status, resp.headers["Content-Type"], resp.read()


@pytest.mark.parametrize("variant, ctype, body", [
    ("html", "text/html", lambda good: b"<html><body><h1>Welcome to nginx!</h1></body></html>"),
    ("truncated_json", "application/json", lambda good: good[: len(good) // 2]),
    ("empty", "application/json", lambda good: b""),
    ("object", "application/json", lambda good: b"{}"),
    ("empty_list", "application/json", lambda good: b"[]"),
    ("number", "application/json", lambda good: b"42"),
])
def test_bad_body_faults_answer_http_200_with_a_broken_payload(frozen: SimExchange, variant: str, ctype: str,
                                                               body: Any) -> None:
    q = "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=5"
    good = raw_get(frozen.base_url, q)[2]
    frozen.faults.add("bad_body", variant=variant)  # type: ignore[arg-type]
    status, content_type, got = raw_get(frozen.base_url, "/api/v3/time")
    assert json.loads(got)["serverTime"] == NOW_MS  # klines only, by default
    status, content_type, got = raw_get(frozen.base_url, q)
    assert (status, content_type.split(";")[0], got) == (200, ctype, body(good))
    assert raw_get(frozen.base_url, q)[2] == good  # only one answer
    assert [r.fault for r in frozen.requests] == [None, None, "bad_body", None]


@pytest.mark.parametrize("variant, check", [
    ("dict_row", lambda row, good: row == dict(zip(("openTime", "open", "high", "low", "close", "volume"), good))),
    ("null_row", lambda row, good: row is None),
    ("negative_time", lambda row, good: row[0] == -good[0] and row[1:] == good[1:]),
    ("future_time", lambda row, good: row[0] == good[0] + 100 * 365 * 86_400_000),
    ("misaligned_time", lambda row, good: row[0] == good[0] + 1),
    ("huge_value", lambda row, good: row[1:5] == ["1e300"] * 4 and row[5:] == good[5:]),
    ("short_row", lambda row, good: row == good[:5]),
])
def test_rows_ccxt_would_drop_are_on_the_wire(frozen: SimExchange, variant: str, check: Any) -> None:
    q = "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=4"
    good = get(frozen.base_url, q)[2]
    frozen.faults.add("malformed", variant=variant, row=2)  # type: ignore[arg-type]
    rows = get(frozen.base_url, q)[2]
    assert check(rows[2], good[2]) and rows[:2] + rows[3:] == good[:2] + good[3:]


def test_clock_skew_moves_only_the_time_endpoint(frozen: SimExchange) -> None:
    frozen.faults.add("clock_skew", count=None, seconds=-3600)
    assert get(frozen.base_url, "/api/v3/time")[2] == {"serverTime": NOW_MS - 3_600_000}
    assert get(frozen.base_url, "/api/v3/exchangeInfo")[2]["serverTime"] == NOW_MS
    last = get(frozen.base_url, "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=1")[2][0][0]
    assert last == tfs.floor(NOW_MS, "1h")
    assert get(frozen.base_url, "/api/v3/time")[2] == {"serverTime": NOW_MS - 3_600_000}  # until cleared


def test_answer_fault_variants_are_validated(sim_exchange: SimExchange) -> None:
    with pytest.raises(ValueError, match="unknown bad_body variant 'xml'"):
        sim_exchange.faults.add("bad_body", variant="xml")
    with pytest.raises(ValueError, match="unknown malformed variant 'html'"):
        sim_exchange.faults.add("malformed", variant="html")


# -- `coin-predict exchange`: replay on a clock that starts in the file's past, request log ---------

def _cli(*args: str, tmp_path: Path) -> "subprocess.Popen[str]":
    import os
    import subprocess
    import sys

    from tests.fixtures.common import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO), "DATA_DIR": str(tmp_path / "data"), "TARGET_SYMBOLS": "BTC/USDT"}
    return subprocess.Popen([sys.executable, "-m", "coin_core.cli", "exchange", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _write_replay(folder: Path) -> list[int]:
    start = 1_517_443_200_000  # 2018-02-01
    rows = [start + i * H for i in range(24 * 14) if not 1_518_048_000_000 <= start + i * H <= 1_518_170_400_000]
    folder.mkdir()
    (folder / "binance_BTC-USDT_1h.csv").write_text("timestamp_ms,open,high,low,close,volume\n" + "".join(
        f"{t},{100 + i % 7},{101 + i % 7},{99 + i % 7},{100.5 + i % 7},{10 + i}\n" for i, t in enumerate(rows)))
    return rows


def test_exchange_cli_replays_a_past_file_on_a_clock_started_then(tmp_path: Path, settings) -> None:
    from coin_core.exchange import ExchangeClient
    from coin_core.ingest import ingest_series
    from coin_core.storage.sqlite import SQLiteStore
    from tests.fixtures.common import free_port

    rows = _write_replay(tmp_path / "market")
    port, start = free_port(), 1_518_652_800_000  # 2018-02-15T00:00Z, the day after the file ends
    proc = _cli("--port", str(port), "--replay-dir", str(tmp_path / "market"), "--start", "2018-02-15T00:00Z",
                "--speed", "60", tmp_path=tmp_path)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert f"http://127.0.0.1:{port}" in line and "clock 2018-02-15T00:0" in line and "60x" in line
        base = f"http://127.0.0.1:{port}"
        server_time = get(base, "/api/v3/time")[2]["serverTime"]
        assert start <= server_time < start + 3_600_000  # 60x: an hour of simulated time is a real minute
        cfg = settings.model_copy(update={"exchange_api_url": base, "timeframe_policy": {"1h": {"lookback_days": 20}}})
        with SQLiteStore(tmp_path / "r.sqlite3") as store, ExchangeClient(cfg, rate_limit_ms=1) as client:
            report = ingest_series(store, client, cfg, "BTC/USDT", "1h")
            assert (report.error, report.new_candles, report.known_gaps) == (None, len(rows), 1)
            assert store.read_candles("BTC/USDT", "1h")["ts"].tolist() == rows
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    log = err.splitlines()
    assert any(re.search(r" GET /api/v3/time -> 200 \d+\.\d ms$", x) for x in log), err
    klines = [x for x in log if "GET /api/v3/klines " in x]
    assert klines and all(re.search(r" -> 200 \d+\.\d ms$", x) for x in klines), err
    assert ("interval=1h limit=1000 symbol=BTCUSDT startTime=2018-01-26T00:00Z endTime=2018-02-14T23:00Z -> 200"
            in klines[0]), klines[0]
    assert all(x.startswith("2018-02-15T0") for x in log if " GET " in x), err


@pytest.mark.parametrize("args, message", [
    (["--replay-dir", "/nonexistent"], "--replay-dir '/nonexistent' is not a folder"),
    (["--replay-dir", "."], "holds no market file"),
    (["--port", "99999"], "--port 99999 is out of range"),
    (["--start", "yesterday"], "invalid instant 'yesterday'"),
    (["--speed", "-2"], "clock speed must be > 0"),
    (["--request-log", "/nonexistent/x.log"], "cannot open --request-log"),
    (["--port", "IN_USE"], "cannot listen on 127.0.0.1:"),
])
def test_exchange_cli_bad_arguments_are_one_clean_line(tmp_path: Path, args: list[str], message: str) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = [str(busy.getsockname()[1]) if a == "IN_USE" else a for a in args]
        proc = _cli(*args, tmp_path=tmp_path)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("coin-predict: error: ") and message in err, err
