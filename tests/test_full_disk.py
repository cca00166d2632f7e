"""D8: a real full disk under DATA_DIR (a small tmpfs, filled to the last byte).

Ingest, forecast and train each report one clean error per series, still try every other
series, and leave status records that tell the truth (never a stale "ok"). The candle store is
the production one, a real InfluxDB whose data lives elsewhere; the state records and model
registry under DATA_DIR are on the full disk. (A SQLite store under a full DATA_DIR cannot even
be opened: that is one StorageError line for the whole command.)
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import pytest

from coin_core import timeframes as tfs
from coin_core.config import Settings
from coin_core.health import (IngestState, PredictionHealth, read_ingest_state, read_prediction_health, write_ingest_state,
                              write_prediction_health)
from coin_core.pipeline import run_forecast, run_train
from coin_core.storage.influx import InfluxStore
from tests.fixtures.disk import SmallDisk, small_disk
from tests.fixtures.site import NOW_MS, make_candles

SERIES = ("BTC/USDT", "ETH/USDT")


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    with small_disk(tmp_path / "disk", size_kb=8192) as mounted:
        yield mounted


@pytest.fixture
def full_cfg(influx_settings: Settings, influx_store: InfluxStore, disk: SmallDisk) -> Settings:
    """1h only, DATA_DIR on the small disk, 200 candles per series in InfluxDB."""
    last_open = tfs.last_closed_open(NOW_MS, "1h")
    for i, symbol in enumerate(SERIES):
        influx_store.write_candles(symbol, "1h", make_candles(200, "1h", last_open, seed=i))
    return influx_settings.model_copy(update={"data_dir": disk.path / "data", "ingest_timeframes": ["1h"]})


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert all("\n" not in r.getMessage() for r in caplog.records), "a log line spans several lines"


def test_forecast_on_a_full_disk_degrades_every_series_honestly(full_cfg: Settings, disk: SmallDisk,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    for symbol in SERIES:  # a previous good run: an "ok" record each
        write_prediction_health(full_cfg.data_dir, symbol, "1h", PredictionHealth(
            status="ok", updated_at=NOW_MS - 3_600_000, last_success_at=NOW_MS - 3_600_000))
    disk.fill()  # no champion yet: each forecast must fit and save one, on a disk with no free byte
    caplog.set_level(logging.WARNING)
    results = run_forecast(full_cfg, now_ms=NOW_MS)
    assert list(results) == [f"{s} 1h" for s in SERIES]  # the second series was tried too
    for symbol in SERIES:
        assert results[f"{symbol} 1h"].startswith("degraded (") and "No space left on device" in results[f"{symbol} 1h"]
        health = read_prediction_health(full_cfg.data_dir, symbol, "1h")
        # Removing the stale "ok" record frees the page the new one needs: it is written.
        assert health is not None and health.status == "degraded", "a failed forecast still reads as ok"
        assert "No space left on device" in (health.last_error or "")
    no_traceback(caplog)


def test_train_on_a_full_disk_fails_each_series_with_one_line(full_cfg: Settings, disk: SmallDisk,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    disk.fill()
    caplog.set_level(logging.WARNING)
    results = run_train(full_cfg, lookback=200)
    assert list(results) == [f"{s} 1h" for s in SERIES]
    for report in results.values():  # every candidate's fit, then the gate: one clean line each
        texts = [*report.fits.values(), report.error or ""]
        assert len(report.fits) == 4 and report.gate is None
        assert all(t.startswith(("failed: cannot write", "gate failed: cannot write")) for t in texts), texts
        assert all("No space left on device" in t and "\n" not in t for t in texts)
    no_traceback(caplog)


def test_ingest_on_a_full_disk_reports_each_series_and_keeps_the_state_true(
        full_cfg: Settings, disk: SmallDisk, sim_exchange, sim_clock, caplog: pytest.LogCaptureFixture) -> None:
    """The exchange fails every series; the error handler's own state write meets the full disk."""
    from coin_core.ingest import run_ingest

    sim_clock.set(NOW_MS / 1000 + 2 * 3600)
    cfg = full_cfg.model_copy(update={"exchange_api_url": sim_exchange.base_url, "exchange_timeout_s": 2.0,
                                      "exchange_max_retries": 1})
    for symbol in SERIES:
        write_ingest_state(cfg.data_dir, symbol, "1h", IngestState(backfill_complete_at=NOW_MS - 86_400_000))
    sim_exchange.faults.add("server_error", count=None, status=502, path="/api/v3/klines")
    disk.fill()
    caplog.set_level(logging.WARNING)
    report = run_ingest(cfg)
    assert [(s.symbol, s.timeframe) for s in report.series] == [(s, "1h") for s in SERIES]
    for series in report.series:
        assert series.error is not None and series.error.startswith("TransientExchangeError") and "\n" not in series.error
        state = read_ingest_state(cfg.data_dir, series.symbol, "1h")
        assert state is None or state.last_error == series.error[:300], "the state hides the failure"
    no_traceback(caplog)
