"""Several process workers on one work pool (docs/deployment.md), proven on a real server.

Two ``prefect worker`` processes poll the pool; two ``cycle-1h`` runs and a manual ``ingest``
are created at once. Both workers take runs, every run completes, and the global ``cycle`` slot
(held by cycles and manual ingests alike) keeps their series work from interleaving.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from coin_core.exchange_sim import SimExchange
from tests.fixtures.common import REPO
from tests.test_deployment import BIN, POOL, Server, _stop, _wait, deployed, prefect_server  # noqa: F401

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_workers(prefect_server: Server, deployed: dict[str, Any],  # noqa: F811
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two process workers sharing one store, one site and one exchange (one machine)."""
    site = tmp_path_factory.mktemp("two-workers")
    # A slow exchange (4 s a round trip) keeps each run live for tens of seconds, so the runs the
    # two workers start overlap even when a flow process takes half a minute to start.
    with SimExchange(("BTC/USDT", "ETH/USDT"), latency_s=4.0) as sim:
        env = {k: v for k, v in prefect_server.env.items() if not k.startswith(("TARGET_", "INGEST_", "EXCHANGE_", "INFLUXDB_"))}
        env.update({
            "COIN_PREDICT_HOME": str(REPO), "STORE": "sqlite", "DATA_DIR": str(site / "data"),
            "PUBLIC_DIR": str(site / "public"), "EXCHANGE_API_URL": sim.base_url, "EXCHANGE_TIMEOUT_S": "30",
            "TIMEFRAME_POLICY": '{"1h": {"lookback_days": 14}}',
        })
        procs = [prefect_server.spawn([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process",
                                       "--name", f"worker-{i}", "--limit", "1"], f"worker-{i}.log", env)
                 for i in range(2)]
        yield {"public": site / "public", "logs": [prefect_server.home / f"worker-{i}.log" for i in range(2)]}
        for proc in procs:
            _stop(proc)


def _span(api: Any, run_id: str) -> tuple[str, str]:
    tasks = api.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [run_id]}}}).json()
    work = [t for t in tasks if t["start_time"] and t["end_time"] and t["name"].startswith(("cycle ", "ingest ", "publish"))]
    assert work, f"run {run_id} did no series work"
    return min(t["start_time"] for t in work), max(t["end_time"] for t in work)


def test_two_workers_share_the_pool_and_never_interleave_cycles(prefect_server: Server, deployed: dict[str, Any],  # noqa: F811
                                                                two_workers: dict[str, Any]) -> None:
    with prefect_server.api() as api:
        ids = [api.post(f"/deployments/{deployed[name]['id']}/create_flow_run", json={}).json()["id"]
               for name in ("cycle-1h", "cycle-1h", "ingest")]
        runs = _wait(api, ids, 600)
        logs = "\n".join(p.read_text(errors="replace")[-20000:] for p in two_workers["logs"])
        assert [r["state_type"] for r in runs] == ["COMPLETED"] * 3, ([r["state"] for r in runs], logs[-4000:])
        spans = sorted(_span(api, rid) for rid in ids)
        limit = api.get("/v2/concurrency_limits/cycle").json()
    by_worker = [set(re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", p.read_text(errors="replace")))
                 & set(ids) for p in two_workers["logs"]]
    assert all(by_worker), f"each worker took a run: {by_worker}"
    flows = sorted((r["start_time"], r["end_time"]) for r in runs)
    assert any(b[0] < a[1] for a, b in zip(flows, flows[1:])), f"no two runs were live at once, nothing proven: {flows}"
    for (_, first_end), (second_start, _) in zip(spans, spans[1:]):
        assert first_end <= second_start, f"series work of two runs interleaved: {spans}"
    assert limit["active_slots"] == 0
    assert (two_workers["public"] / "index.html").is_file()
