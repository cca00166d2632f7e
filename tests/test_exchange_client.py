"""ExchangeClient: the real ccxt.binance against the real simulated exchange on loopback.

Retries are observed through an injected ``sleep`` that records the delays it is asked for (and
does not wait), and through the exchange's own request log.
"""

from __future__ import annotations

import random
import traceback
from typing import Iterator

import pytest
from pydantic import SecretStr

from coin_core import timeframes as tfs
from coin_core.candles import to_frame, validate_candles
from coin_core.config import Settings
from coin_core.errors import ConfigError, PermanentExchangeError, TransientExchangeError
from coin_core.exchange import ExchangeClient
from coin_core.exchange_sim import SimClock, SimExchange

KLINES = "/api/v3/klines"
NOW_MS = 1_706_660_434_567  # 2024-01-31 00:20:34.567 UTC
H = 3_600_000


class Sleeps:
    """Records requested delays; the retry logic is what is under test, not the wall clock."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(sim_settings: Settings, sim_clock: SimClock, sleeps: Sleeps) -> Iterator[ExchangeClient]:
    sim_clock.set_ms(NOW_MS)
    c = ExchangeClient(sim_settings, sleep=sleeps, backoff_base_s=0.05, backoff_cap_s=10.0,
                       rate_limit_ms=1, rng=random.Random(7))
    yield c
    c.close()


def test_markets_are_spot_symbols_loaded_once(client: ExchangeClient, sim_exchange: SimExchange) -> None:
    assert client.markets() == ["BTC/USDT", "ETH/USDT"]
    assert client.markets() == ["BTC/USDT", "ETH/USDT"]
    assert [r.path for r in sim_exchange.requests] == ["/api/v3/exchangeInfo"]


def test_api_key_does_not_trigger_private_currency_or_margin_calls(
    sim_settings: Settings, sim_exchange: SimExchange
) -> None:
    keyed = sim_settings.model_copy(update={"exchange_api_key": SecretStr("k" * 64),
                                            "exchange_secret": SecretStr("s" * 64)})
    with ExchangeClient(keyed, rate_limit_ms=1) as client:
        client.markets()
    assert {r.path for r in sim_exchange.requests} == {"/api/v3/exchangeInfo"}


def test_check_symbols_names_every_unlisted_one(client: ExchangeClient) -> None:
    client.check_symbols(["btc/usdt", "ETH/USDT"])
    with pytest.raises(ConfigError) as err:
        client.check_symbols(["BTC/USDT", "DOGE/USDT", "XRP/USDT"])
    assert "DOGE/USDT" in str(err.value) and "XRP/USDT" in str(err.value)
    assert "BTC/USDT" not in str(err.value)


def test_now_is_exchange_time(client: ExchangeClient, sim_clock: SimClock) -> None:
    assert client.now_ms() == NOW_MS
    sim_clock.advance(90)
    assert client.now_ms() == NOW_MS + 90_000


def test_fetch_ohlcv_pages_match_ground_truth(client: ExchangeClient, sim_exchange: SimExchange) -> None:
    start = NOW_MS - 30 * H
    rows = client.fetch_ohlcv("BTC/USDT", "1h", since=start, limit=10)
    assert rows == sim_exchange.expected_closed("BTC/USDT", "1h", start, start + 10 * H)
    tail = client.fetch_ohlcv("BTC/USDT", "1h", since=start, until=tfs.floor(NOW_MS, "1h") - H)
    assert tail == sim_exchange.expected_closed("BTC/USDT", "1h", start, NOW_MS)
    live = client.fetch_ohlcv("BTC/USDT", "1h", since=NOW_MS - 2 * H)
    assert live[-1][0] == tfs.floor(NOW_MS, "1h")  # in-progress row is passed through
    assert validate_candles(to_frame(live), "1h", NOW_MS).in_progress == 1


def test_earliest_ts_is_the_listing_candle(sim_settings: Settings, sim_exchange: SimExchange,
                                           client: ExchangeClient) -> None:
    assert client.earliest_ts("ETH/USDT", "1d") == tfs.floor(1_502_942_400_000, "1d")
    assert client.earliest_ts("ETH/USDT", "1w") == tfs.floor(1_502_942_400_000, "1w")
    assert client.earliest_ts("ETH/USDT", "1M") == 1_501_545_600_000  # 2017-08-01


def test_rate_limit_storm_recovers_honouring_retry_after(client: ExchangeClient, sim_exchange: SimExchange,
                                                         sleeps: Sleeps) -> None:
    client.markets()
    sim_exchange.faults.add("rate_limit", count=3, retry_after=2, path=KLINES)
    rows = client.fetch_ohlcv("ETH/USDT", "1h", since=NOW_MS - 5 * H)
    assert len(rows) == 5  # 20:00 .. 00:00 (in progress)
    assert sim_exchange.count(KLINES) == 4
    assert len(sleeps.calls) == 3 and all(s >= 2.0 for s in sleeps.calls)


def test_ban_longer_than_the_cap_fails_at_once_with_retry_after(client: ExchangeClient,
                                                                sim_exchange: SimExchange, sleeps: Sleeps) -> None:
    client.markets()
    sim_exchange.faults.add("ban", retry_after=120)
    with pytest.raises(TransientExchangeError) as err:
        client.fetch_ohlcv("ETH/USDT", "1h", since=None)
    assert err.value.retry_after == 120 and sleeps.calls == []
    assert sim_exchange.count(KLINES) == 1


@pytest.mark.parametrize("kind, extra", [
    ("server_error", {"status": 500}), ("server_error", {"status": 502}),
    ("server_error", {"status": 503}), ("server_error", {"status": 504}),
    ("maintenance", {"style": "-1001"}), ("maintenance", {"style": "503"}), ("disconnect", {}),
])
def test_transient_bursts_are_retried_with_growing_backoff(client: ExchangeClient, sim_exchange: SimExchange,
                                                           sleeps: Sleeps, kind: str, extra: dict) -> None:
    client.markets()
    sim_exchange.faults.add(kind, count=3, path=KLINES, **extra)  # type: ignore[arg-type]
    rows = client.fetch_ohlcv("BTC/USDT", "1d", since=NOW_MS - 10 * 24 * H)
    assert rows == sim_exchange.expected_closed("BTC/USDT", "1d", NOW_MS - 10 * 24 * H, NOW_MS) + rows[-1:]
    assert sim_exchange.count(KLINES) == 4 and len(sleeps.calls) == 3
    for attempt, delay in enumerate(sleeps.calls, start=1):  # equal jitter: [b/2, b] of b = base*2^(n-1)
        assert 0.05 * 2 ** (attempt - 1) / 2 <= delay <= 0.05 * 2 ** (attempt - 1)


def test_timeouts_are_retried_then_recover(sim_settings: Settings, sim_exchange: SimExchange,
                                           sleeps: Sleeps) -> None:
    fast = sim_settings.model_copy(update={"exchange_timeout_s": 0.5})
    with ExchangeClient(fast, sleep=sleeps, backoff_base_s=0.01, rate_limit_ms=1) as client:
        client.markets()
        sim_exchange.faults.add("latency", count=2, seconds=5.0, path=KLINES)
        rows = client.fetch_ohlcv("BTC/USDT", "1h", since=None, limit=3)
    assert len(rows) == 3 and len(sleeps.calls) == 2
    assert sim_exchange.count(KLINES) == 3


def test_retries_exhausted_raise_transient(client: ExchangeClient, sim_exchange: SimExchange,
                                           sleeps: Sleeps, sim_settings: Settings) -> None:
    sim_exchange.faults.add("server_error", count=None, status=503)
    with pytest.raises(TransientExchangeError) as err:
        client.markets()
    attempts = sim_settings.exchange_max_retries + 1
    assert sim_exchange.count() == attempts and len(sleeps.calls) == attempts - 1
    assert f"after {attempts} attempt(s)" in str(err.value) and "load_markets" in str(err.value)
    assert err.value.retry_after is None
    sim_exchange.faults.clear()
    assert client.markets() == ["BTC/USDT", "ETH/USDT"]  # a failed load is not cached


def test_unknown_symbol_is_permanent_without_any_request(client: ExchangeClient, sim_exchange: SimExchange,
                                                         sleeps: Sleeps) -> None:
    client.markets()
    with pytest.raises(PermanentExchangeError, match="DOGE/USDT"):
        client.fetch_ohlcv("DOGE/USDT", "1h", since=None)
    assert sim_exchange.count(KLINES) == 0 and sleeps.calls == []


def test_delisted_symbol_answer_is_permanent_with_no_retry(client: ExchangeClient, sim_exchange: SimExchange,
                                                           sleeps: Sleeps) -> None:
    client.markets()  # cached while ETH/USDT was still listed
    sim_exchange.delist("ETH/USDT")
    with pytest.raises(PermanentExchangeError) as err:
        client.fetch_ohlcv("ETH/USDT", "1h", since=None)
    assert "BadSymbol" in str(err.value) and "-1121" in str(err.value)
    assert sim_exchange.count(KLINES) == 1 and sleeps.calls == []


def test_malformed_rows_are_returned_for_validation_to_reject(client: ExchangeClient,
                                                               sim_exchange: SimExchange) -> None:
    sim_exchange.faults.add("malformed", variant="high_below_low", row=2)
    sim_exchange.faults.add("malformed", variant="non_number", row=4)
    since = NOW_MS - 10 * H
    first = client.fetch_ohlcv("BTC/USDT", "1h", since=since)
    second = client.fetch_ohlcv("BTC/USDT", "1h", since=since)
    report = validate_candles(to_frame(first + second[4:5]), "1h", NOW_MS)
    # high and low swapped: the low now sits above open/close, the first check that fails.
    assert sorted(r.reason for r in report.rejected) == ["low above open/close", "non-finite value"]
    assert len(report.valid) == len(first) - 1 - report.in_progress


def test_no_secret_in_errors(sim_settings: Settings, sim_exchange: SimExchange, sleeps: Sleeps) -> None:
    key, secret = "FAKEKEY-1234567890abcdef", "FAKESECRET-0987654321fedcba"
    keyed = sim_settings.model_copy(update={"exchange_api_key": SecretStr(key),
                                            "exchange_secret": SecretStr(secret),
                                            "exchange_max_retries": 1})
    # A misbehaving proxy that echoes credentials into its error page.
    sim_exchange.faults.add("server_error", count=None, status=502, body=f"bad gateway key={key} secret={secret}")
    with ExchangeClient(keyed, sleep=sleeps, rate_limit_ms=1) as client:
        with pytest.raises(TransientExchangeError) as transient:
            client.markets()
        sim_exchange.faults.clear()
        client.markets()
        sim_exchange.delist("BTC/USDT")
        with pytest.raises(PermanentExchangeError) as permanent:
            client.fetch_ohlcv("BTC/USDT", "1h", since=None)
    assert "bad gateway key=***" in str(transient.value)
    for exc in (transient.value, permanent.value):
        text = "".join(traceback.format_exception(exc)) + repr(exc)
        assert key not in text and secret not in text


def test_bad_exchange_configuration_is_a_config_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="EXCHANGE_API_URL"):
        ExchangeClient(settings.model_copy(update={"exchange_api_url": "ftp://x"}))
    with pytest.raises(ConfigError, match="notanexchange"):
        ExchangeClient(settings.model_copy(update={"exchange_id": "notanexchange"}))


def test_market_snapshot_lets_another_client_fetch_without_loading_markets(sim_settings, sim_exchange) -> None:
    from coin_core.exchange import ExchangeClient

    with ExchangeClient(sim_settings, rate_limit_ms=1) as first:
        snapshot = first.market_snapshot(["btc/usdt", "DOGE/USDT"])
    assert list(snapshot) == ["BTC/USDT"]  # unlisted symbols are left out, not invented
    loads = sim_exchange.count("/api/v3/exchangeInfo")
    with ExchangeClient(sim_settings, rate_limit_ms=1, markets=snapshot) as second:
        rows = second.fetch_ohlcv("BTC/USDT", "1h", since=None, limit=5)
        assert second.markets() == ["BTC/USDT"]
    assert len(rows) == 5 and sim_exchange.count("/api/v3/exchangeInfo") == loads


# -- answers that are not what the endpoint returns ------------------------------------------------

@pytest.mark.parametrize("variant", ["html", "truncated_json", "empty", "object", "number"])
def test_a_garbage_200_answer_is_transient_never_an_empty_page(client: ExchangeClient, sim_exchange: SimExchange,
                                                                sleeps: Sleeps, variant: str) -> None:
    since = NOW_MS - 10 * H
    sim_exchange.faults.add("bad_body", count=None, variant=variant)
    with pytest.raises(TransientExchangeError, match="HTTP 200 answer is|unparsable answer") as caught:
        client.fetch_ohlcv("BTC/USDT", "1h", since=since)
    assert "after 4 attempt(s)" in str(caught.value)
    assert sim_exchange.count(KLINES) == 4 and len(sleeps.calls) == 3  # EXCHANGE_MAX_RETRIES=3
    sim_exchange.faults.clear()
    sim_exchange.faults.add("bad_body", count=1, variant=variant)
    rows = client.fetch_ohlcv("BTC/USDT", "1h", since=since, until=tfs.floor(NOW_MS, "1h") - H)
    assert rows == sim_exchange.expected_closed("BTC/USDT", "1h", since, NOW_MS)


def test_an_empty_list_is_a_well_formed_empty_page(client: ExchangeClient, sim_exchange: SimExchange) -> None:
    sim_exchange.faults.add("bad_body", variant="empty_list")
    assert client.fetch_ohlcv("BTC/USDT", "1h", since=NOW_MS - 10 * H) == []  # ingest judges it


@pytest.mark.parametrize("variant, check", [
    ("null_row", lambda row: row is None),
    ("dict_row", lambda row: isinstance(row, dict)),
    ("negative_time", lambda row: row[0] < 0),
    ("future_time", lambda row: row[0] > NOW_MS + 50 * 365 * 24 * H),
    ("misaligned_time", lambda row: row[0] % H == 1),
    ("huge_value", lambda row: row[1:5] == [1e300] * 4),
    ("short_row", lambda row: len(row) == 5 and isinstance(row[1], str)),  # raw: too short to parse
])
def test_rows_ccxt_would_drop_are_passed_on_for_validation_to_count(client: ExchangeClient, sim_exchange: SimExchange,
                                                                   variant: str, check) -> None:
    since = NOW_MS - 10 * H
    sim_exchange.faults.add("malformed", variant=variant, row=1)
    rows = client.fetch_ohlcv("BTC/USDT", "1h", since=since, limit=4)
    truth = sim_exchange.expected_closed("BTC/USDT", "1h", since, NOW_MS)[:4]
    assert len(rows) == 4 and len([r for r in rows if check(r)]) == 1  # in ccxt's order (sorted)
    assert [r for r in rows if not check(r)] == [truth[0], truth[2], truth[3]]


def test_earliest_ts_refuses_an_unusable_first_row(client: ExchangeClient, sim_exchange: SimExchange) -> None:
    sim_exchange.faults.add("malformed", variant="null_row", row=0)
    with pytest.raises(TransientExchangeError, match="unusable open time"):
        client.earliest_ts("ETH/USDT", "1d")
    sim_exchange.faults.add("malformed", variant="misaligned_time", row=0)
    assert client.earliest_ts("ETH/USDT", "1d") == tfs.floor(1_502_942_400_000, "1d")  # back on the grid


# -- the exchange's clock, bounded by the local one -------------------------------------------------

@pytest.mark.parametrize("skew_s, expected_offset_s, noted", [
    (0, 0, False),
    (240, 240, False),           # 4 min ahead: within the 5 min bound, the exchange decides
    (86_400, 0, True),           # a day ahead: the local clock decides
    (-86_400, -86_400, True),    # a day behind: kept (no candle is closed early), but said
])
def test_exchange_clock_skew_is_bounded_by_the_local_clock(sim_settings: Settings, sim_exchange: SimExchange,
                                                           sim_clock: SimClock, skew_s, expected_offset_s,
                                                           noted) -> None:
    sim_clock.set_ms(NOW_MS)
    if skew_s:
        sim_exchange.faults.add("clock_skew", seconds=skew_s)
    local = SimClock(NOW_MS / 1000)
    with ExchangeClient(sim_settings, rate_limit_ms=1, clock=local) as c:
        assert c.now_ms() == NOW_MS + expected_offset_s * 1000
        assert (c.clock_note is not None) == noted
        if noted:
            assert "86,400 s" in c.clock_note and ("ahead" in c.clock_note) == (skew_s > 0)


@pytest.mark.parametrize("path, call, error", [
    ("/api/v3/time", lambda c: c.now_ms(), "fetch_time"),
    ("/api/v3/exchangeInfo", lambda c: c.markets(), "load_markets"),
])
@pytest.mark.parametrize("variant", ["html", "truncated_json", "empty", "object", "empty_list", "number"])
def test_garbage_time_or_markets_answer_is_transient_not_local_time_or_no_markets(
        sim_settings: Settings, sim_exchange: SimExchange, sim_clock: SimClock, sleeps: Sleeps,
        path: str, call, error: str, variant: str) -> None:
    sim_clock.set_ms(NOW_MS)
    sim_exchange.faults.add("bad_body", count=None, variant=variant, path=path)
    with ExchangeClient(sim_settings, sleep=sleeps, rate_limit_ms=1) as c:
        with pytest.raises(TransientExchangeError, match=f"{error} failed after 4 attempt"):
            call(c)  # never "no markets" (a ConfigError for every symbol) nor a silent local clock
        sim_exchange.faults.clear()
        sim_exchange.faults.add("bad_body", count=1, variant=variant, path=path)
        assert call(c) == (NOW_MS if path.endswith("time") else ["BTC/USDT", "ETH/USDT"])
