"""prefect.yaml deployed to a REAL ``prefect server`` and run by a REAL process worker.

Prefect silently ignores keys it does not know in prefect.yaml, so the file is checked twice:
statically (known keys only) and by reading every deployment back from the server. Then a
worker runs ``cycle/cycle-1h`` end to end against the simulated exchange, and two train runs
started together prove the ``train`` global concurrency limit really serialises them.
One server per module, everything killed on teardown.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml
from pytest_httpserver import HTTPServer

from coin_core.exchange_sim import SimExchange
from tests.fixtures.common import REPO, free_port, require

BIN = Path(sys.executable).parent
PREFECT_YAML = REPO / "prefect.yaml"
POOL = "coin-predict"
EXPECTED = {  # deployment -> (cron, schedule active, parameters)
    "cycle-1h": ("1 * * * *", True, {"timeframe": "1h"}),
    "cycle-1d": ("5 0 * * *", False, {"timeframe": "1d"}),
    "cycle-1w": ("10 0 * * 1", False, {"timeframe": "1w"}),
    "cycle-1M": ("15 0 1 * *", False, {"timeframe": "1M"}),
    "train": ("30 2 * * 1", True, {}),
    "monitor": ("*/5 * * * *", True, {}),
    "retrain-on-trigger": ("40 * * * *", True, {"triggered_only": True}),
    "rollback": (None, None, {"timeframe": "1h"}),
    "evaluate": ("20 3 * * *", True, {}),
    "ingest": (None, None, {}),
    "forecast": (None, None, {}),
}
DEPLOYMENT_KEYS = {"name", "entrypoint", "description", "tags", "parameters", "schedules", "work_pool",
                   "version", "enforce_parameter_schema"}
SCHEDULE_KEYS = {"cron", "timezone", "active"}
WORK_POOL_KEYS = {"name", "work_queue_name", "job_variables"}
TOP_KEYS = {"name", "prefect-version", "build", "push", "pull", "deployments", "definitions"}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _yaml() -> dict[str, Any]:
    return yaml.safe_load(PREFECT_YAML.read_text(encoding="utf-8"))


def test_prefect_yaml_uses_only_keys_prefect_reads() -> None:
    config = _yaml()
    assert set(config) <= TOP_KEYS, set(config) - TOP_KEYS
    assert [list(step) for step in config["pull"]] == [["prefect.deployments.steps.set_working_directory"]]
    names = [d["name"] for d in config["deployments"]]
    assert sorted(names) == sorted(EXPECTED)
    for dep in config["deployments"]:
        assert set(dep) <= DEPLOYMENT_KEYS, (dep["name"], set(dep) - DEPLOYMENT_KEYS)
        assert set(dep["work_pool"]) <= WORK_POOL_KEYS and dep["work_pool"]["name"] == POOL
        path, _, func = dep["entrypoint"].partition(":")
        assert (REPO / path).is_file() and f"def {func}(" in (REPO / path).read_text()
        for schedule in dep["schedules"]:
            assert set(schedule) <= SCHEDULE_KEYS, (dep["name"], set(schedule) - SCHEDULE_KEYS)
            assert schedule["timezone"] == "UTC", "cron is evaluated in UTC, explicitly"


@dataclass
class Server:
    url: str
    env: dict[str, str]
    home: Path
    procs: list[subprocess.Popen]

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def cli(self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
        done = subprocess.run([str(BIN / "prefect"), *args], cwd=cwd or self.home, env=env or self.env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    def spawn(self, args: list[str], log: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        out = open(self.home / log, "wb")
        proc = subprocess.Popen(args, cwd=self.home, env=env or self.env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require((BIN / "prefect").is_file(), "the prefect CLI")
    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PREFECT_HOME": str(home / "home"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_LOCAL_STORAGE_PATH": str(home / "results"), "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_CLI_PROMPT": "false", "PREFECT_WORKER_QUERY_SECONDS": "1",
    })
    server = Server(f"http://127.0.0.1:{port}/api", env, home, [])
    proc = server.spawn([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], "server.log")
    try:
        deadline = time.monotonic() + 240  # a loaded 2-core machine needs minutes for the migrations
        while time.monotonic() < deadline:
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("prefect server did not become healthy in 240 s")
        yield server
    finally:
        for p in reversed(server.procs):
            _stop(p)


@pytest.fixture(scope="module")
def deployed(prefect_server: Server) -> dict[str, dict[str, Any]]:
    """Work pool, ACTIVE concurrency limit and ``prefect deploy --all`` from a copy of the repo's file."""
    project = prefect_server.home / "project"
    project.mkdir()
    shutil.copy(PREFECT_YAML, project / "prefect.yaml")
    shutil.copytree(REPO / "flows", project / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    prefect_server.cli("work-pool", "create", POOL, "--type", "process")
    done = subprocess.run([sys.executable, "-m", "flows.setup"], cwd=project, env=prefect_server.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "active=True" in done.stdout, done.stderr[-2000:]
    prefect_server.cli("--no-prompt", "deploy", "--all", cwd=project)
    with prefect_server.api() as api:
        found = api.post("/deployments/filter", json={}).json()
    return {d["name"]: d for d in found}


@pytest.mark.prefect_server
def test_deployments_read_back_as_intended(prefect_server: Server, deployed: dict[str, dict[str, Any]]) -> None:
    assert set(deployed) == set(EXPECTED)
    for name, (cron, active, params) in EXPECTED.items():
        dep = deployed[name]
        assert dep["work_pool_name"] == POOL and dep["parameters"] == params and not dep["paused"], name
        assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory":
                                      {"directory": "{{ $COIN_PREDICT_HOME }}"}}], "resolved on the worker"
        if cron is None:
            assert dep["schedules"] == []
            continue
        [schedule] = dep["schedules"]
        assert schedule["schedule"]["cron"] == cron and schedule["schedule"]["timezone"] == "UTC", name
        assert schedule["active"] is active, name
    with prefect_server.api() as api:
        limit = api.get("/v2/concurrency_limits/train").json()
    assert limit["active"] is True and limit["limit"] == 1
    train = deployed["train"]
    assert train["enforce_parameter_schema"] is True
    described = {k: p.get("description", "") for k, p in train["parameter_openapi_schema"]["properties"].items()}
    assert set(described) == {"symbols", "timeframes", "lookback", "triggered_only"} and all(len(d) > 20 for d in described.values()), described
    assert "TARGET_SYMBOLS" in described["symbols"] and "min samples" in described["lookback"]


@pytest.mark.prefect_server
def test_server_schedules_only_active_deployments_at_utc_boundaries(
    prefect_server: Server, deployed: dict[str, dict[str, Any]]
) -> None:
    by_id = {d["id"]: name for name, d in deployed.items()}
    deadline, runs = time.monotonic() + 30, []
    with prefect_server.api() as api:
        while time.monotonic() < deadline:
            runs = api.post("/flow_runs/filter", json={"flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}}).json()
            if {by_id.get(r["deployment_id"]) for r in runs} >= {"cycle-1h", "train", "monitor"}:
                break
            time.sleep(1)
    names = {by_id.get(r["deployment_id"]) for r in runs}
    assert {"cycle-1h", "train", "monitor"} <= names and not names & {"cycle-1d", "cycle-1w", "cycle-1M", "ingest", "forecast"}
    monitor = [r["expected_start_time"] for r in runs if by_id.get(r["deployment_id"]) == "monitor"]
    assert all(re.search(r"T\d\d:\d[05]:00(\+00:00|Z)$", t) for t in monitor), monitor
    hourly = [r["expected_start_time"] for r in runs if by_id.get(r["deployment_id"]) == "cycle-1h"]
    assert all(re.search(r"T\d\d:01:00(\+00:00|Z)$", t) for t in hourly), hourly


def _create_run(api: httpx.Client, deployment_id: str) -> str:
    """A flow run of the deployment, as the UI's "Run" button asks for it. A busy server on two
    shared cores may answer 5xx/429 once; Prefect's own client retries those, so this does too."""
    for attempt in range(4):
        response = api.post(f"/deployments/{deployment_id}/create_flow_run", json={})
        if response.status_code not in (429, 500, 502, 503) or attempt == 3:
            break
        time.sleep(1 + attempt)
    assert response.status_code == 201, f"create_flow_run answered {response.status_code}: {response.text[:500]}"
    return str(response.json()["id"])


def _wait(api: httpx.Client, run_ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        runs = [api.get(f"/flow_runs/{rid}").json() for rid in run_ids]
        if all(r["state_type"] in TERMINAL for r in runs) or time.monotonic() > deadline:
            return runs
        time.sleep(1)


@pytest.fixture(scope="module")
def worker(prefect_server: Server, deployed: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A process worker on the pool, with the env a production worker has (store, site, exchange)."""
    site = tmp_path_factory.mktemp("worker-site")
    with SimExchange(("BTC/USDT", "ETH/USDT")) as sim:
        env = {k: v for k, v in prefect_server.env.items() if not k.startswith(("TARGET_", "INGEST_", "EXCHANGE_", "INFLUXDB_"))}
        env.update({
            "COIN_PREDICT_HOME": str(REPO), "STORE": "sqlite", "DATA_DIR": str(site / "data"),
            "PUBLIC_DIR": str(site / "public"), "EXCHANGE_API_URL": sim.base_url,
            "TIMEFRAME_POLICY": '{"1h": {"lookback_days": 14}}',
        })
        proc = prefect_server.spawn([str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--type", "process"],
                                    "worker.log", env)
        yield {"public": site / "public", "proc": proc, "sim": sim}
        _stop(proc)


@pytest.mark.prefect_server
def test_worker_runs_cycle_1h_end_to_end(prefect_server: Server, worker: dict[str, Any]) -> None:
    out = prefect_server.cli("deployment", "run", "cycle/cycle-1h")
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", out).group(1)
    with prefect_server.api() as api:
        [run] = _wait(api, [run_id], 240)
        assert run["state_type"] == "COMPLETED", (run["state"], (prefect_server.home / "worker.log").read_text()[-4000:])
        artifacts = api.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}}).json()
    assert [a["key"] for a in artifacts if a["type"] == "table"] == ["cycle-1h"]
    public: Path = worker["public"]
    for name in ("index.html", "manifest.json", "prediction_BTC-USDT_1h.json", "history_ETH-USDT_1h.json"):
        assert (public / name).is_file(), name


@pytest.mark.prefect_server
def test_two_train_runs_started_together_never_overlap(prefect_server: Server, deployed: dict[str, Any],
                                                       worker: dict[str, Any]) -> None:
    train_id = deployed["train"]["id"]
    with prefect_server.api() as api:
        ids = [_create_run(api, train_id) for _ in range(2)]
        runs = _wait(api, ids, 300)
        assert [r["state_type"] for r in runs] == ["COMPLETED", "COMPLETED"], [r["state"] for r in runs]
        spans = []
        for rid in ids:
            tasks = api.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [rid]}}}).json()
            # Cached task runs never start: only what really ran counts.
            work = [t for t in tasks if t["start_time"] and t["end_time"]
                    and not t["name"].startswith("prepare-train-limit")]
            assert work, "each run did its work"
            spans.append((min(t["start_time"] for t in work), max(t["end_time"] for t in work)))
        limit = api.get("/v2/concurrency_limits/train").json()
    flows = sorted((r["start_time"], r["end_time"]) for r in runs)
    assert flows[1][0] < flows[0][1], f"the worker did not run them concurrently, nothing proven: {flows}"
    (_, first_end), (second_start, _) = sorted(spans)
    assert first_end <= second_start, f"train work overlapped: {spans}"
    assert limit["active_slots"] == 0


# ---- alerts: the webhook block and the flow-run notification, on the real server -------------
FAILING_RUN = """
from prefect import flow, tags

@flow(name="doomed")
def doomed():
    raise RuntimeError("boom for the notification test")

with tags("coin-predict"):
    doomed(return_state=True)
"""

MONITOR_RUN = """
import json, time
from coin_core.metrics import RunRecord, record_run
from flows.monitor import monitor_flow
now = int(time.time() * 1000)
record_run("{data}", RunRecord("cycle 1h", now - 4 * 3600_000, 3.0), now_ms=now)
print(json.dumps(monitor_flow(block="custom-webhook/coin-predict-alerts")))
"""


def _python(server: Server, code_or_args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *code_or_args], cwd=REPO, env=env or server.env,
                          capture_output=True, text=True, timeout=180)


def _wait_for(httpserver: HTTPServer, predicate: Any, timeout_s: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        bodies = [json.loads(req.data) for req, _ in httpserver.log]
        if any(predicate(b) for b in bodies):
            return bodies
        time.sleep(0.5)
    pytest.fail(f"no matching webhook call in {timeout_s}s: {[req.data for req, _ in httpserver.log]}")


@pytest.mark.prefect_server
def test_setup_creates_block_and_run_notification_and_both_reach_the_webhook(
        prefect_server: Server, httpserver: HTTPServer, tmp_path: Path) -> None:
    """Last in the module: the Failed/Crashed policy it creates would notify on later runs too."""
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    done = _python(prefect_server, ["-m", "flows.setup", "--alert-webhook", httpserver.url_for("/hook")])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ALERT_BLOCK=custom-webhook/coin-predict-alerts" in done.stdout and "Failed/Crashed" in done.stdout
    again = _python(prefect_server, ["-m", "flows.setup", "--alert-webhook", httpserver.url_for("/hook")])
    assert again.returncode == 0
    policy_line = [line for line in done.stdout.splitlines() if "flow-run notification" in line]
    assert policy_line and policy_line[0] in again.stdout, "idempotent: the same policy, not a second one"
    with prefect_server.api() as api:
        policies = api.post("/flow_run_notification_policies/filter", json={}).json()
    assert len(policies) == 1 and sorted(policies[0]["state_names"]) == ["Crashed", "Failed"]
    assert policies[0]["tags"] == ["coin-predict"] and policies[0]["is_active"]

    bad = _python(prefect_server, ["-m", "flows.setup", "--alert-block", "custom-webhook/nobody-made-this"])
    assert bad.returncode == 2 and "not found on the Prefect server" in bad.stderr and "Traceback" not in bad.stderr

    assert _python(prefect_server, ["-c", FAILING_RUN]).returncode == 0
    bodies = _wait_for(httpserver, lambda b: "doomed" in b.get("text", "") and "Failed" in b["text"])
    assert any(b["source"] == "coin-predict" for b in bodies)

    env = {**prefect_server.env, "DATA_DIR": str(tmp_path / "data"), "PUBLIC_DIR": str(tmp_path / "public"),
           "TARGET_SYMBOLS": "BTC/USDT"}
    ran = _python(prefect_server, ["-c", MONITOR_RUN.format(data=tmp_path / "data")], env=env)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "heartbeat:cycle 1h#1" in json.loads(ran.stdout.strip().splitlines()[-1])["sent"]
    _wait_for(httpserver, lambda b: b.get("event_id") == "heartbeat:cycle 1h#1", timeout_s=5)
