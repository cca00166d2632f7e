"""A real `coin-predict ingest` process killed with SIGKILL mid-backfill resumes exactly."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from coin_core.exchange_sim import SimClock, SimExchange
from coin_core.storage.sqlite import SQLiteStore
from tests.fixtures.common import REPO

NOW = datetime(2024, 3, 10, 12, 30, tzinfo=timezone.utc).timestamp()
DAYS = 1000  # 24,000 1h candles: 24 pages


def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM candles").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _ingest(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "coin_core.cli", "ingest", "--symbols", "BTC/USDT"],
                            cwd=env["DATA_DIR"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_sigkill_mid_backfill_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    clock = SimClock()
    clock.set(NOW)
    with SimExchange(("BTC/USDT",), clock=clock) as sim:
        sim.faults.add("latency", count=None, seconds=0.15, path="/api/v3/klines")  # slow pages: time to kill
        env = {**os.environ, "EXCHANGE_API_URL": sim.base_url, "DATA_DIR": str(tmp_path), "STORE": "sqlite",
               "TARGET_SYMBOLS": "BTC/USDT", "TIMEFRAME_POLICY": f'{{"1h": {{"lookback_days": {DAYS}}}}}',
               "PYTHONPATH": str(REPO)}
        db = tmp_path / "candles.sqlite3"
        seen = []
        for threshold in (3_000, 11_000):  # two kills at different depths
            proc = _ingest(env)
            deadline = time.monotonic() + 120
            while _count(db) < threshold and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, f"ingest ended before the kill: {proc.stdout.read()}"
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            seen.append(_count(db))
            assert seen[-1] % 1000 == 0, "a page was stored partially"
        assert seen[0] < seen[1] < DAYS * 24
        sim.faults.clear()
        final = _ingest(env)
        out, _ = final.communicate(timeout=180)
        assert final.returncode == 0, out
        with SQLiteStore(db) as store:
            rows = store.read_candles("BTC/USDT", "1h").values.tolist()
        expected = sim.expected_closed("BTC/USDT", "1h", int(rows[0][0]), 2**62)
        assert len(rows) == DAYS * 24
        assert rows == expected
