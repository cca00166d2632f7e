"""Hostile text (site title, model version, error strings) reaches the pages escaped, never raw."""

from __future__ import annotations

from pathlib import Path

import pytest
from markupsafe import escape

from coin_core.config import load_settings
from coin_core.publish.render import make_environment
from tests.fixtures.site import SiteWorld

SCRIPT = "<script>alert(1)</script>"
ATTR_BREAK = "\"'><img src=x onerror=alert(2)>"
VERSION = "<svg onload=alert(3)>v1"
ERROR = "</td></tr><script>alert(4)</script>&amp;"


@pytest.fixture
def hostile_site(site_world: SiteWorld) -> Path:
    site_world.settings = load_settings(
        data_dir=site_world.settings.data_dir, public_dir=site_world.settings.public_dir,
        site_title=SCRIPT + ATTR_BREAK)
    site_world.seed_series("BTC/USDT", model_version=VERSION)
    site_world.health("BTC/USDT", "1h", "degraded", last_error=ERROR, model_version=VERSION)
    site_world.publish()
    return site_world.public


def pages(public: Path) -> dict[str, str]:
    return {p.name: p.read_text("utf-8") for p in public.glob("*.html")}


def test_no_hostile_string_appears_raw_in_any_page(hostile_site: Path) -> None:
    for name, text in pages(hostile_site).items():
        for raw in (SCRIPT, ATTR_BREAK, VERSION, ERROR, "<img", "<svg onload"):
            assert raw not in text, (name, raw)
        assert "<script" not in text.lower(), name  # the site ships no script at all


def test_hostile_strings_appear_escaped_where_they_are_shown(hostile_site: Path) -> None:
    site = pages(hostile_site)
    title = str(escape(SCRIPT + ATTR_BREAK))
    assert "&#34;&#39;&gt;&lt;img" in title
    for name, text in site.items():
        assert "<title>" in text and title in text, name
    assert str(escape(VERSION)) in site["models.html"]
    assert str(escape(VERSION)) in site["BTC-USDT_1h.html"]
    for name in ("status.html", "models.html", "BTC-USDT_1h.html"):
        # A failure's message is never published (only its kind), escaped or not.
        assert "prediction failed" in site[name] and str(escape(ERROR)) not in site[name], name


def test_json_keeps_the_exact_text_as_data(hostile_site: Path) -> None:
    manifest = (hostile_site / "manifest.json").read_text("utf-8")
    prediction = (hostile_site / "prediction_BTC-USDT_1h.json").read_text("utf-8")
    assert '"site_title":"<script>alert(1)</script>' in manifest
    assert '"model_version":"<svg onload=alert(3)>v1"' in prediction


def test_environment_autoescapes_every_template_and_string() -> None:
    env = make_environment()
    assert env.from_string("{{ x }}").render(x=SCRIPT) == str(escape(SCRIPT))
    assert env.autoescape("anything.txt") and env.autoescape("page.html")


def test_chart_markup_built_in_python_escapes_its_text() -> None:
    """The candle and forecast-point elements are drawn outside Jinja: their titles are escaped too."""
    from coin_core.publish.chart import Chart, ChartCandle, ChartPoint, candles_markup, points_markup

    chart = Chart(candles=[ChartCandle(ts=1, x=1.5, body_x=1.0, body_w=1.0, body_y=2.0, body_h=0.8, wick_top=1.0,
                                       wick_bottom=3.0, up=False, title=SCRIPT + ATTR_BREAK)],
                  points=[ChartPoint(ts=2, x=4.5, y=2.5, title=ERROR)])
    candles, points = str(candles_markup(chart)), str(points_markup(chart))
    assert SCRIPT not in candles and ATTR_BREAK not in candles and ERROR not in points
    assert f"<title>{escape(SCRIPT + ATTR_BREAK)}</title>" in candles and f"<title>{escape(ERROR)}</title>" in points
    assert candles.startswith('    <g class="candle down" data-ts="1">') and 'cx="4.5" cy="2.5"' in points


def test_track_chart_markers_built_in_python_escape_their_text() -> None:
    from coin_core.publish.track import TrackChart, TrackMarker, markers_markup

    chart = TrackChart(markers=[TrackMarker(ts=3, x=1.5, y=2.5, covered=True, title=SCRIPT),
                                TrackMarker(ts=4, x=3.5, y=1.5, covered=False, title=ATTR_BREAK)])
    text = str(markers_markup(chart))
    assert SCRIPT not in text and ATTR_BREAK not in text
    assert f"<title>{escape(SCRIPT)}</title>" in text and f"<title>{escape(ATTR_BREAK)}</title>" in text
    assert 'class="track-marker held" data-ts="3" cx="1.5" cy="2.5"' in text and 'track-marker missed" data-ts="4"' in text
