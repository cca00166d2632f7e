"""publish_site against a real SQLite store: reconcile, idempotence, repair, blocking, crash safety."""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest

from coin_core import timeframes as tfs
from coin_core.config import load_settings
from coin_core.errors import ConfigError, PublishError
from coin_core.publish import HistoryFile, ManifestFile, PredictionFile, series_files
from coin_core.publish.chart import CHART_MAX_CANDLES, build_chart
from coin_core.publish.format import format_price
from coin_core.publish.models import SCHEMA_MODELS
from coin_core.publish.render import DEFAULT_TEMPLATES_DIR
from coin_core.storage.base import Forecast
from tests.fixtures.site import SiteWorld

H = 3_600_000
DATA_MODELS = {"history": HistoryFile, "prediction": PredictionFile}


def load(public: Path, name: str) -> dict:
    return json.loads((public / name).read_text("utf-8"))


def snapshot(public: Path) -> dict[str, bytes]:
    return {str(p.relative_to(public)): p.read_bytes() for p in sorted(public.rglob("*")) if p.is_file()}


def manifest_entry(public: Path, slug_tf: str) -> dict:
    return next(s for s in load(public, "manifest.json")["series"] if f"{s['slug']}_{s['timeframe']}" == slug_tf)


def test_first_publish_writes_every_artifact_valid_against_its_published_schema(site_world: SiteWorld) -> None:
    report = site_world.publish()
    public = site_world.public
    expected = {".nojekyll", "index.html", "status.html", "models.html", "404.html", "manifest.json",
                "status.json", "BTC-USDT_1h.html", "ETH-USDT_1h.html", "history_BTC-USDT_1h.json",
                "prediction_BTC-USDT_1h.json", "history_ETH-USDT_1h.json", "prediction_ETH-USDT_1h.json"}
    assert expected <= set(report.written)
    assert report.unchanged == [] and report.overall == "fresh"
    css = [n for n in report.written if n.startswith("assets/site.") and n.endswith(".css")]
    assert len(css) == 1 and (public / css[0]).read_bytes() == (DEFAULT_TEMPLATES_DIR / "assets/site.css").read_bytes()
    for kind, model in SCHEMA_MODELS.items():
        schema = load(public, f"schemas/{kind}.v1.json")
        assert schema["$id"] == f"schemas/{kind}.v1.json" and schema["title"] == model.__name__
        for name in [n for n in report.written if n.startswith(f"{kind}") and n.endswith(".json")]:
            jsonschema.validate(load(public, name), schema)
            model.model_validate(load(public, name))
    assert not list(public.rglob(".*.tmp"))


def test_history_and_prediction_content(site_world: SiteWorld) -> None:
    site_world.publish()
    public = site_world.public
    history = HistoryFile.model_validate(load(public, "history_BTC-USDT_1h.json"))
    stored = site_world.store.tail("BTC/USDT", "1h", 400)
    assert [c.ts for c in history.candles] == list(stored["ts"])  # 200 stored < 336 served, ascending
    assert history.candles[-1].close == pytest.approx(float(stored["close"].iloc[-1]))
    assert (history.served, history.status, history.latest_ts) == (True, "fresh", int(stored["ts"].iloc[-1]))
    prediction = PredictionFile.model_validate(load(public, "prediction_BTC-USDT_1h.json"))
    assert prediction.served and len(prediction.points) == site_world.settings.policy("1h").horizon
    assert prediction.points[0].ts == tfs.add(history.latest_ts, "1h", 1)  # next candle, never "now"
    assert prediction.model_version == "prophet-shared-1h@v1"
    manifest = ManifestFile.model_validate(load(public, "manifest.json"))
    assert [(s.symbol, s.timeframe) for s in manifest.series] == [("BTC/USDT", "1h"), ("ETH/USDT", "1h")]
    btc = manifest.series[0]
    assert (btc.page, btc.history.file, btc.prediction.file) == (
        "BTC-USDT_1h.html", "history_BTC-USDT_1h.json", "prediction_BTC-USDT_1h.json")
    assert btc.last_close == history.candles[-1].close and btc.visible


def test_data_files_are_exactly_their_models_json(site_world: SiteWorld) -> None:
    """Rows are serialised without a model per row: the bytes must still be the model's own JSON."""
    for now, served in ((site_world.now_ms, True), (site_world.now_ms + 7 * H, False)):  # then hard stale: markers
        names = [n for n in site_world.publish(now_ms=now).written if n.startswith(("history_", "prediction_"))]
        assert len(names) == 4
        for name in names:
            data = (site_world.public / name).read_bytes()
            model = DATA_MODELS[name.split("_", 1)[0]].model_validate_json(data)
            assert model.model_dump_json().encode("utf-8") == data, name
            rows = model.candles if isinstance(model, HistoryFile) else model.points
            assert model.served is served and (len(rows) > 0) is served


def test_history_serves_only_the_policy_window(site_world: SiteWorld) -> None:
    site_world.seed_series("BTC/USDT", n=400, start=61_000.0)
    site_world.publish()
    candles = load(site_world.public, "history_BTC-USDT_1h.json")["candles"]
    assert len(candles) == site_world.settings.policy("1h").served_candles == 336
    assert candles[-1]["ts"] == tfs.last_closed_open(site_world.now_ms, "1h")


def test_reconcile_rewrites_only_what_changed(site_world: SiteWorld) -> None:
    first = site_world.publish()
    again = site_world.publish()
    assert again.written == [] and sorted(again.unchanged) == sorted(first.written)
    later = site_world.publish(now_ms=site_world.now_ms + 5 * 60_000)  # same state, later clock
    assert sorted(later.written) == ["status.html", "status.json"]
    # A new closed candle and a new BTC forecast: BTC's files and the pages that show it change.
    site_world.now_ms += H
    site_world.seed_series("BTC/USDT", n=201, start=60_000.0)
    cycle = site_world.publish()
    assert {"history_BTC-USDT_1h.json", "prediction_BTC-USDT_1h.json", "BTC-USDT_1h.html",
            "index.html", "manifest.json", "status.json"} <= set(cycle.written)
    assert "history_ETH-USDT_1h.json" in cycle.unchanged and "prediction_ETH-USDT_1h.json" in cycle.unchanged
    assert cycle.written[-2:] == ["index.html", "manifest.json"]  # entry points last


def test_corrupt_or_missing_files_are_repaired(site_world: SiteWorld) -> None:
    site_world.publish()
    public = site_world.public
    good = (public / "prediction_BTC-USDT_1h.json").read_bytes()
    (public / "prediction_BTC-USDT_1h.json").write_bytes(good[: len(good) // 2])  # torn write
    (public / "history_ETH-USDT_1h.json").write_text("not json at all")
    (public / "index.html").unlink()
    report = site_world.publish()
    assert sorted(report.written) == ["history_ETH-USDT_1h.json", "index.html", "prediction_BTC-USDT_1h.json"]
    assert (public / "prediction_BTC-USDT_1h.json").read_bytes() == good
    HistoryFile.model_validate(load(public, "history_ETH-USDT_1h.json"))
    assert (public / "index.html").is_file()


def test_publish_touches_nothing_outside_its_own_file_names(site_world: SiteWorld) -> None:
    public = site_world.public
    public.mkdir(parents=True)
    (public / "CNAME").write_text("coins.example\n")
    (public / "history_OLD-COIN_1h.json").write_text("{}")  # a series no longer configured
    site_world.publish()
    assert (public / "CNAME").read_text() == "coins.example\n"
    assert not (public / "history_OLD-COIN_1h.json").exists()


def test_stale_series_is_served_with_a_warning(site_world: SiteWorld) -> None:
    now = tfs.close_time(tfs.last_closed_open(site_world.now_ms, "1h"), "1h") + 2 * H  # 2h > 75 min
    site_world.publish(now_ms=now)
    public = site_world.public
    history = load(public, "history_BTC-USDT_1h.json")
    assert (history["status"], history["served"], len(history["candles"])) == ("stale", True, 200)
    assert load(public, "prediction_BTC-USDT_1h.json")["served"] is True
    assert manifest_entry(public, "BTC-USDT_1h")["status"] == "stale"
    page = (public / "BTC-USDT_1h.html").read_text()
    assert 'data-notice="history-stale"' in page and 'class="candle' in page
    assert load(public, "status.json")["overall"] == "stale"


def test_hard_stale_series_is_blocked_and_its_page_says_why(site_world: SiteWorld) -> None:
    site_world.publish()
    now = site_world.now_ms + 7 * H
    report = site_world.publish(now_ms=now)
    public = site_world.public
    assert report.overall == "hard_stale"
    for name in ("history_BTC-USDT_1h.json", "prediction_BTC-USDT_1h.json"):
        marker = load(public, name)
        assert (marker["served"], marker["status"]) == (False, "hard_stale")
        assert "hard limit" in marker["reason"]
        assert marker.get("candles", marker.get("points")) == []
    page = (public / "BTC-USDT_1h.html").read_text()
    assert 'data-notice="history-blocked"' in page and "hard limit" in page
    assert 'class="candle' not in page and "forecast-point" not in page
    assert "Prices not shown" in (public / "index.html").read_text()
    assert manifest_entry(public, "BTC-USDT_1h")["last_close"] is None


def test_forecast_made_from_stale_input_is_blocked_while_candles_are_fresh(site_world: SiteWorld) -> None:
    latest = tfs.last_closed_open(site_world.now_ms, "1h")
    old = site_world.store.tail("BTC/USDT", "1h", 8)
    site_world.forecast("BTC/USDT", "1h", int(old["ts"].iloc[0]), float(old["close"].iloc[0]),
                        issued_at=site_world.now_ms - 60_000)  # written a minute ago, input 7h old
    site_world.publish()
    public = site_world.public
    assert load(public, "history_BTC-USDT_1h.json")["status"] == "fresh"
    prediction = load(public, "prediction_BTC-USDT_1h.json")
    assert (prediction["status"], prediction["served"], prediction["points"]) == ("hard_stale", False, [])
    entry = manifest_entry(public, "BTC-USDT_1h")
    assert (entry["status"], entry["history"]["served"], entry["latest_ts"]) == ("hard_stale", True, latest)
    page = (public / "BTC-USDT_1h.html").read_text()
    assert 'data-notice="prediction-blocked"' in page and 'data-candles="120"' in page
    assert 'data-forecast-points="0"' in page


@pytest.mark.parametrize("defect", ["misaligned", "nan", "inverted"])
def test_invalid_stored_forecast_is_corrupt_and_blocked(site_world: SiteWorld, defect: str) -> None:
    good = site_world.store.latest_forecast("BTC/USDT", "1h")
    points = good.points.copy()
    if defect == "misaligned":
        points["ts"] = points["ts"] + 60_000
    elif defect == "nan":
        points.loc[3, "yhat"] = float("nan")
    else:
        points.loc[0, ["yhat_lower", "yhat_upper"]] = [points.loc[0, "yhat_upper"], points.loc[0, "yhat_lower"]]
    site_world.store.write_forecast(Forecast("BTC/USDT", "1h", good.issued_at + 1, "v2", good.input_last_ts, points))
    site_world.publish()
    prediction = load(site_world.public, "prediction_BTC-USDT_1h.json")
    assert (prediction["status"], prediction["served"], prediction["points"]) == ("corrupt", False, [])
    assert prediction["reason"].startswith("stored forecast is invalid")
    assert load(site_world.public, "status.json")["overall"] == "corrupt"


def test_degraded_prediction_keeps_last_good_and_is_flagged(site_world: SiteWorld) -> None:
    site_world.health("ETH/USDT", "1h", "degraded",
                      last_error="StorageUnavailableError: InfluxDB at http://10.9.8.7:8086 is unreachable")
    site_world.publish()
    public = site_world.public
    prediction = load(public, "prediction_ETH-USDT_1h.json")
    assert (prediction["served"], prediction["signals"], prediction["status"]) == (True, ["degraded"], "fresh")
    assert manifest_entry(public, "ETH-USDT_1h")["signals"] == ["degraded"]
    assert load(public, "status.json")["counts"]["degraded"] == 1
    page = (public / "ETH-USDT_1h.html").read_text()
    assert 'data-notice="degraded"' in page and "StorageUnavailableError" in page
    # Only the kind of failure is public; the message (hosts, paths) stays with the operator.
    for name in ("ETH-USDT_1h.html", "status.html", "models.html", "status.json", "manifest.json"):
        assert "10.9.8.7" not in (public / name).read_text(), name


def test_insufficient_data_series_shows_history_without_a_forecast(site_world: SiteWorld) -> None:
    site_world.seed_series("SOL/USDT", n=50, forecast=False, start=150.0)
    site_world.health("SOL/USDT", "1h", "insufficient_data")
    settings = site_world.settings.model_copy(update={"target_symbols": ["BTC/USDT", "ETH/USDT", "SOL/USDT"]})
    site_world.settings = settings
    site_world.publish()
    public = site_world.public
    entry = manifest_entry(public, "SOL-USDT_1h")
    assert (entry["status"], entry["signals"], entry["prediction"]["served"]) == ("fresh", ["insufficient_data"], False)
    assert load(public, "status.json")["overall"] == "fresh"  # expected, not an outage
    assert 'data-notice="insufficient_data"' in (public / "SOL-USDT_1h.html").read_text()


def test_series_still_backfilling_is_hidden_from_the_index(site_world: SiteWorld) -> None:
    site_world.seed_series("SOL/USDT", n=100, backfilled=False, start=150.0)
    site_world.settings = site_world.settings.model_copy(update={"target_symbols": ["BTC/USDT", "SOL/USDT"]})
    site_world.publish()
    public = site_world.public
    entry = manifest_entry(public, "SOL-USDT_1h")
    assert (entry["visible"], entry["signals"], entry["history"]["served"]) == (False, ["hidden_backfilling"], False)
    assert load(public, "history_SOL-USDT_1h.json")["candles"] == []
    index = (public / "index.html").read_text()
    assert 'data-series="SOL-USDT_1h"' not in index and 'data-series="BTC-USDT_1h"' in index
    assert "Still backfilling" in index and 'data-notice="hidden_backfilling"' in (public / "SOL-USDT_1h.html").read_text()
    site_world.backfill_done("SOL/USDT")
    site_world.publish()
    assert 'data-series="SOL-USDT_1h"' in (public / "index.html").read_text()


def test_unpredicted_timeframe_has_no_prediction_file(site_world: SiteWorld) -> None:
    site_world.settings = load_settings(
        data_dir=site_world.settings.data_dir, public_dir=site_world.settings.public_dir,
        target_symbols="BTC/USDT", ingest_timeframes="1h,1m", enable_multi_timeframes=True)
    site_world.seed_series("BTC/USDT", "1m", n=30)
    report = site_world.publish()
    assert "history_BTC-USDT_1m.json" in report.written
    assert not (site_world.public / "prediction_BTC-USDT_1m.json").exists()
    assert manifest_entry(site_world.public, "BTC-USDT_1m")["prediction"] is None


def test_a_failed_write_mid_publish_leaves_the_previous_site_valid(site_world: SiteWorld) -> None:
    site_world.publish()
    public = site_world.public
    before = snapshot(public)
    site_world.now_ms += H
    site_world.seed_series("BTC/USDT", n=201)
    site_world.seed_series("ETH/USDT", n=201, start=3_000.0)
    # A real file-system obstruction: a directory where the ETH page must be renamed to.
    (public / "ETH-USDT_1h.html").unlink()
    (public / "ETH-USDT_1h.html").mkdir()
    with pytest.raises(PublishError, match="ETH-USDT_1h.html"):
        site_world.publish()
    after = snapshot(public)
    for name in ("index.html", "manifest.json", "status.html", "models.html"):
        assert after[name] == before[name]  # written after the failure point: untouched
    assert after["history_BTC-USDT_1h.json"] != before["history_BTC-USDT_1h.json"]  # data went first
    for name, data in after.items():
        if name.endswith(".json"):
            json.loads(data)
    assert not list(public.rglob(".*.tmp"))
    (public / "ETH-USDT_1h.html").rmdir()
    report = site_world.publish()
    assert "ETH-USDT_1h.html" in report.written and "manifest.json" in report.written


def test_a_template_failing_on_one_series_changes_nothing(site_world: SiteWorld, tmp_path: Path) -> None:
    site_world.publish()
    before = snapshot(site_world.public)
    templates = tmp_path / "templates"
    shutil.copytree(DEFAULT_TEMPLATES_DIR, templates)
    page = templates / "series.html"
    page.write_text(page.read_text().replace(
        "{% block content %}", "{% block content %}{% if s.slug == 'ETH-USDT' %}{{ no_such_value.boom }}{% endif %}", 1))
    site_world.now_ms += H
    site_world.seed_series("BTC/USDT", n=201)
    with pytest.raises(PublishError, match="ETH/USDT 1h"):
        site_world.publish(templates_dir=templates)
    assert snapshot(site_world.public) == before  # everything renders before anything is written


def test_compiled_templates_are_kept_on_disk_and_never_trusted_blindly(
        site_world: SiteWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh process reuses the compiled templates (no parsing); a damaged or unwritable cache
    only costs a compile, never a page."""
    from jinja2 import Environment

    from coin_core.publish import render

    first = site_world.publish()
    cache = render.template_cache_dir(site_world.settings.data_dir)
    files = sorted(cache.glob("*.cache"))
    assert len(files) >= 10 and all(f.read_bytes().startswith(b"j2") for f in files)
    render._environment.cache_clear()  # what a new flow-run process starts with
    with monkeypatch.context() as patched:
        patched.setattr(Environment, "_parse", lambda *a, **k: pytest.fail("a cached template was parsed again"))
        assert site_world.publish().written == []
    for f in files:
        f.write_bytes(b"j2 not a compiled template")
    render._environment.cache_clear()
    assert site_world.publish().written == []  # recompiled: the same bytes
    assert all(f.read_bytes() != b"j2 not a compiled template" for f in files)
    shutil.rmtree(cache.parent)
    cache.parent.write_text("a file where the cache directory goes")
    render._environment.cache_clear()
    report = site_world.publish(now_ms=site_world.now_ms + 60_000)
    assert "status.html" in report.written and sorted(first.written) == sorted(report.written + report.unchanged)


def test_missing_templates_are_a_publish_error(site_world: SiteWorld, tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="templates not found"):
        site_world.publish(templates_dir=tmp_path / "nowhere")
    assert not site_world.public.exists()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in {"href", "src", "action"} and v]


def test_site_is_self_contained_with_working_relative_links(site_world: SiteWorld) -> None:
    site_world.publish()
    public = site_world.public
    for path in public.rglob("*"):
        if path.is_file():
            text = path.read_text("utf-8")
            assert "http://" not in text and "https://" not in text, path.name
    for page in public.glob("*.html"):
        parser = _Links()
        parser.feed(page.read_text("utf-8"))
        assert parser.urls, page.name
        for url in parser.urls:
            if url == "data:,":
                continue
            assert not url.startswith(("/", "//")) and ":" not in url, (page.name, url)
            assert (public / url.split("#")[0]).is_file(), (page.name, url)
        assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page.read_text()


def test_file_names_come_only_from_validated_symbols() -> None:
    assert series_files("btc/usdt", "1h").history == "history_BTC-USDT_1h.json"
    for bad in ("../etc/passwd", "BTC/USDT/../x", "<b>/USDT"):
        with pytest.raises(ConfigError):
            series_files(bad, "1h")
    with pytest.raises(ConfigError):
        series_files("BTC/USDT", "1h/../x")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "text"),
    [(67012.345, "67,012.35"), (245.1, "245.10"), (3.14159, "3.1416"), (0.1234567, "0.1235"),
     (0.00001234567, "0.00001235"), (0.0, "0"), (float("nan"), "—"), (None, "—"), (-1500.5, "-1,500.50")],
)
def test_prices_are_formatted_for_their_magnitude(value: float | None, text: str) -> None:
    assert format_price(value) == text


def test_chart_geometry_places_forecast_after_the_last_candle(site_world: SiteWorld) -> None:
    frame = site_world.store.tail("BTC/USDT", "1h", 200)
    points = site_world.store.latest_forecast("BTC/USDT", "1h").points
    chart = build_chart(frame, points, "1h")
    assert len(chart.candles) == CHART_MAX_CANDLES and len(chart.points) == len(points)
    assert [c.ts for c in chart.candles] == list(frame["ts"].iloc[-CHART_MAX_CANDLES:])
    assert chart.candles[-1].x < chart.boundary_x < chart.points[0].x
    top, bottom = chart.plot_top, chart.plot_bottom
    assert all(top <= c.wick_top <= c.wick_bottom <= bottom for c in chart.candles)
    no_forecast = build_chart(frame.head(30), None, "1h")
    assert (len(no_forecast.candles), no_forecast.points, no_forecast.boundary_x) == (30, [], None)


def test_a_kept_older_forecast_shows_only_its_future_points(site_world: SiteWorld) -> None:
    """Degraded: the last good forecast started 2 candles ago; those 2 points are history now.

    One rule decides which points a page shows: the chart, the table and "next" agree on it.
    """
    from coin_core.publish import collect_one
    from coin_core.publish.format import format_candle

    frame = site_world.store.tail("BTC/USDT", "1h", 200)
    latest = int(frame["ts"].iloc[-1])
    old = site_world.forecast("BTC/USDT", "1h", latest - 2 * H, float(frame["close"].iloc[-3]),
                              issued_at=site_world.now_ms)  # the newest stored run
    site_world.health("BTC/USDT", "1h", "degraded", last_error="ModelError: fit failed")
    future = [int(t) for t in old.points["ts"] if t > latest]
    assert len(future) == len(old.points) - 2
    state = collect_one(site_world.store, site_world.settings, "BTC/USDT", "1h", site_world.now_ms)
    assert state.shown_points["ts"].tolist() == future and state.next_point.ts == future[0]
    site_world.publish()
    page = (site_world.public / "BTC-USDT_1h.html").read_text()
    table = [int(t) for t in re.findall(r'<tr data-ts="(\d+)">', page)]
    drawn = [int(t) for t in re.findall(r'<circle class="forecast-point" data-ts="(\d+)"', page)]
    assert table == drawn == future
    entry = manifest_entry(site_world.public, "BTC-USDT_1h")
    index = (site_world.public / "index.html").read_text()
    assert f"Next, candle {format_candle(future[0])}" in index and entry["signals"] == ["degraded"]
    assert len(load(site_world.public, "prediction_BTC-USDT_1h.json")["points"]) == len(old.points)  # data: whole


def test_a_series_removed_from_the_configuration_leaves_the_site(site_world: SiteWorld) -> None:
    site_world.publish()
    public = site_world.public
    (public / "notes.html").write_text("operator's own file")
    assert (public / "ETH-USDT_1h.html").exists()
    site_world.settings = site_world.settings.model_copy(update={"target_symbols": ["BTC/USDT"]})
    report = site_world.publish()
    assert sorted(report.removed) == ["ETH-USDT_1h.html", "history_ETH-USDT_1h.json", "prediction_ETH-USDT_1h.json"]
    assert not any("ETH-USDT" in p.name for p in public.iterdir())
    assert "ETH" not in (public / "index.html").read_text() and (public / "notes.html").exists()
    assert (public / "BTC-USDT_1h.html").exists()


def _consistent_generation(public: Path) -> None:
    """Every series' data files, page, index and manifest describe the same latest candle."""
    from coin_core.publish.format import format_candle

    for entry in load(public, "manifest.json")["series"]:
        history = load(public, entry["history"]["file"])
        assert history["latest_ts"] == entry["latest_ts"] == history["candles"][-1]["ts"]
        label = format_candle(entry["latest_ts"])
        assert label in (public / entry["page"]).read_text() and label in (public / "index.html").read_text()


def test_a_full_disk_during_publish_keeps_the_last_good_site_whole(site_world: SiteWorld, tmp_path: Path) -> None:
    """D11: a real full disk part-way through a publish leaves exactly the previous generation."""
    from tests.fixtures.disk import small_disk

    with small_disk(tmp_path / "disk", size_kb=4096) as disk:
        site_world.settings = site_world.settings.model_copy(update={"public_dir": disk.path / "public"})
        public = site_world.public
        site_world.publish()
        before = snapshot(public)
        site_world.now_ms += H
        site_world.seed_series("BTC/USDT", n=201, start=60_000.0)
        site_world.seed_series("ETH/USDT", n=201, start=3_000.0)
        # Room for the first changed file or two, not for the whole generation.
        room = len(before["history_BTC-USDT_1h.json"]) + 8192
        disk.fill(leave=room)
        with pytest.raises(PublishError, match="No space left on device"):
            site_world.publish()
        assert snapshot(public) == before
        staging = disk.path / f".{public.name}.staging"
        assert [p for p in staging.rglob("*") if p.is_file()] == []  # nothing half-written kept
        disk.free()
        report = site_world.publish()
        assert {"index.html", "manifest.json", "history_BTC-USDT_1h.json"} <= set(report.written)
        _consistent_generation(public)
        assert [p.name for p in public.rglob(".*")] == [".nojekyll"]


@pytest.mark.parametrize(("low", "high"), [(35_612.3, 36_981.7), (0.000012, 0.0000147), (2_950.0, 3_010.0),
                                           (0.98, 1.02), (99.5, 100.5), (1.0, 1_000_000.0)])
def test_price_axis_ticks_are_round_numbers(low: float, high: float) -> None:
    """Ticks are multiples of 1, 2, 2.5 or 5 x 10^k, all inside the range, 3 to 7 of them."""
    from decimal import Decimal

    from coin_core.publish.chart import nice_ticks

    ticks, decimals = nice_ticks(low, high)
    assert 3 <= len(ticks) <= 7 and low <= ticks[0] and ticks[-1] <= high
    step = Decimal(str(ticks[1])) - Decimal(str(ticks[0]))
    mantissa = step.scaleb(-step.adjusted()).normalize()
    assert mantissa in {Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5)}, step
    assert all((Decimal(str(t)) / step) % 1 == 0 for t in ticks)
    labels = [f"{t:,.{decimals}f}" for t in ticks]
    assert all(Decimal(label.replace(",", "")) == Decimal(str(t)) for label, t in zip(labels, ticks))  # no rounding


def test_rendered_chart_has_round_price_labels(site_world: SiteWorld) -> None:
    from decimal import Decimal

    site_world.publish()
    page = (site_world.public / "ETH-USDT_1h.html").read_text()
    labels = re.findall(r'<text class="y-label"[^>]*>([^<]+)</text>', page)
    values = [Decimal(v.replace(",", "")) for v in labels]
    steps = {b - a for a, b in zip(values, values[1:])}
    assert len(values) >= 3 and len(steps) == 1
    step = steps.pop()
    assert step.scaleb(-step.adjusted()).normalize() in {Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5)}


PUBLISH_LOOP = """
import sys
from pathlib import Path
from coin_core.config import load_settings
from coin_core.publish import publish_site
from coin_core.storage.sqlite import SQLiteStore

data, public, now = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
titles = [load_settings(data_dir=data, public_dir=public, site_title=t) for t in ("Coin Predict", "Coin Predict 2")]
with SQLiteStore(data / "candles.sqlite3") as store:
    print("ready", flush=True)
    for i in range(1, 10_000):  # another title each run: every page and the manifest are rewritten
        publish_site(store, titles[i % 2], now_ms=now + i * 60_000)
"""


def _writing(public: Path, staging: Path) -> bool:
    """Whether a publish has a file half-way: staged and not yet renamed, or a temp in public/."""
    return any(f for _, _, f in os.walk(staging)) or any(n.endswith(".tmp") for n in os.listdir(public))


def test_killed_publishes_leave_no_temp_file_in_public_and_are_cleaned_up(site_world: SiteWorld, tmp_path: Path) -> None:
    """D9: SIGKILL a real publishing process again and again; public/ never holds a temp file."""
    import random
    import signal
    import subprocess
    import sys
    import time

    from coin_core.fsutil import is_our_temp

    site_world.publish()
    public, rng = site_world.public, random.Random(20240501)
    staging = public.parent / f".{public.name}.staging"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    leftovers = 0
    for kill in range(12):
        proc = subprocess.Popen([sys.executable, "-c", PUBLISH_LOOP, str(site_world.settings.data_dir), str(public),
                                 str(site_world.now_ms)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n", proc.stderr.read() if proc.stderr else ""
        if kill % 2:
            time.sleep(rng.uniform(0.05, 0.4))
        else:  # the moment a file is being written: in staging (or, before D9's fix, in public/)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not _writing(public, staging):
                time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert not [p for p in public.rglob("*") if is_our_temp(p.name)], "a temp file reached public/"
        for name in ("manifest.json", "status.json", "history_BTC-USDT_1h.json"):
            json.loads((public / name).read_text())  # every served file is whole
        leftovers += sum(1 for p in staging.rglob("*") if p.is_file())
    print(f"{leftovers} staged file(s) left by 12 kills")
    assert leftovers > 0, "no kill landed while files were staged: the test proved nothing"
    # A temp file of a writer that may still be running (young) is left alone; aged ones go.
    young = public / ".status.json.abcd1234.tmp"
    young.write_text("{")
    old_style = public / "schemas" / ".history.v1.json.zz99yy88.tmp"
    old_style.write_text("{")
    aged = time.time() - 3600
    for path in [old_style, *staging.rglob("*")]:
        os.utime(path, (aged, aged))
    report = site_world.publish(now_ms=site_world.now_ms + 86_400_000)
    assert young.exists() and not old_style.exists() and "schemas/.history.v1.json.zz99yy88.tmp" in report.cleaned
    assert [p.name for p in staging.iterdir()] == []
    young.unlink()
    assert sorted(p.name for p in public.rglob(".*")) == [".nojekyll"]


def test_public_on_its_own_mount_stages_inside_a_dot_directory(site_world: SiteWorld, tmp_path: Path) -> None:
    """A rename cannot cross file systems: with public/ a mount point, staging falls back inside it."""
    from tests.fixtures.disk import small_disk

    with small_disk(tmp_path / "public_mount", size_kb=4096) as disk:
        site_world.settings = site_world.settings.model_copy(update={"public_dir": disk.path})
        report = site_world.publish()
        assert "index.html" in report.written and (disk.path / ".staging").is_dir()
        assert [p for p in (disk.path / ".staging").rglob("*")] == []  # the run directory is gone
        assert not (tmp_path / ".public_mount.staging").exists()
