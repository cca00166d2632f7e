"""Unit tests of the small pure pieces: timeframes, symbols, candle validation, config."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from coin_core import timeframes as tfs
from coin_core.candles import to_frame, validate_candles
from coin_core.config import load_settings
from coin_core.errors import ConfigError, DataValidationError
from coin_core.policy import policy_table_markdown
from coin_core.symbols import parse_symbols, slug, unslug
from tests.fixtures.common import REPO


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.mark.parametrize(
    "tf, ts, floor, nxt",
    [
        ("1m", ms(2024, 1, 1, 10, 5, 30), ms(2024, 1, 1, 10, 5), ms(2024, 1, 1, 10, 6)),
        ("1h", ms(2024, 1, 1, 10, 59, 59), ms(2024, 1, 1, 10), ms(2024, 1, 1, 11)),
        ("1d", ms(2024, 2, 29, 23, 59), ms(2024, 2, 29), ms(2024, 3, 1)),
        ("1w", ms(2024, 1, 3, 12), ms(2024, 1, 1), ms(2024, 1, 8)),  # Wed -> Mon
        ("1w", ms(2024, 1, 1), ms(2024, 1, 1), ms(2024, 1, 8)),
        ("1M", ms(2024, 12, 31, 23), ms(2024, 12, 1), ms(2025, 1, 1)),  # year rollover
        ("1M", ms(2024, 2, 15), ms(2024, 2, 1), ms(2024, 3, 1)),
    ],
)
def test_boundaries(tf, ts, floor, nxt) -> None:
    assert tfs.floor(ts, tf) == floor
    assert tfs.next_open(ts, tf) == nxt
    assert tfs.is_aligned(floor, tf) and (floor == ts or not tfs.is_aligned(ts, tf))


def test_month_arithmetic_and_counts() -> None:
    assert tfs.add(ms(2024, 1, 1), "1M", 13) == ms(2025, 2, 1)
    assert tfs.add(ms(2024, 3, 1), "1M", -3) == ms(2023, 12, 1)
    assert tfs.count_between(ms(2024, 1, 1), ms(2024, 12, 1), "1M") == 12
    assert tfs.count_between(ms(2024, 1, 1), ms(2024, 1, 2), "1h") == 25
    assert tfs.count_between(ms(2024, 1, 1, 0, 30), ms(2024, 1, 1, 0, 40), "1h") == 0
    assert list(tfs.expected_opens(ms(2024, 1, 1), ms(2024, 1, 1, 2), "1h")) == [ms(2024, 1, 1, h) for h in range(3)]


def test_last_closed_open() -> None:
    assert tfs.last_closed_open(ms(2024, 1, 1, 11, 0), "1h") == ms(2024, 1, 1, 10)
    assert tfs.last_closed_open(ms(2024, 1, 1, 10, 59), "1h") == ms(2024, 1, 1, 9)
    assert tfs.last_closed_open(ms(2024, 1, 10), "1w") == ms(2024, 1, 1)


def test_parse_timeframe_rejects_unknown() -> None:
    with pytest.raises(ConfigError, match="'2h'"):
        tfs.parse_timeframe("2h")


def test_symbols_normalised_deduplicated_and_slugged() -> None:
    assert parse_symbols(" btc/usdt ,ETH/USDT,BTC/USDT,") == ["BTC/USDT", "ETH/USDT"]
    assert slug("btc/usdt") == "BTC-USDT" and unslug("BTC-USDT") == "BTC/USDT"
    for bad in ["../etc/passwd", "BTC-USDT", "<script>/X", "B/USDT", "BTC/USDT/X"]:
        with pytest.raises(ConfigError, match="invalid symbol"):
            parse_symbols(["ETH/USDT", bad])
    with pytest.raises(ConfigError):
        unslug("../BTC")


def test_candle_validation_reasons_and_in_progress() -> None:
    h = 3_600_000
    frame = to_frame([
        [h, 1, 2, 0.5, 1.5, 10], [2 * h, 1, 2, 0.5, 1.5, 10], [2 * h, 1, 2, 0.5, 1.5, 10],  # identical repeat
        [3 * h + 1, 1, 2, 1, 1, 1], [4 * h, "x", 1, 1, 1, 1], [5 * h, 1, 0.5, 1, 1, 1],
        [6 * h, -1, 1, 1, 1, 1], [7 * h, 1, 2, 1, 1, -1], [8 * h, 1, 2, 1, 1, 1], [8 * h, 1, 3, 1, 1, 1],
        [9 * h, 1, 2, 1, 1, 1],
    ])
    report = validate_candles(frame, "1h", now_ms=9 * h + 5)
    assert report.valid["ts"].tolist() == [h, 2 * h]
    assert report.in_progress == 1
    assert sorted(r.reason for r in report.rejected) == sorted([
        "timestamp not aligned to 1h", "non-finite value", "high below open/close", "non-positive price",
        "negative volume", "conflicting duplicate timestamp", "conflicting duplicate timestamp",
    ])


def test_candle_frame_needs_six_fields() -> None:
    with pytest.raises(DataValidationError):
        to_frame([[1, 2, 3]])


def test_settings_errors_name_the_entry(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TARGET_SYMBOLS", "BTC/USDT, ../x")
    with pytest.raises(ConfigError, match=r"\.\./x"):
        load_settings()
    monkeypatch.setenv("TARGET_SYMBOLS", "BTC/USDT")
    monkeypatch.setenv("INGEST_TIMEFRAMES", "1h,1d")
    with pytest.raises(ConfigError, match="ENABLE_MULTI_TIMEFRAMES"):
        load_settings()
    monkeypatch.setenv("ENABLE_MULTI_TIMEFRAMES", "true")
    assert load_settings().ingest_timeframes == ["1h", "1d"]
    monkeypatch.setenv("TIMEFRAME_POLICY", '{"1h": {"horizon": -1}}')
    with pytest.raises(ConfigError, match="1h"):
        load_settings()
    monkeypatch.setenv("TIMEFRAME_POLICY", '{"1h": {"horizon": 48}}')
    assert load_settings().policy("1h").horizon == 48


def test_secrets_never_printed(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INFLUXDB_TOKEN", "super-secret-token-value-123")
    settings = load_settings()
    assert "super-secret-token-value-123" not in repr(settings)
    assert "super-secret-token-value-123" not in str(settings.redacted())


def test_dotenv_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TARGET_SYMBOLS", raising=False)
    (tmp_path / ".env").write_text("TARGET_SYMBOLS=sol/usdt\n")
    assert load_settings().target_symbols == ["SOL/USDT"]


def test_policy_table_in_docs_matches_code() -> None:
    assert policy_table_markdown() in (REPO / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize("tf", tfs.TIMEFRAMES)
def test_vectorised_boundaries_match_scalar(tf) -> None:
    import pandas as pd

    opens = [tfs.add(ms(2023, 11, 27), tf, k) for k in range(-3, 40)]
    odd = [o + 60_000 * 7 + 1 for o in opens]
    series = pd.Series(opens + odd)
    assert tfs.aligned_mask(series, tf).tolist() == [tfs.is_aligned(v, tf) for v in opens + odd]
    assert tfs.close_times(pd.Series(opens), tf).tolist() == [tfs.close_time(v, tf) for v in opens]


def test_series_and_narrowed_settings(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(target_symbols="BTC/USDT,ETH/USDT", ingest_timeframes="1m,1h", enable_multi_timeframes=True)
    assert settings.series() == [("BTC/USDT", "1m"), ("BTC/USDT", "1h"), ("ETH/USDT", "1m"), ("ETH/USDT", "1h")]
    assert settings.series(predicted_only=True) == [("BTC/USDT", "1h"), ("ETH/USDT", "1h")]
    assert settings.narrowed([" eth/usdt"], ["1h"]).series() == [("ETH/USDT", "1h")]
    assert settings.narrowed().series() == settings.series()
    with pytest.raises(ConfigError, match="invalid symbol"):
        settings.narrowed(["../x"])
