"""The evaluate flow, run for real (Prefect test harness, SQLite store, real fits)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from coin_core.config import Settings
from coin_core.evaluation import load_evaluation
from coin_core.forecast.bands import load_band_state
from flows import evaluate_flow
from tests.test_evaluation import eval_env  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("prefect_harness")


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
