"""The one status picture: the CLI shows error text whole, publish only its kind; runtime metrics
and storage on status.json and the status page; a store outage (a real influxd stopped) still
gives an honest site (issue 7, D10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coin_core import timeframes as tfs
from coin_core.cli import main
from coin_core.health import IngestState, write_ingest_state
from coin_core.metrics import RunRecord, RunTimer, percentile, read_runs, record_run, summarize
from coin_core.monitor import run_monitor
from coin_core.publish import publish_site
from coin_core.status import build_status
from coin_core.storage.influx import InfluxStore
from tests.fixtures.influx import InfluxdServer
from tests.fixtures.site import SiteWorld, make_candles

H = 3_600_000
DAY = 24 * H
SECRETLESS_DETAIL = "TransientExchangeError: cannot reach http://10.9.8.7:8765/api/v3/klines after 5 tries"


def load(public: Path, name: str) -> dict:
    return json.loads((public / name).read_text("utf-8"))


def test_cli_status_shows_error_text_whole_and_the_site_only_its_kind(
        site_world: SiteWorld, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    settings = site_world.settings
    write_ingest_state(settings.data_dir, "BTC/USDT", "1h", IngestState(
        backfill_complete_at=site_world.now_ms - H, last_run_at=site_world.now_ms, last_error=SECRETLESS_DETAIL))
    site_world.health("ETH/USDT", "1h", "degraded", last_error="ModelError: fit diverged on /srv/models/eth.json")
    site_world.publish()
    status = load(site_world.public, "status.json")
    btc, eth = status["series"]
    assert btc["ingest_error"] == "TransientExchangeError (details in the operator's logs)"
    assert eth["last_error"] == "ModelError (details in the operator's logs)"
    assert "10.9.8.7" not in json.dumps(status) and "/srv/models" not in (site_world.public / "status.html").read_text()

    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("PUBLIC_DIR", str(settings.public_dir))
    code = main(["status"])
    shown = json.loads(capsys.readouterr().out)
    by_name = {s["series"]: s for s in shown["series"]}
    assert by_name["BTC/USDT 1h"]["ingest"]["last_error"] == SECRETLESS_DETAIL
    assert by_name["ETH/USDT 1h"]["prediction_health"]["last_error"] == "ModelError: fit diverged on /srv/models/eth.json"
    assert shown["store"] == {"backend": "sqlite", "reachable": True, "error": None}
    assert shown["storage"]["used_bytes"] > 0 and code == 1  # candles far in the past: hard_stale now


def test_metrics_percentiles_overruns_windows_and_pruning(tmp_path: Path) -> None:
    now = 100 * DAY
    durations = [10.0, 20.0, 30.0, 40.0, 50.0]  # one overrun of the 45 s budget
    for i, d in enumerate(durations):
        record_run(tmp_path, RunRecord("cycle 1h", now - i * H, d, steps={"ingest": d / 2}), now_ms=now)
    record_run(tmp_path, RunRecord("cycle 1h", now - 3 * DAY, 99.0), now_ms=now)  # in 7 d, not 24 h
    record_run(tmp_path, RunRecord("cycle 1h", now - 9 * DAY, 500.0), now_ms=now - 9 * DAY)
    record_run(tmp_path, RunRecord("monitor", now - H, 0.5, outcome="failed"), now_ms=now)  # prunes the 9-day-old
    assert [r.duration_s for r in read_runs(tmp_path, since_ms=0, flow="cycle 1h")][0] == 99.0
    stats = {f.flow: f for f in summarize(tmp_path, now_ms=now, budgets={"cycle": 45.0})}
    day, week = stats["cycle 1h"].windows["24h"], stats["cycle 1h"].windows["7d"]
    assert (day.runs, day.p50_s, day.max_s, day.overruns, day.budget_s) == (5, 30.0, 50.0, 1, 45.0)
    assert day.p95_s == pytest.approx(48.0)  # linear interpolation, as numpy
    assert (week.runs, week.max_s, week.overruns) == (6, 99.0, 2)
    assert stats["cycle 1h"].steps_p95_s["ingest"] == pytest.approx(24.0)
    assert stats["monitor"].windows["24h"].failed == 1 and stats["monitor"].windows["24h"].overruns == 0
    assert percentile([], 95) is None
    timer = RunTimer("train", started_at_ms=now)
    with pytest.raises(ValueError):
        with timer.step("fit"):
            raise ValueError("a failing step is still timed")
    record = timer.record(tmp_path, "failed")
    assert "fit" in record.steps and read_runs(tmp_path, since_ms=now, flow="train")[0].outcome == "failed"


def test_status_json_and_page_show_runtime_storage_and_heartbeat(site_world: SiteWorld) -> None:
    now = site_world.now_ms
    for i, d in enumerate([5.0, 6.0, 60.0]):
        record_run(site_world.settings.data_dir, RunRecord("cycle 1h", now - (i + 1) * H, d), now_ms=now)
    site_world.publish()
    status = load(site_world.public, "status.json")
    cycle = status["runtime"][0]
    assert cycle["flow"] == "cycle 1h" and cycle["windows"]["24h"]["overruns"] == 1
    assert (cycle["windows"]["24h"]["max_s"], cycle["windows"]["7d"]["runs"]) == (60.0, 3)
    assert status["storage"]["used_bytes"] == site_world.store.size_bytes()
    assert status["storage"]["budget_bytes"] == 50 * 1024**3 and status["storage"]["warning"] is False
    assert status["heartbeats"] == [{"timeframe": "1h", "last_finished_at": now - H + 5000, "late": False}]
    page = (site_world.public / "status.html").read_text()
    assert 'data-flow="cycle 1h" data-window="24h"' in page and "<td>60.0</td>" in page
    assert 'data-store-reachable="true"' in page


def test_store_outage_keeps_counting_age_from_the_last_known_candles(
        influxd: InfluxdServer, influx_store: InfluxStore, influx_settings) -> None:  # noqa: ANN001
    """D10: InfluxDB down past the stale limit -> stale, then hard_stale, and 'store down' said."""
    world = SiteWorld(settings=influx_settings, store=influx_store)  # type: ignore[arg-type]
    world.seed_series("BTC/USDT", start=60_000.0)
    world.seed_series("ETH/USDT", start=3_000.0)
    t0 = world.now_ms
    assert publish_site(influx_store, influx_settings, now_ms=t0).overall == "fresh"
    influxd.stop()
    try:
        report = publish_site(influx_store, influx_settings, now_ms=t0 + 2 * H)  # 75 min soft limit passed
        assert report.store_error and "unreachable" in report.store_error
        status = load(world.public, "status.json")
        assert status["overall"] == "stale" and status["store"]["reachable"] is False
        assert status["store"]["error"] == "StorageUnavailableError (details in the operator's logs)"
        assert "cannot be read" in status["reason"] and str(influxd.http_port) not in json.dumps(status)
        assert all(s["history"]["status"] == "stale" and s["history"]["age_s"] > 7000 for s in status["series"])
        history = load(world.public, "history_BTC-USDT_1h.json")
        assert history["served"] and history["status"] == "stale" and len(history["candles"]) == 200
        assert load(world.public, "prediction_BTC-USDT_1h.json")["points"], "the last forecast is still shown, stale"
        index = (world.public / "index.html").read_text()
        assert "cannot be read" in index and 'data-store-reachable="false"' in (world.public / "status.html").read_text()
        monitor = run_monitor(influx_settings, now_ms=t0 + 2 * H, send=None)
        assert {"store:influxdb", "freshness:BTC/USDT 1h"} <= set(monitor.firing)

        publish_site(influx_store, influx_settings, now_ms=t0 + 7 * H)  # past the 6 h hard limit
        status = load(world.public, "status.json")
        assert status["overall"] == "hard_stale"
        history = load(world.public, "history_BTC-USDT_1h.json")
        assert not history["served"] and history["candles"] == [] and history["status"] == "hard_stale"
    finally:
        influxd.start()
    picture = build_status(influx_settings, now_ms=t0 + 7 * H, store=influx_store)
    assert picture.store.reachable and picture.series[0].from_store
    after = run_monitor(influx_settings, now_ms=t0 + 7 * H, send=None)
    assert [m.key for m in after.queued if m.kind == "resolved"] == ["store:influxdb"]


def test_status_takes_a_series_read_earlier_only_while_the_store_and_records_agree(site_world: SiteWorld) -> None:
    """A cycle's workers read each series at the cycle's clock (an early publish); publish's
    picture takes those reads, and reads a series again once its candles, its latest forecast or
    one of its records moved since."""
    settings, store, now = site_world.settings, site_world.store, site_world.now_ms
    assert [s for s, _ in settings.series()] == ["BTC/USDT", "ETH/USDT"]
    for symbol, _ in settings.series():
        site_world.seed_series(symbol, last_open=tfs.last_closed_open(now, "1h") - H)

    def picture(known: dict | None = None) -> dict:
        found = build_status(settings, now_ms=now, store=store, known=known)
        return {(h.symbol, h.timeframe): h for h in found.series}

    known = picture()
    assert all(picture(known)[key] is h for key, h in known.items()), "nothing moved: taken as read"

    latest = known[("BTC/USDT", "1h")].latest_ts
    store.write_candles("BTC/USDT", "1h", make_candles(1, "1h", latest + H))  # a new candle
    site_world.forecast("ETH/USDT", "1h", latest, 3_000.0, issued_at=now)  # a newer forecast
    moved = picture(known)
    assert moved[("BTC/USDT", "1h")].latest_ts == latest + H
    assert moved[("ETH/USDT", "1h")].forecast.issued_at == now  # type: ignore[union-attr]

    known = moved
    write_ingest_state(settings.data_dir, "BTC/USDT", "1h", IngestState(last_error="TransientExchangeError: down"))
    moved = picture(known)
    assert moved[("BTC/USDT", "1h")].ingest.last_error == "TransientExchangeError: down"  # type: ignore[union-attr]
    assert moved[("ETH/USDT", "1h")] is known[("ETH/USDT", "1h")]
