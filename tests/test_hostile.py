"""Hostile input at the edge: settings, flags, store URLs, tokens, symbols, paths, flow parameters.

Every case runs the real command (``coin_core.cli.main``, a few through a real ``python -m
coin_core.cli`` process) against a populated world (a SQLite store with candles, a published
site) and asserts either a clear error -- exit 2, exactly one line on stderr naming the culprit,
no traceback, no secret -- or the documented acceptance; and in both cases that nothing in the
store, ``data/`` or ``public/`` changed. Settings rejections run ``cycle``: a setting wrongly
accepted would go on to fetch, forecast and publish, and the snapshot would catch it. The
exchange side of hostility (malformed answers) lives with the ingest tests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest

from coin_core import timeframes as tfs
from coin_core.cli import COMMANDS, build_parser, main
from coin_core.config import Settings, load_settings
from coin_core.redaction import redact
from coin_core.storage import open_store
from tests.fixtures.common import REPO, free_port

SECRET = "s3cr3t-Pa55w0rd-9f8e7d"
TOKEN = "tok3n-A1b2C3d4E5f6-zz"
_ENV_PREFIXES = ("TARGET_", "INGEST_", "INFLUXDB_", "EXCHANGE_", "STORE", "DATA_DIR", "PUBLIC_DIR",
                 "ENABLE_MULTI", "TIMEFRAME_POLICY", "STORAGE_", "FORECAST_", "SITE_")


# ---- the world and its snapshot ----------------------------------------------------------------

@dataclass(frozen=True)
class World:
    root: Path
    data: Path
    public: Path
    closed_url: str  # an exchange URL nothing listens on: a wrongly accepted run fails fast

    def env(self) -> dict[str, str]:
        return {"DATA_DIR": str(self.data), "PUBLIC_DIR": str(self.public), "EXCHANGE_API_URL": self.closed_url,
                "EXCHANGE_MAX_RETRIES": "0", "EXCHANGE_TIMEOUT_S": "2"}


def _candles(n: int, now_ms: int) -> pd.DataFrame:
    last = tfs.last_closed_open(now_ms, "1h")
    ts = [tfs.add(last, "1h", -k) for k in range(n)][::-1]
    close = [100.0 + (i % 7) for i in range(n)]
    return pd.DataFrame({"ts": ts, "open": close, "high": [c + 1 for c in close], "low": [c - 1 for c in close],
                         "close": close, "volume": [5.0] * n})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """BTC/USDT 1h candles in a real SQLite store and a site published from them."""
    from coin_core.pipeline import run_publish

    root = tmp_path_factory.mktemp("hostile")
    data, public = root / "data", root / "public"
    settings = load_settings(data_dir=data, public_dir=public, target_symbols="BTC/USDT")
    now = int(time.time() * 1000)
    with open_store(settings) as store:
        store.write_candles("BTC/USDT", "1h", _candles(48, now))
    run_publish(settings, now_ms=now)
    assert (public / "status.json").is_file()
    return World(root, data, public, f"http://127.0.0.1:{free_port()}")


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file's digest; a SQLite database by its logical dump (its WAL holds recent writes)."""
    found: dict[str, str] = {}
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if path.name.endswith(("-wal", "-shm", "-journal")):
                continue
            if path.relative_to(root).parts[0] == "metrics":
                continue  # run records: every flow run appends one, failed or not (issue 8)
            if path.suffix == ".sqlite3":
                with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                    digest = hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
                conn.close()
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            found[str(path.relative_to(root.parent))] = digest
    return found


def all_text(*roots: Path) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for r in roots for p in r.rglob("*") if p.is_file())


@pytest.fixture
def edge(world: World, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
         caplog: pytest.LogCaptureFixture) -> Iterator["Edge"]:
    monkeypatch.chdir(world.root)  # no developer .env
    for key in list(os.environ):
        if key.upper().startswith(_ENV_PREFIXES):
            monkeypatch.delenv(key, raising=False)
    for key, value in world.env().items():
        monkeypatch.setenv(key, value)
    before = snapshot(world.data, world.public)
    yield Edge(world, monkeypatch, capsys, caplog)
    assert snapshot(world.data, world.public) == before, "the store, data/ or public/ changed"


@dataclass
class Edge:
    world: World
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]
    caplog: pytest.LogCaptureFixture

    def run(self, *argv: str, **env: str) -> tuple[int, str, str]:
        for key, value in env.items():
            self.monkeypatch.setenv(key, value)
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
        out, err = self.capsys.readouterr()
        return code, out, err

    def rejects(self, argv: tuple[str, ...], names: str, **env: str) -> str:
        code, out, err = self.run(*argv, **env)
        assert code == 2, (code, out, err)
        assert err.startswith("coin-predict: error:") and err.count("\n") == 1, err
        assert "Traceback" not in err + out and names.lower() in err.lower(), err
        self.no_secret(out + err)
        return err

    def no_secret(self, text: str) -> None:
        logged = "\n".join(r.getMessage() for r in self.caplog.records)
        for secret in (SECRET, TOKEN):
            assert secret not in text and secret not in logged
            assert secret not in all_text(self.world.data, self.world.public)


# ---- settings: every field, bounds and shapes (run `cycle`, which would write if accepted) ------

BAD_SETTINGS: list[tuple[str, str]] = [
    *[("EXCHANGE_TIMEOUT_S", v) for v in ("inf", "-inf", "nan", "1e308", "1e23", "0", "-1", "0.01", "601", "abc", "")],
    *[("STORAGE_BUDGET_GB", v) for v in ("inf", "1e308", "nan", "0", "-5", "1e7")],
    *[("INFLUXDB_TIMEOUT_S", v) for v in ("inf", "1e308", "0", "-inf", "nan")],
    *[("FORECAST_RETENTION_DAYS", v) for v in ("1e23", "100000000000000000000000", "0", "-1", "3651", "1.5")],
    *[("EXCHANGE_MAX_RETRIES", v) for v in ("1e23", "100000000000000000000000", "-1", "21", "x")],
    ("ENABLE_MULTI_TIMEFRAMES", "maybe"),
    ("STORE", "mysql"), ("STORE", "SQLite "),
    *[("EXCHANGE_ID", v) for v in ("ßinance", "BINANCE", "../x", "binance;rm", "b")],
    *[("INFLUXDB_BUCKET", v) for v in ("../x", "a b", "x" * 65, "bücket", "coin\n", "")],
    *[("SITE_TITLE", v) for v in ("", "x" * 101, "a\x1b[31mb", "tab\tinside")],
    *[("TARGET_SYMBOLS", v) for v in (
        "btc/uſdt", "BTC/USDT,ﬀ/USDT", "ＢＴＣ/USDT", "BTC/USDT\u00a0", "\u2003BTC/USDT", "../../etc/passwd",
        "BTC/USDT/X", "", ",", " , ", "BTC-USDT", "<script>/X", "BTC/USDT\n", "ıNJ/USDT",
        ",".join(f"S{i:04d}/USDT" for i in range(1001)),
    )],
    *[("INGEST_TIMEFRAMES", v) for v in ("1d", "1h,1w", "2h", "1H", "\u00a01h", "", "1m\u200b")],
]


@pytest.mark.parametrize("name, value", BAD_SETTINGS, ids=[f"{n}={v[:24]!r}" for n, v in BAD_SETTINGS])
def test_bad_setting_is_one_clean_line(edge: Edge, name: str, value: str) -> None:
    edge.rejects(("cycle",), name if name != "INGEST_TIMEFRAMES" or value != "1h,1w" else "ENABLE_MULTI", **{name: value})


BAD_POLICIES = [
    "{not json", "[1]", '{"1h": 5}', '{"2h": {}}', '{"1H ": {}}', '"1h"',
    '{"1h": {"soft_stale_s": 99999}}', '{"1h": {"served_candles": 1e20}}',
    '{"1h": {"served_candles": 100000000000000000000}}', '{"1h": {"lookback_days": 1000000000}}',
    '{"1h": {"lookback_days": 1e9}}', '{"1h": {"retention_days": 0}}', '{"1h": {"horizon": 0}}',
    '{"1h": {"horizon": 100000}}', '{"1h": {"min_samples": -1}}', '{"1h": {"unknown": 1}}',
    '{"1h": {"served_candles": "24"}}', '{"1h": {"hard_stale_s": 1e400}}', '{"1h": {"soft_stale_s": NaN}}',
    '{"1h": {"backfill": "everything"}}', '{"1h": {"predicted": "yes"}}', '{"1h": {"horizon": 24.5}}',
    '{"1m": {"soft_stale_s": 3600, "hard_stale_s": 60}}', '{"1M": {"lookback_days": -1}}',
]


@pytest.mark.parametrize("policy", BAD_POLICIES)
def test_bad_timeframe_policy_is_one_clean_line(edge: Edge, policy: str) -> None:
    edge.rejects(("cycle",), "TIMEFRAME_POLICY" if not policy.startswith('{"2h"') and "1H " not in policy
                 else "timeframe", TIMEFRAME_POLICY=policy)


BAD_URLS = [
    "http://db.internal:8086/?q=DROP%20DATABASE", "http://db.internal:8086/#frag", "http://db.internal:8086?",
    "ftp://db.internal", "file:///etc/passwd", "javascript:alert(1)", "http://", "http://:8086",
    "http://db:99999", "http://db:0", "http://db:abc", "db.internal:8086", "http://db /x", "http://dé.internal/",
    f"http://admin:{SECRET}@db:8086/?p={SECRET}",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_influxdb_url_rejected_at_load(edge: Edge, url: str) -> None:
    err = edge.rejects(("cycle",), "INFLUXDB_URL", INFLUXDB_URL=url, STORE="influxdb")
    assert "database not found" not in err


@pytest.mark.parametrize("url", ["http://sim/?x=1", "ftp://sim", "http://sim:70000", "not a url",
                                 f"http://u:{SECRET}@sim/#x", "http://sim\t/"])
def test_bad_exchange_url_rejected_at_load(edge: Edge, url: str) -> None:
    edge.rejects(("cycle",), "EXCHANGE_API_URL", EXCHANGE_API_URL=url)


@pytest.mark.parametrize("name, value", [
    ("INFLUXDB_TOKEN", f"{TOKEN} inner"), ("INFLUXDB_TOKEN", f"{TOKEN}\x01"), ("INFLUXDB_TOKEN", f"tök{TOKEN}"),
    ("INFLUXDB_TOKEN", "x" * 5000), ("EXCHANGE_API_KEY", f"{TOKEN} x"), ("EXCHANGE_SECRET", f"é{SECRET}"),
    ("INFLUXDB_USERNAME", "ad:min"), ("INFLUXDB_PASSWORD", f"{SECRET}\x07"), ("INFLUXDB_PASSWORD", "p" * 1025),
])
def test_bad_secret_rejected_without_showing_it(edge: Edge, name: str, value: str) -> None:
    err = edge.rejects(("cycle",), name, **{name: value})
    assert value.strip() not in err and "x" * 100 not in err


def test_paths_that_are_files_or_public(edge: Edge, world: World, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    for name, value in [("DATA_DIR", str(afile)), ("DATA_DIR", str(afile / "sub")), ("DATA_DIR", ""),
                        ("DATA_DIR", "data\nx"), ("PUBLIC_DIR", str(afile)), ("PUBLIC_DIR", str(world.data)),
                        ("PUBLIC_DIR", str(world.root))]:
        edge.monkeypatch.setenv("DATA_DIR", str(world.data))
        edge.monkeypatch.setenv("PUBLIC_DIR", str(world.public))
        edge.rejects(("cycle",), name, **{name: value})
    assert afile.read_text() == "x"


# ---- documented acceptances ----------------------------------------------------------------------

def test_token_with_trailing_newline_is_stripped_and_never_shown(edge: Edge) -> None:
    code, out, err = edge.run("config", INFLUXDB_TOKEN=f"  {TOKEN}\n", INFLUXDB_PASSWORD=f"{SECRET}\r\n")
    assert code == 0 and err == ""
    assert json.loads(out)["influxdb_token"] == "**********"
    assert load_settings().influxdb_token.get_secret_value() == TOKEN  # type: ignore[union-attr]
    edge.no_secret(out)


@pytest.mark.parametrize("name, raw, parsed", [
    ("TARGET_SYMBOLS", " btc/usdt , Eth/Usdt,BTC/USDT", ["BTC/USDT", "ETH/USDT"]),
    ("TARGET_SYMBOLS", "\tsol/usdt\t,", ["SOL/USDT"]), ("INGEST_TIMEFRAMES", "1h, 1h,", ["1h"]),
])
def test_ascii_lists_are_normalised(edge: Edge, name: str, raw: str, parsed: list[str]) -> None:
    """Documented acceptance: ASCII case, spaces/tabs around entries, repeats and a trailing comma."""
    code, out, _ = edge.run("config", **{name: raw})
    assert code == 0 and json.loads(out)[name.lower()] == parsed


@pytest.mark.parametrize("name", ["EXCHANGE_API_URL", "INFLUXDB_URL"])
def test_url_credentials_accepted_and_redacted(edge: Edge, name: str) -> None:
    code, out, err = edge.run("config", **{name: f"http://admin:{SECRET}@127.0.0.1:9/base"})
    assert code == 0 and json.loads(out)[name.lower()] == "http://***@127.0.0.1:9/base"
    edge.no_secret(out + err + repr(load_settings()) + str(load_settings()))
    assert SECRET in load_settings().secret_values()  # what every redaction is fed


@pytest.mark.parametrize("argv", [("ingest",), ("ingest", "--symbols", "btc/usdt", "--timeframes", " 1h ")])
def test_valid_selection_reaches_the_exchange(edge: Edge, argv: tuple[str, ...]) -> None:
    """Accepted selections go on to the (here unreachable) exchange: each series reports the
    exchange error (exit 1, the per-series unit of issue 8), no traceback, nothing is written.
    (A ``cycle`` then still publishes, so its badges say what is stale: not a hostile case.)"""
    code, out, err = edge.run(*argv, TARGET_SYMBOLS="BTC/USDT")
    assert code == 1, (code, out, err)
    assert "BTC/USDT" in out and "exchange" in (out + err).lower() and "Traceback" not in out + err, (out, err)
    edge.no_secret(out + err)


# ---- flags --------------------------------------------------------------------------------------

BAD_FLAGS: list[tuple[tuple[str, ...], str]] = [
    (("cycle", "--symbols", "../../etc/passwd"), "invalid symbol"),
    (("cycle", "--symbols", ""), "empty"), (("cycle", "--symbols", ","), "empty"),
    (("cycle", "--symbols", " \t"), "empty"),
    (("cycle", "--symbols", "DOGE/USDT"), "not in TARGET_SYMBOLS"),
    (("cycle", "--symbols", "btc/uſdt"), "invalid symbol"),
    (("cycle", "--symbols", "BTC/USDT,ＥＴＨ/USDT"), "invalid symbol"),
    (("cycle", "--timeframes", "1d"), "not in INGEST_TIMEFRAMES"),
    (("cycle", "--timeframes", ""), "empty"), (("cycle", "--timeframes", "2h"), "unknown timeframe"),
    (("cycle", "--timeframes", "1M"), "not in INGEST_TIMEFRAMES"),
    (("ingest", "--symbols", "BTC/USDT,<script>"), "invalid symbol"),
    (("ingest", "--symbols", "ETH/USDT"), "not in TARGET_SYMBOLS"),
    (("ingest", "--timeframes", "1h\u00a0"), "unknown timeframe"),
    (("train", "--lookback", "-5"), "--lookback"), (("train", "--lookback", "0"), "--lookback"),
    (("train", "--lookback", "abc"), "--lookback"), (("train", "--lookback", "5"), "lookback"),
    (("train", "--lookback", "99999999999"), "lookback"),
    (("train", "--symbols", "DOGE/USDT"), "not in TARGET_SYMBOLS"),
    (("forecast", "--symbols", "DOGE/USDT"), "not in TARGET_SYMBOLS"),
    (("forecast", "--timeframes", "1d"), "not in INGEST_TIMEFRAMES"),
    (("exchange", "--port", "99999"), "--port"), (("exchange", "--port", "-1"), "--port"),
    (("exchange", "--port", "http"), "--port"), (("demo", "--serve", "70000"), "--serve"),
    (("demo", "--lookback-days", "0"), "--lookback-days"),
    (("demo", "--lookback-days", "99999999"), "lookback_days"),
    (("publish", "--symbols", "BTC/USDT"), "unrecognized"), (("explode",), "invalid choice"),
    ((), "required"),
]


@pytest.mark.parametrize("argv, fragment", BAD_FLAGS, ids=[" ".join(a)[:40] or "none" for a, _ in BAD_FLAGS])
def test_bad_flag_is_one_clean_line(edge: Edge, argv: tuple[str, ...], fragment: str) -> None:
    edge.rejects(argv, fragment, TARGET_SYMBOLS="BTC/USDT")


@pytest.mark.parametrize("command", ["train", "forecast"])
def test_1m_is_never_predicted(edge: Edge, command: str) -> None:
    edge.rejects((command, "--timeframes", "1m"), "never predicted", ENABLE_MULTI_TIMEFRAMES="true",
                 INGEST_TIMEFRAMES="1m,1h", TARGET_SYMBOLS="BTC/USDT")


@pytest.mark.parametrize("command", ["train", "forecast"])
def test_nothing_stored_says_run_ingest_and_writes_no_state(edge: Edge, world: World, command: str) -> None:
    err = edge.rejects((command, "--symbols", "DOGE/USDT"), "no candles stored", TARGET_SYMBOLS="BTC/USDT,DOGE/USDT")
    assert "coin-predict ingest" in err
    assert not list(world.data.rglob("*DOGE*"))


# ---- secrets on the way out ---------------------------------------------------------------------

def test_exchange_url_credentials_never_reach_stderr_logs_or_state(world: World, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch, capsys,
                                                                   caplog) -> None:
    """D4b: a failing series' error lands in data/state/*.json and on stderr: credentials masked."""
    from coin_core.exchange_sim import SimExchange

    monkeypatch.chdir(tmp_path)
    with SimExchange(("BTC/USDT",)) as sim:
        sim.faults.add("server_error", count=None, path="/api/v3/klines", status=502)
        host = sim.base_url.split("://", 1)[1]
        for key, value in {"DATA_DIR": str(tmp_path / "data"), "PUBLIC_DIR": str(tmp_path / "public"),
                           "TARGET_SYMBOLS": "BTC/USDT", "EXCHANGE_MAX_RETRIES": "0",
                           "EXCHANGE_API_URL": f"http://admin:{SECRET}@{host}",
                           "EXCHANGE_API_KEY": TOKEN}.items():
            monkeypatch.setenv(key, value)
        with caplog.at_level(logging.DEBUG):
            code = main(["ingest"])
    out, err = capsys.readouterr()
    assert code == 1 and "502" in out + err
    states = list((tmp_path / "data" / "state").glob("ingest_*.json"))
    assert states and json.loads(states[0].read_text())["last_error"], "the failure is recorded"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (out, err, logged, all_text(tmp_path / "data")):
        assert SECRET not in text and TOKEN not in text and "admin:" not in text


@pytest.mark.parametrize("env", [
    {"INFLUXDB_TOKEN": f"{TOKEN}\n"}, {"INFLUXDB_PASSWORD": SECRET, "INFLUXDB_USERNAME": "admin"},
    {"INFLUXDB_URL": "http://admin:{SECRET}@127.0.0.1:{PORT}"},
])
def test_unreachable_store_error_carries_no_secret(edge: Edge, silent_port: int, env: dict[str, str]) -> None:
    """A listening store that never answers: the request (and its Authorization header) is sent."""
    port = str(silent_port)
    env = {k: v.replace("{SECRET}", SECRET).replace("{PORT}", port) for k, v in env.items()}
    env.setdefault("INFLUXDB_URL", f"http://127.0.0.1:{port}")
    err = edge.rejects(("status",), "InfluxDB", STORE="influxdb", INFLUXDB_TIMEOUT_S="1", **env)
    assert "unreachable" in err and "Timeout" in err, err


@pytest.mark.parametrize("debug", [False, True])
def test_unexpected_error_is_one_line_traceback_only_with_debug(edge: Edge, monkeypatch: pytest.MonkeyPatch,
                                                                debug: bool) -> None:
    def boom(args: Any, settings: Settings) -> int:
        raise RuntimeError(f"bug while talking to http://admin:{SECRET}@host with Token {TOKEN}")

    help_text, example, _ = COMMANDS["status"]
    monkeypatch.setitem(COMMANDS, "status", (help_text, example, boom))
    code, out, err = edge.run(*(["--debug"] if debug else []), "status", INFLUXDB_TOKEN=TOKEN)
    assert code == 1 and out == ""
    assert ("Traceback" in err) is debug
    assert err.strip().splitlines()[-1].startswith("coin-predict: unexpected error: RuntimeError")
    assert debug or err.count("\n") == 1
    edge.no_secret(err)


@pytest.mark.parametrize("secret, text", [
    (TOKEN, f"Illegal header value b'Token {TOKEN}\\n'"), (f"{TOKEN}\n", f"header {TOKEN!r}"),
    (SECRET, "GET http://admin:s3cr3t-Pa55w0rd-9f8e7d@host/x"), ("p@ss word/é", "url http://u:p%40ss%20word%2F%C3%A9@h"),
    ("p@ss word", "form p%40ss+word"), (SECRET, "basic " + __import__("base64").b64encode(SECRET.encode()).decode()),
    ("", "Authorization: Bearer abc.def.ghi"), ("", "proxy https://user:pw@proxy:3128 refused"),
])
def test_redaction_masks_every_form(secret: str, text: str) -> None:
    cleaned = redact(text, [secret])
    for leak in (secret.strip(), "abc.def.ghi", "user:pw", "p%40ss"):
        if leak:
            assert leak not in cleaned, cleaned


@pytest.fixture(scope="module")
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections (kernel backlog) and never answers."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


# ---- the real entry point, in its own process ---------------------------------------------------

@pytest.mark.parametrize("env, argv, fragment", [
    ({"TIMEFRAME_POLICY": "{not json"}, ["cycle"], "TIMEFRAME_POLICY"),
    ({"DATA_DIR": "/etc/passwd"}, ["cycle"], "DATA_DIR"),
    ({"EXCHANGE_TIMEOUT_S": "inf"}, ["cycle"], "EXCHANGE_TIMEOUT_S"),
    ({"TARGET_SYMBOLS": "btc/uſdt"}, ["cycle"], "invalid symbol"),
    ({"INFLUXDB_TOKEN": f"{TOKEN}\n", "STORE": "influxdb", "INFLUXDB_URL": "http://127.0.0.1:{PORT}",
      "INFLUXDB_TIMEOUT_S": "1"}, ["status"], "unreachable"),
    ({}, ["exchange", "--port", "99999"], "--port"),
])
def test_real_process_one_line_exit_2(world: World, silent_port: int, env: dict[str, str], argv: list[str],
                                     fragment: str) -> None:
    before = snapshot(world.data, world.public)
    full = {k: v for k, v in os.environ.items() if not k.upper().startswith(_ENV_PREFIXES)}
    full.update(world.env(), PYTHONPATH=str(REPO), **{k: v.replace("{PORT}", str(silent_port)) for k, v in env.items()})
    done = subprocess.run([sys.executable, "-m", "coin_core.cli", *argv], cwd=world.root, env=full,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith("coin-predict: error:") and done.stderr.count("\n") == 1, done.stderr
    assert fragment in done.stderr and "Traceback" not in done.stderr and TOKEN not in done.stderr
    assert snapshot(world.data, world.public) == before


def test_help_is_plain_text_with_defaults_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    top = capsys.readouterr().out
    assert "``" not in top and ":func:" not in top and "Exit codes" in top
    for name, (_, example, _) in COMMANDS.items():
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        text = capsys.readouterr().out
        assert example in text and "../" not in text, name
        if name == "exchange":
            assert "(default 127.0.0.1)" in text and "(default 8765)" in text


def test_every_setting_and_its_bounds_are_documented() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        row = next((line for line in doc.splitlines() if line.startswith("|") and f"`{name.upper()}`" in line), None)
        assert row is not None and row.count("|") >= 5, f"{name.upper()} has no row with bounds"


# ---- selections are honoured, not ignored -------------------------------------------------------

def test_cycle_honours_symbols(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``cycle --symbols ETH/USDT`` ingests ETH only (it used to ingest every configured symbol)."""
    from coin_core.exchange_sim import SimExchange

    monkeypatch.chdir(tmp_path)
    with SimExchange(("BTC/USDT", "ETH/USDT")) as sim:
        for key, value in {"DATA_DIR": str(tmp_path / "data"), "PUBLIC_DIR": str(tmp_path / "public"),
                           "TARGET_SYMBOLS": "BTC/USDT,ETH/USDT", "EXCHANGE_API_URL": sim.base_url,
                           "TIMEFRAME_POLICY": '{"1h": {"lookback_days": 2}}'}.items():
            monkeypatch.setenv(key, value)
        assert main(["cycle", "--symbols", "ETH/USDT"]) == 0, capsys.readouterr()
        fetched = {r.params.get("symbol") for r in sim.requests if r.path == "/api/v3/klines"}
    assert fetched == {"ETHUSDT"}
    with open_store(load_settings()) as store:
        assert store.count("ETH/USDT", "1h") > 24 and store.count("BTC/USDT", "1h") == 0


# ---- the train flow, as a UI run would call it ---------------------------------------------------

@pytest.mark.parametrize("params, env, fragment", [
    ({"symbols": ["DOGE/USDT"]}, {}, "not in TARGET_SYMBOLS"),
    ({"symbols": []}, {}, "empty"),
    ({"symbols": "btc/uſdt"}, {}, "invalid symbol"),
    ({"symbols": {"BTC/USDT": 1}}, {}, "must be a list"),
    ({"timeframes": ["1h", 7]}, {}, "unknown timeframe"),
    ({"lookback": -5}, {}, "invalid lookback -5"),
    ({"lookback": 0}, {}, "invalid lookback 0"),
    ({"lookback": 10**12}, {}, "invalid lookback"),
    ({"lookback": True}, {}, "invalid lookback"),
    ({"timeframes": ["1m"]}, {"ENABLE_MULTI_TIMEFRAMES": "true", "INGEST_TIMEFRAMES": "1m,1h"}, "never predicted"),
])
def test_train_flow_refuses_impossible_parameters(edge: Edge, params: dict[str, Any], env: dict[str, str],
                                                  fragment: str) -> None:
    """The flow body validates before any task runs (so a UI run ends Failed, see the next test)."""
    from coin_core.errors import ConfigError
    from flows.train import train_flow

    for key, value in {"TARGET_SYMBOLS": "BTC/USDT", **env}.items():
        edge.monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=fragment):
        train_flow.fn(**params)


@pytest.mark.parametrize("params, fragment", [({"symbols": ["DOGE/USDT"]}, "no candles stored"),
                                              ({"lookback": -5}, "invalid lookback")])
def test_train_flow_run_ends_failed_not_completed(edge: Edge, prefect_harness: Any, params: dict[str, Any],
                                                  fragment: str) -> None:
    from flows.train import train_flow

    edge.monkeypatch.setenv("TARGET_SYMBOLS", "BTC/USDT,DOGE/USDT")
    state = train_flow(**params, return_state=True)
    assert state.is_failed(), state
    with pytest.raises(Exception, match=fragment):
        state.result()
