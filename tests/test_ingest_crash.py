"""A real `coin-predict ingest` process killed with SIGKILL mid-backfill resumes exactly.

The kill is triggered by the simulated exchange when a given klines request arrives, so how
much was stored before it is exact, not a matter of timing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
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
    victim: list[subprocess.Popen] = []
    kill_at: list[int] = []

    def kill_on_page_request(record) -> None:
        # Deterministic: the process is killed while it waits for klines page N, so exactly the
        # N-1 pages before it were stored (each in one transaction) - no timing involved.
        if record.path == "/api/v3/klines" and kill_at and sim.count("/api/v3/klines") == kill_at[0]:
            os.kill(victim[-1].pid, signal.SIGKILL)

    with SimExchange(("BTC/USDT",), clock=clock, on_request=kill_on_page_request) as sim:
        env = {**os.environ, "EXCHANGE_API_URL": sim.base_url, "DATA_DIR": str(tmp_path), "STORE": "sqlite",
               "TARGET_SYMBOLS": "BTC/USDT", "TIMEFRAME_POLICY": f'{{"1h": {{"lookback_days": {DAYS}}}}}',
               "PYTHONPATH": str(REPO)}
        db = tmp_path / "candles.sqlite3"
        seen = []
        for pages_done in (3, 11):  # two kills at different depths; the second run resumes at page 4
            sim.clear_requests()
            kill_at[:] = [pages_done - (seen[-1] // 1000 if seen else 0) + 1]
            victim.append(_ingest(env))
            out, _ = victim[-1].communicate(timeout=120)
            assert victim[-1].returncode == -signal.SIGKILL, f"ingest was not killed: {out}"
            seen.append(_count(db))
        assert seen == [3_000, 11_000], "a page was lost or stored partially"
        kill_at.clear()
        final = _ingest(env)
        out, _ = final.communicate(timeout=180)
        assert final.returncode == 0, out
        with SQLiteStore(db) as store:
            rows = store.read_candles("BTC/USDT", "1h").values.tolist()
        expected = sim.expected_closed("BTC/USDT", "1h", int(rows[0][0]), 2**62)
        assert len(rows) == DAYS * 24
        assert rows == expected
