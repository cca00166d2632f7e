"""The README's main command, for real: `coin-predict demo` from a clean directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.fixtures.common import REPO


def test_demo_runs_the_whole_product_offline(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TARGET_", "STORE", "DATA_DIR", "PUBLIC_DIR"))}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-m", "coin_core.cli", "demo", "--lookback-days", "30"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    for step in ("backfilling", "training", "forecasting", "publishing", "Site:"):
        assert step in out.stdout
    manifest = json.loads((tmp_path / "public" / "manifest.json").read_text())
    assert [s["symbol"] for s in manifest["series"]] == ["BTC/USDT", "ETH/USDT"]
    assert all(s["status"] == "fresh" for s in manifest["series"]), manifest
    assert (tmp_path / "public" / "prediction_BTC-USDT_1h.json").exists()
    assert (tmp_path / "data" / "candles.sqlite3").exists()
    models = (tmp_path / "public" / "models.html").read_text()
    assert models.count("data-trained") == 2 and "(720 candles)" in models  # 30 days of 1h, per series
