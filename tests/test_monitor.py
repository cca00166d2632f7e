"""The monitor: alert state machine over a real status picture (SQLite store), the outbox across
crashes, delivery through a real Prefect notification block to a real webhook receiver
(pytest-httpserver), and the monitor flow on the Prefect test harness."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from coin_core.alerts import book_path, load_book
from coin_core.config import Settings, load_settings
from coin_core.errors import ConfigError, DataValidationError, LockError
from coin_core.metrics import RunRecord, read_runs, record_run
from coin_core.monitor import monitor_lock, run_monitor
from tests.fixtures.common import free_port
from tests.fixtures.site import SiteWorld
from tests.test_flows import _artifact_rows, flow_env  # noqa: F401  (fixture: a worker's environment)

H = 3_600_000
MIN = 60_000


def beat(settings: Settings, now_ms: int) -> None:
    """A cycle of 1h finished at ``now_ms`` (what the cycle flow records)."""
    record_run(settings.data_dir, RunRecord("cycle 1h", now_ms - 5_000, 5.0), now_ms=now_ms)


class Inbox:
    def __init__(self) -> None:
        self.messages: list = []

    def __call__(self, msg) -> None:  # noqa: ANN001
        self.messages.append(msg)

    def take(self) -> list[tuple[str, str]]:
        out = [(m.key, m.kind) for m in self.messages]
        self.messages.clear()
        return out


@pytest.fixture
def world(site_world: SiteWorld) -> SiteWorld:
    site_world.settings = site_world.settings.model_copy(update={"alert_repeat_s": 3 * 3600, "alert_escalate_s": 4 * 3600})
    return site_world


def test_a_stale_series_alerts_once_worsens_escalates_repeats_and_resolves(world: SiteWorld) -> None:
    settings, t0, inbox = world.settings, world.now_ms, Inbox()

    def tick(now: int) -> list[tuple[str, str]]:
        beat(settings, now)
        run_monitor(settings, now_ms=now, send=inbox)
        return inbox.take()

    assert tick(t0) == []
    btc, eth = "freshness:BTC/USDT 1h", "freshness:ETH/USDT 1h"
    assert sorted(tick(t0 + 2 * H)) == [(btc, "alert"), (eth, "alert")]  # 75 min soft limit passed
    assert tick(t0 + 2 * H + 5 * MIN) == [], "a firing alert is not repeated before ALERT_REPEAT_S"
    assert sorted(tick(t0 + 7 * H)) == [(btc, "worse"), (eth, "worse")]  # 6 h hard limit passed
    assert sorted(tick(t0 + 7 * H + 5 * MIN)) == [(btc, "escalated"), (eth, "escalated")]  # bad > 4 h
    assert tick(t0 + 9 * H) == []
    assert sorted(tick(t0 + 10 * H + 6 * MIN)) == [(btc, "repeat"), (eth, "repeat")]  # 3 h after the last
    world.now_ms = t0 + 11 * H
    world.seed_series("BTC/USDT", start=60_000.0)
    world.seed_series("ETH/USDT", start=3_000.0)
    assert sorted(tick(t0 + 11 * H)) == [(btc, "resolved"), (eth, "resolved")]
    assert tick(t0 + 11 * H + 5 * MIN) == []
    book = load_book(settings.data_dir)
    ids = [m.event_id for m in book.outbox if m.key == btc]
    assert ids == [f"{btc}#{i}" for i in range(1, 6)] and all(m.channel == "webhook" for m in book.outbox)
    assert "RESOLVED freshness BTC/USDT 1h" in book.outbox[-1].text or "RESOLVED" in book.outbox[-2].text


def test_heartbeat_waits_two_periods_then_alerts_and_resolves_on_the_next_cycle(world: SiteWorld) -> None:
    settings, t0, inbox = world.settings, world.now_ms, Inbox()

    def beats() -> list[tuple[str, str]]:
        return [(k, kind) for k, kind in inbox.take() if k.startswith("heartbeat:")]

    run_monitor(settings, now_ms=t0, send=inbox)
    run_monitor(settings, now_ms=t0 + 2 * H - MIN, send=inbox)
    assert beats() == [], "a fresh install is not late before two periods"
    run_monitor(settings, now_ms=t0 + 2 * H + MIN, send=inbox)
    assert beats() == [("heartbeat:cycle 1h", "alert")]
    beat(settings, t0 + 2 * H + 2 * MIN)
    run_monitor(settings, now_ms=t0 + 2 * H + 3 * MIN, send=inbox)
    assert beats() == [("heartbeat:cycle 1h", "resolved")]
    assert "no cycle has finished yet" in load_book(settings.data_dir).outbox[-2].text


def test_storage_past_its_warning_alerts(world: SiteWorld) -> None:
    inbox = Inbox()
    size = world.store.size_bytes()
    tight = world.settings.model_copy(update={"storage_budget_gb": size / 0.95 / 1024**3, "storage_warn_ratio": 0.9})
    beat(tight, world.now_ms)
    report = run_monitor(tight, now_ms=world.now_ms, send=inbox)
    assert inbox.take() == [("storage:budget", "alert")]
    assert "95%" in report.queued[0].text and report.picture.storage.warning


def test_a_series_removed_from_the_settings_is_resolved_not_forgotten(world: SiteWorld) -> None:
    inbox = Inbox()
    beat(world.settings, world.now_ms + 2 * H)
    run_monitor(world.settings, now_ms=world.now_ms + 2 * H, send=inbox)
    assert len(inbox.take()) == 2
    narrowed = world.settings.model_copy(update={"target_symbols": ["BTC/USDT"]})
    run_monitor(narrowed, now_ms=world.now_ms + 2 * H + MIN, send=inbox)
    assert inbox.take() == [("freshness:ETH/USDT 1h", "resolved")]
    assert "freshness:ETH/USDT 1h" not in load_book(narrowed.data_dir).alerts


def test_a_crash_before_the_send_loses_nothing_and_after_it_resends_the_same_event_id(
        world: SiteWorld, httpserver: HTTPServer) -> None:
    import httpx

    settings, now = world.settings, world.now_ms + 2 * H
    beat(settings, now)

    def killed_before(msg) -> None:  # noqa: ANN001
        raise SystemExit("killed")  # not an Exception: nothing catches it, like a SIGKILL

    with pytest.raises(SystemExit):
        run_monitor(settings, now_ms=now, send=killed_before)
    assert len(load_book(settings.data_dir).pending) == 2, "intent recorded before the send"

    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")

    def post(msg) -> None:  # noqa: ANN001
        httpx.post(httpserver.url_for("/hook"), json={"text": msg.text, "event_id": msg.event_id}).raise_for_status()

    def killed_after(msg) -> None:  # noqa: ANN001
        post(msg)
        raise SystemExit("killed between the send and its record")

    with pytest.raises(SystemExit):
        run_monitor(settings, now_ms=now + MIN, send=killed_after)
    run_monitor(settings, now_ms=now + 2 * MIN, send=post)
    run_monitor(settings, now_ms=now + 3 * MIN, send=post)
    ids = [json.loads(req.data)["event_id"] for req, _ in httpserver.log]
    assert ids[0] == ids[1], "the message in flight at the crash is re-sent under the same event_id"
    assert sorted(set(ids)) == ["freshness:BTC/USDT 1h#1", "freshness:ETH/USDT 1h#1"] and len(ids) == 3
    assert load_book(settings.data_dir).pending == []


def test_a_corrupt_alert_state_is_a_clear_error_and_passes_never_overlap(world: SiteWorld) -> None:
    path = book_path(world.settings.data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{not json")
    with pytest.raises(DataValidationError, match="move it aside"):
        run_monitor(world.settings, now_ms=world.now_ms, send=None)
    assert path.read_text() == "{not json", "a corrupt state is never silently replaced"
    path.unlink()
    with monitor_lock(world.settings.data_dir):
        with pytest.raises(LockError, match="another monitor pass"):
            run_monitor(world.settings, now_ms=world.now_ms, send=None)


def test_alert_settings_are_bounded(settings: Settings) -> None:
    for bad in ({"alert_block": "Not A Block"}, {"alert_block": "custom-webhook"}, {"alert_repeat_s": 0},
                {"cycle_budget_s": float("inf")}, {"metrics_retention_days": 3}, {"storage_warn_ratio": 1.5},
                {"alert_send_attempts": 0}):
        with pytest.raises(ConfigError):
            load_settings(**bad)
    assert load_settings(alert_block="slack-webhook/ops").alert_block == "slack-webhook/ops"
    assert load_settings(alert_block="").alert_block is None, "an empty ALERT_BLOCK= means none"


# ---- through Prefect: notification blocks and the monitor flow ---------------------------------

@pytest.fixture
def monitor_env(flow_env: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:  # noqa: F811
    monkeypatch.setenv("ALERT_RETRY_DELAY_S", "0")
    return load_settings(data_dir=flow_env.data_dir, public_dir=flow_env.public_dir)


def _save_block(name: str, url: str) -> str:
    from flows.notify import save_webhook_block

    return save_webhook_block(name, url)


@pytest.mark.usefixtures("prefect_harness")
def test_monitor_flow_delivers_through_a_webhook_block_and_keeps_alerts_while_it_is_down(
        monitor_env: Settings, httpserver: HTTPServer, caplog: pytest.LogCaptureFixture) -> None:
    from flows.monitor import monitor_flow

    now = __import__("time").time() * 1000
    beat(monitor_env, int(now) - 3 * H)  # the last cycle finished 3 h ago: heartbeat is late
    ref = _save_block("coin-predict-test", f"http://127.0.0.1:{free_port()}/down")
    with caplog.at_level(logging.WARNING):
        state = monitor_flow(block=ref, return_state=True)
    assert state.is_completed(), "an unreachable webhook never fails the monitor run"
    result = state.result()
    assert "heartbeat:cycle 1h#1" in result["pending"] and result["sent"] == []
    assert "alert delivery failed" in caplog.text and "kept for the next pass" in caplog.text
    pending = load_book(monitor_env.data_dir).pending
    assert pending and pending[0].attempts == 3 and "ConnectError" in (pending[0].last_error or "")

    httpserver.expect_request("/services/T0/B0/SECRET", method="POST").respond_with_data("no", status=500)
    _save_block("coin-predict-test", httpserver.url_for("/services/T0/B0/SECRET"))
    assert monitor_flow(block=ref, return_state=True).is_completed()
    pending = load_book(monitor_env.data_dir).pending
    assert pending[0].attempts == 6 and "500" in (pending[0].last_error or "")
    assert "SECRET" not in book_path(monitor_env.data_dir).read_text(), "a webhook's path is its credential"
    from prefect.blocks.core import Block

    assert Block.load(ref).url == "{{url}}", "the URL is kept in the block's secret values"

    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    _save_block("coin-predict-test", httpserver.url_for("/hook"))
    state = monitor_flow(block=ref, return_state=True)
    assert state.is_completed() and state.result()["pending"] == []
    bodies = [json.loads(req.data) for req, _ in httpserver.log if req.path == "/hook"]
    beats = [b for b in bodies if b["event_id"].startswith("heartbeat:")]
    assert [b["event_id"] for b in beats] == ["heartbeat:cycle 1h#1"], "sent once, after the outage"
    assert beats[0]["source"] == "coin-predict" and "ALERT late: cycle 1h" in beats[0]["text"]
    runs = read_runs(monitor_env.data_dir, since_ms=0, flow="monitor")
    assert len(runs) == 3 and all(r.outcome == "completed" for r in runs)
    rows = asyncio.run(_artifact_rows(state.state_details.flow_run_id))
    assert {(r["flow"], r["window"]) for r in rows} >= {("cycle 1h", "24h"), ("cycle 1h", "7d"), ("monitor", "7d")}
    monitor_row = next(r for r in rows if r["flow"] == "monitor" and r["window"] == "24h")
    assert monitor_row["runs"] == 2 and monitor_row["budget s"] == 60.0 and monitor_row["p95 s"] is not None


@pytest.mark.usefixtures("prefect_harness")
def test_a_missing_or_malformed_block_fails_the_run_clearly(monitor_env: Settings) -> None:
    from flows.monitor import monitor_flow
    from flows.notify import check_webhook_url, parse_block_ref
    from flows.setup import main as setup_main

    state = monitor_flow(block="custom-webhook/nobody-made-this", return_state=True)
    assert state.is_failed() and "not found on the Prefect server" in str(state.result(raise_on_failure=False))
    with pytest.raises(ConfigError, match="type-slug/name"):
        parse_block_ref("custom-webhook/Bad Name")
    for url in ("ftp://host/x", "hooks.slack.com/x", "http://", "http://host/a b"):
        with pytest.raises(ConfigError, match="invalid webhook URL"):
            check_webhook_url(url)
    assert setup_main(["--alert-webhook", "not a url"]) == 2


@pytest.mark.usefixtures("prefect_harness")
def test_every_flow_run_records_its_duration_and_steps(flow_env: Settings, tmp_path: Path) -> None:  # noqa: F811
    from flows import cycle_flow

    assert cycle_flow(return_state=True).is_completed()
    runs = read_runs(flow_env.data_dir, since_ms=0, flow="cycle 1h")
    assert len(runs) == 1 and runs[0].outcome == "completed"
    assert set(runs[0].steps) == {"score+ingest+forecast", "publish"}
    assert runs[0].duration_s >= sum(runs[0].steps.values()) > 0
    assert cycle_flow(return_state=True).is_completed()
    status = json.loads((flow_env.public_dir / "status.json").read_text())
    cycle = next(f for f in status["runtime"] if f["flow"] == "cycle 1h")
    assert cycle["windows"]["24h"]["runs"] == 1 and cycle["windows"]["24h"]["budget_s"] == 45.0
    assert status["heartbeats"][0]["late"] is False and status["store"]["reachable"] is True
