"""Alert set-up on a REAL ``prefect server``: ``python -m flows.setup --alert-webhook`` creates the
webhook block and a Failed/Crashed flow-run notification policy; the server itself then notifies a
real webhook receiver (pytest-httpserver) of a failed run, and the monitor flow, run against that
server, delivers through the same block."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from tests.fixtures.common import REPO
from tests.test_deployment import Server, prefect_server  # noqa: F401  (module-scoped real server)

pytestmark = pytest.mark.prefect_server

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


def test_setup_creates_block_and_run_notification_and_both_reach_the_webhook(
        prefect_server: Server, httpserver: HTTPServer, tmp_path) -> None:  # noqa: F811, ANN001
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
