"""The published track record: data file valid against its published schema, pages in plain words."""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator

from tests.fixtures.lifecycle import REPLAYED_HOURS, LifecycleWorld


def test_track_record_file_matches_its_schema_and_the_score_book(lifecycle_world: LifecycleWorld) -> None:
    world = lifecycle_world.site
    report = world.publish()
    assert {"track_record.json", "evaluation.html", "schemas/track_record.v1.json"} <= set(report.written)
    data = json.loads((world.public / "track_record.json").read_text())
    schema = json.loads((world.public / "schemas/track_record.v1.json").read_text())
    Draft202012Validator(schema).validate(data)
    manifest = json.loads((world.public / "manifest.json").read_text())
    assert manifest["schemas"]["track_record"] == "schemas/track_record.v1.json"
    btc = next(s for s in data["series"] if s["symbol"] == "BTC/USDT")
    # the served naive model's forecasts from the 12 candles before the last: 12 + 11 + ... + 1 realised points
    assert lifecycle_world.scored["BTC/USDT"] == 78 + 78 + 66  # naive, drift, and ets (registered one cycle later)
    assert btc["scored_points"] == sum(range(1, REPLAYED_HOURS + 1)) and btc["scored_forecasts"] == REPLAYED_HOURS
    assert btc["live_mase"] == 1.0 and btc["serving_model"] == "naive" and btc["serving_is_baseline"] is True
    assert "No model beats the naive forecast" in btc["statement"]
    assert {m["role"] for m in btc["models"]} == {"champion", "challenger", "baseline"}
    assert btc["decisions"][0]["kind"] == "rejected" and btc["decisions"][0]["metrics"]["mase"] == 1.04
    assert len(btc["chart"]) == REPLAYED_HOURS and all(p["lower80"] <= p["yhat"] <= p["upper80"] for p in btc["chart"])
    assert world.publish().written == [], "an unchanged track record rewrites nothing"


def test_pages_state_the_serving_model_band_level_and_currency(lifecycle_world: LifecycleWorld) -> None:
    world = lifecycle_world.site
    world.publish()
    evaluation = (world.public / "evaluation.html").read_text()
    assert evaluation.count('class="track"') == 2 and evaluation.count('<circle class="track-marker') == 2 * REPLAYED_HOURS
    assert "so the naive baseline is served" in evaluation and "realised close (USDT)" in evaluation
    models = (world.public / "models.html").read_text()
    assert 'data-role="challenger"' in models and "does not beat the champion: MASE 1.040 &gt;= 1.000" in models
    assert "loses to naive: MASE 1.040 &gt; 1.00" in models and "Event history" in models
    series = (world.public / "BTC-USDT_1h.html").read_text()
    assert "Prices in USDT" in series and "<strong>80 % band</strong>" in series and "of 78 scored candles" in series
    assert 'href="evaluation.html"' in (world.public / "index.html").read_text()


def test_status_page_shows_fired_retrain_triggers(lifecycle_world: LifecycleWorld) -> None:
    from coin_core.lifecycle import open_scorebook
    from coin_core.lifecycle.triggers import check_triggers

    world = lifecycle_world.site
    old = world.settings.model_copy(update={"retrain_max_age_days": 0.001})
    with open_scorebook(world.settings) as book:
        check = check_triggers(world.store, old, book, "BTC/USDT", "1h", now_ms=world.now_ms)
    assert [t.kind for t in check.triggers] == ["age"]
    world.publish()
    status = (world.public / "status.html").read_text()
    assert "Retrain requested:</strong> champion fitted" in status and status.count("data-triggers") == 1
    assert json.loads((world.public / "track_record.json").read_text())["series"][0]["triggers"][0]["kind"] == "age"
