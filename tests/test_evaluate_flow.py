"""The evaluate flow and CLI command, run for real (Prefect test harness, SQLite store, real fits)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from coin_core.cli import main
from coin_core.config import Settings, load_settings
from coin_core.evaluation import load_evaluation
from coin_core.forecast.bands import load_band_state
from coin_core.storage.sqlite import SQLiteStore
from coin_core.timeframes import from_datetime
from flows import evaluate_flow
from tests.fixtures.forecast_fixtures import walk_candles

pytestmark = pytest.mark.usefixtures("prefect_harness")

LATEST = from_datetime(datetime(2025, 3, 1, 12, tzinfo=timezone.utc))


@pytest.fixture
def eval_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """BTC with ~6 weeks of hours, ETH with too few; a 6-step horizon keeps Prophet's fits few."""
    env = {"DATA_DIR": str(settings.data_dir), "PUBLIC_DIR": str(settings.public_dir),
           "TARGET_SYMBOLS": "BTC/USDT,ETH/USDT", "TIMEFRAME_POLICY": json.dumps({"1h": {"horizon": 6}})}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with SQLiteStore(settings.data_dir / "candles.sqlite3") as store:
        store.write_candles("BTC/USDT", "1h", walk_candles("1h", 1000, LATEST))
        store.write_candles("ETH/USDT", "1h", walk_candles("1h", 200, LATEST, seed=3))
    return load_settings()


async def _artifact_rows(flow_run_id: Any) -> list[dict[str, Any]]:
    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    tables = [a for a in found if a.type == "table"]
    assert [a.key for a in tables] == ["evaluate-summary"]
    data = tables[0].data
    return json.loads(data) if isinstance(data, str) else data


def test_evaluate_flow_scores_every_model_and_reports_short_series(eval_env: Settings) -> None:
    state = evaluate_flow(origins=50, workers=1, return_state=True)
    assert state.is_completed(), state.message
    rows = asyncio.run(_artifact_rows(state.state_details.flow_run_id))
    btc = {r["model"]: r for r in rows if r["series"] == "BTC/USDT 1h"}
    assert set(btc) == {"naive", "drift", "prophet", "ets"} and btc["naive"]["mase"] == 1.0
    assert all(r["origins"] == 50 and 0 <= r["cov80"] <= 1 for r in btc.values())
    eth = [r for r in rows if r["series"] == "ETH/USDT 1h"]
    assert [r["status"] for r in eth] == ["insufficient_data"] and "200 candle(s)" in eth[0]["note"]
    stored = load_evaluation(eval_env, "BTC/USDT", "1h")
    assert stored is not None and round(stored.scores["prophet"].mase, 3) == btc["prophet"]["mase"]
    for name in btc:  # every model gets its backtest band state to start serving from
        assert load_band_state(eval_env, "BTC/USDT", "1h", name) is not None


def test_evaluate_command_prints_a_line_per_model(eval_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--symbols", "BTC/USDT", "--origins", "50", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("series=BTC/USDT 1h") for line in lines)
    assert any("model=naive" in line and "mase=1.0" in line for line in lines)
    assert main(["evaluate", "--symbols", "ETH/USDT", "--origins", "50"]) == 1  # insufficient, no crash
    assert "status=insufficient_data" in capsys.readouterr().out
    assert main(["evaluate", "--symbols", "BTC/USDT", "--origins", "0"]) == 2
    assert "origins" in capsys.readouterr().err
