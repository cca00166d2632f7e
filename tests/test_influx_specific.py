"""InfluxDB-only behaviour: auth on the wire, no ``rp``, failures, restarts, escaping, sizing.

Everything runs against a real influxd except the header checks, which need to see the raw
requests: those use pytest-httpserver as the wire-level peer (1.x with auth off ignores headers).
"""

from __future__ import annotations

import base64
import logging
import uuid
from typing import Iterator

import pytest
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from coin_core.config import Settings
from coin_core.errors import StorageError, StorageUnavailableError
from coin_core.storage import open_store
from coin_core.storage import influx as influx_module
from coin_core.storage.influx import InfluxStore, quote_ident, quote_literal

from .fixtures.common import free_port, require_binary
from .fixtures.influx import InfluxdServer
from .test_storage_contract import HOUR, T0, _forecast, candles

pytestmark = pytest.mark.influx

SECRET = "s3cr3t-Do-Not-Leak"
EMPTY_RESULT = {"results": [{"statement_id": 0}]}


def _exercise(store: InfluxStore) -> None:
    """Every kind of request the store makes."""
    store.ping()
    store.write_candles("BTC/USDT", "1h", candles(3))
    store.read_candles("BTC/USDT", "1h")
    store.tail("BTC/USDT", "1h", 2)
    store.bounds("BTC/USDT", "1h")
    store.count("BTC/USDT", "1h", T0, T0 + HOUR)
    store.delete_range("BTC/USDT", "1h", None, T0)
    store.add_known_gap("BTC/USDT", "1h", T0, T0)
    store.known_gaps("BTC/USDT", "1h")
    store.write_forecast(_forecast(T0 + 5, "v1", 1))
    store.latest_forecast("BTC/USDT", "1h")
    store.series()
    store.size_bytes()


def _serve_influx_v1(httpserver: HTTPServer, headers: dict[str, str]) -> None:
    """Answer like an empty InfluxDB, but only to requests that carry ``headers``."""
    httpserver.expect_request("/ping", headers=headers).respond_with_data(status=204)
    httpserver.expect_request("/write", method="POST", headers=headers).respond_with_data(status=204)
    httpserver.expect_request("/query", headers=headers).respond_with_json(EMPTY_RESULT)


def _assert_wire(httpserver: HTTPServer, header: str) -> None:
    assert len(httpserver.log) >= 13
    for request, response in httpserver.log:
        assert response.status_code < 300, f"{request.path} {request.args} got {response.status_code}"
        assert request.headers.get("Authorization") == header
        assert "rp" not in request.args, "never send rp: InfluxDB 3 reads it as part of the database name"
        assert SECRET not in request.url
        if request.path in ("/write", "/query") and not request.args.get("q", "").startswith(("SHOW STATS", "CREATE DATABASE")):
            assert request.args.get("db") == "coin_test"
        if request.path == "/write":
            assert request.args.get("precision") == "ms"


def test_token_is_sent_as_authorization_token(httpserver: HTTPServer) -> None:
    header = f"Token {SECRET}"
    _serve_influx_v1(httpserver, {"Authorization": header})
    with InfluxStore(httpserver.url_for("/"), "coin_test", token=SECRET, username="ignored") as store:
        _exercise(store)
    _assert_wire(httpserver, header)


def test_user_and_password_are_sent_as_basic_auth(httpserver: HTTPServer) -> None:
    header = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
    _serve_influx_v1(httpserver, {"Authorization": header})
    with InfluxStore(httpserver.url_for("/"), "coin_test", username="alice", password=SECRET) as store:
        _exercise(store)
    _assert_wire(httpserver, header)


def test_credentials_in_the_url_become_basic_auth_and_leave_the_url(httpserver: HTTPServer) -> None:
    header = "Basic " + base64.b64encode(f"alice:{SECRET}".encode()).decode()
    _serve_influx_v1(httpserver, {"Authorization": header})
    url = f"http://alice:{SECRET}@127.0.0.1:{httpserver.port}"
    with InfluxStore(url, "coin_test") as store:
        assert SECRET not in store.url and SECRET not in repr(store)
        _exercise(store)
    _assert_wire(httpserver, header)


def test_server_errors_are_retryable_and_auth_errors_are_not(httpserver: HTTPServer) -> None:
    calls = {"n": 0}

    def flaky(request: Request) -> Response:
        calls["n"] += 1
        if "CREATE DATABASE" in request.args.get("q", ""):
            return Response('{"results":[{"statement_id":0}]}', status=200)
        return Response(f'{{"error":"overloaded, token {SECRET}"}}', status=503)

    httpserver.expect_request("/query").respond_with_handler(flaky)
    httpserver.expect_request("/write").respond_with_json({"error": "authorization failed"}, status=401)
    with InfluxStore(httpserver.url_for("/"), "coin_test", token=SECRET) as store:
        with pytest.raises(StorageUnavailableError, match="503") as unavailable:
            store.count("BTC/USDT", "1h")
        with pytest.raises(StorageError, match="refused the credentials") as refused:
            store.write_candles("BTC/USDT", "1h", candles(2))
    assert not isinstance(refused.value, StorageUnavailableError)
    for exc in (unavailable.value, refused.value):
        assert SECRET not in str(exc)


def test_server_down_is_unavailable_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://alice:{SECRET}@127.0.0.1:{free_port()}"
    with InfluxStore(url, "coin_test", password=SECRET, timeout_s=2.0) as store:
        for call in (store.ping, lambda: store.count("BTC/USDT", "1h"),
                     lambda: store.write_candles("BTC/USDT", "1h", candles(2)), store.size_bytes):
            with pytest.raises(StorageUnavailableError, match="unreachable") as info:
                call()
            assert SECRET not in str(info.value) and "127.0.0.1" in str(info.value)
    assert SECRET not in caplog.text


def test_stop_and_restart_recovers(influx_server: InfluxdServer, influx_store: InfluxStore) -> None:
    frame = candles(40)
    influx_store.write_candles("BTC/USDT", "1h", frame.iloc[:20])
    influx_server.stop()
    with pytest.raises(StorageUnavailableError):
        influx_store.write_candles("BTC/USDT", "1h", frame.iloc[20:])
    with pytest.raises(StorageUnavailableError):
        influx_store.latest_ts("BTC/USDT", "1h")
    influx_server.start()
    assert influx_store.latest_ts("BTC/USDT", "1h") == int(frame["ts"].iloc[19])
    influx_store.write_candles("BTC/USDT", "1h", frame)  # the retried backfill rewrites: still one each
    assert influx_store.count("BTC/USDT", "1h") == 40


def test_crash_keeps_acknowledged_writes(influx_server: InfluxdServer, influx_store: InfluxStore) -> None:
    frame = candles(30)
    influx_store.write_candles("BTC/USDT", "1h", frame)
    influx_server.kill()
    influx_server.start()
    assert influx_store.count("BTC/USDT", "1h") == 30
    assert influx_store.read_candles("BTC/USDT", "1h").equals(frame)


def test_partial_write_reports_dropped_points(influx_server: InfluxdServer, influx_store: InfluxStore, influx_db: str) -> None:
    influx_server.query(f"CREATE DATABASE {quote_ident(influx_db)}")
    # An integer "open" in the shard first: InfluxDB then drops our float points (type conflict).
    assert influx_server.write(f"candles,symbol=ETH/USDT,timeframe=1h open=1i {T0 - HOUR}", influx_db).status_code == 204
    with pytest.raises(StorageError, match=r"dropped 3 of 3 point\(s\) of BTC/USDT 1h \(partial write") as info:
        influx_store.write_candles("BTC/USDT", "1h", candles(3))
    assert not isinstance(info.value, StorageUnavailableError)
    assert influx_store.count("BTC/USDT", "1h") == 0


def test_dropped_database_is_reported_then_recreated(influx_server: InfluxdServer, influx_store: InfluxStore, influx_db: str) -> None:
    influx_store.write_candles("BTC/USDT", "1h", candles(3))
    influx_server.query(f"DROP DATABASE {quote_ident(influx_db)}")
    with pytest.raises(StorageError, match="not found.*create the bucket"):
        influx_store.write_candles("BTC/USDT", "1h", candles(3))
    influx_store.write_candles("BTC/USDT", "1h", candles(3))
    assert influx_store.count("BTC/USDT", "1h") == 3


def test_sub_pages_join_into_exact_pages(monkeypatch: pytest.MonkeyPatch, influx_store: InfluxStore) -> None:
    monkeypatch.setattr(influx_module, "_PAGE_ROWS", 4)  # exercise the >10k-row path on 23 rows
    frame = candles(23)
    influx_store.write_candles("BTC/USDT", "1h", frame)
    assert [len(p) for p in influx_store.iter_candles("BTC/USDT", "1h", chunk_size=10)] == [10, 10, 3]
    assert influx_store.read_candles("BTC/USDT", "1h").equals(frame)
    assert influx_store.tail("BTC/USDT", "1h", 9).equals(frame.iloc[-9:].reset_index(drop=True))


def test_quoting_matches_the_real_influxql_parser(influx_server: InfluxdServer, influx_db: str) -> None:
    influx_server.query(f"CREATE DATABASE {quote_ident(influx_db)}")
    odd = "O'Re\\illy\"x"
    assert influx_server.write(f'weird\\ m,tag={odd} v=1 {T0}', influx_db).status_code == 204
    q = f"SELECT {quote_ident('v')} FROM {quote_ident('weird m')} WHERE {quote_ident('tag')} = {quote_literal(odd)}"
    series = influx_server.query(q, influx_db)["results"][0]["series"]
    assert series[0]["values"][0][1] == 1
    assert quote_literal("a'b\\c") == "'a\\'b\\\\c'" and quote_ident('a"b') == '"a\\"b"'


def test_size_counts_only_its_own_database(influx_server: InfluxdServer, influx_store: InfluxStore) -> None:
    other = InfluxStore(influx_server.url, f"test_{uuid.uuid4().hex[:16]}")
    try:
        other.write_candles("BTC/USDT", "1h", candles(500))
        assert other.size_bytes() > 500 * 6  # SHOW STATS diskBytes, WAL included
        assert influx_store.size_bytes() == 0
    finally:
        influx_server.query(f"DROP DATABASE {quote_ident(other.database)}")
        other.close()


def test_open_store_from_settings(influx_settings: Settings) -> None:
    settings = influx_settings.model_copy(update={"influxdb_token": SecretStr(SECRET)})
    store = open_store(settings)
    try:
        assert isinstance(store, InfluxStore) and SECRET not in repr(store)
        assert store.budget_bytes == settings.storage_budget_bytes
        store.ping()
        store.write_candles("ETH/USDT", "1h", candles(4))
        assert store.series() == [("ETH/USDT", "1h")]
    finally:
        store.close()


@pytest.fixture(scope="module")
def auth_influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxdServer]:
    root = tmp_path_factory.mktemp("influxd-auth")
    with InfluxdServer(require_binary("influxd"), root, auth_enabled=True) as server:
        server.query(f"CREATE USER {quote_ident('admin')} WITH PASSWORD {quote_literal(SECRET)} WITH ALL PRIVILEGES")
        admin = ("admin", SECRET)
        server.query("CREATE DATABASE coin_limited", auth=admin)
        server.query(f"CREATE USER writer WITH PASSWORD {quote_literal(SECRET)}", auth=admin)
        server.query("GRANT ALL ON coin_limited TO writer", auth=admin)
        yield server


def test_real_auth_enabled_server(auth_influxd: InfluxdServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with InfluxStore(auth_influxd.url, "coin_auth", username="admin", password=SECRET) as store:
        store.write_candles("BTC/USDT", "1h", candles(5))
        assert store.count("BTC/USDT", "1h") == 5 and store.size_bytes() > 0
    with InfluxStore(auth_influxd.url, "coin_auth", username="admin", password="wrong-" + SECRET) as bad:
        with pytest.raises(StorageError, match="refused the credentials") as info:
            bad.count("BTC/USDT", "1h")
    assert SECRET not in str(info.value) and SECRET not in caplog.text
    with InfluxStore(auth_influxd.url, "coin_auth") as anonymous, pytest.raises(StorageError, match="credentials"):
        anonymous.write_candles("BTC/USDT", "1h", candles(2))


def test_non_admin_user_writes_to_an_existing_database(auth_influxd: InfluxdServer, caplog: pytest.LogCaptureFixture) -> None:
    """Like a 2.x/3.x bucket: no CREATE DATABASE and no SHOW STATS rights; the size is estimated."""
    caplog.set_level(logging.INFO)
    with InfluxStore(auth_influxd.url, "coin_limited", username="writer", password=SECRET,
                     budget_bytes=10 * 1024**2) as store:
        store.write_candles("BTC/USDT", "1h", candles(10))
        assert store.count("BTC/USDT", "1h") == 10
        assert store.size_bytes() == 10 * influx_module._EST_BYTES_PER_CANDLE
    assert "CREATE DATABASE not accepted" in caplog.text and SECRET not in caplog.text


def test_database_is_created_with_long_shard_groups(influx_server: InfluxdServer, influx_store: InfluxStore) -> None:
    influx_store.write_candles("BTC/USDT", "1h", candles(2))
    policies = influx_server.query(f"SHOW RETENTION POLICIES ON {quote_ident(influx_store.database)}")
    (row,) = policies["results"][0]["series"][0]["values"]
    assert row[:3] == ["autogen", "0s", "8736h0m0s"]  # infinite retention, 52-week shard groups
