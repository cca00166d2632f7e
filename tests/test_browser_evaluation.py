"""The track-record page, the lifecycle part of the models page and the band note of a series
page, in Debian's headless Chromium: they render, load nothing from elsewhere, and show what the
real pipeline scored (same fixtures as tests/test_browser.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.lifecycle import REPLAYED_HOURS, LifecycleWorld
from tests.fixtures.site import serve_directory
from tests.test_browser import assert_clean, browser, open_page, shot  # noqa: F401  (browser is a fixture)

pytestmark = pytest.mark.browser


def test_track_record_page_charts_past_forecasts_against_realised_closes(browser: Any, lifecycle_world: LifecycleWorld) -> None:
    world = lifecycle_world.site
    world.publish()
    with serve_directory(world.public) as base:
        page, visit = open_page(browser, f"{base}/evaluation.html")
        assert page.locator("section.track").count() == 2
        btc = page.locator('section.track[data-series="BTC-USDT_1h"]')
        assert "naive baseline is served" in btc.locator("[data-statement]").inner_text()
        assert btc.locator("[data-mase]").inner_text() == "1.00"
        assert btc.locator("dd[data-scored]").inner_text() == f"{REPLAYED_HOURS} ({sum(range(1, REPLAYED_HOURS + 1))} candles)"
        chart = btc.locator("svg.track-chart")
        assert chart.is_visible() and chart.locator("circle.track-marker").count() == REPLAYED_HOURS
        held = int(chart.get_attribute("data-covered"))
        assert chart.locator("circle.track-marker.held").count() == held
        assert btc.locator("[data-coverage80]").inner_text() != "—"
        assert btc.locator("table.shadow-table tbody tr").count() == 3  # champion, challenger, drift
        shot(page, "evaluation.png")
        page.context.close()
        page, models_visit = open_page(browser, f"{base}/models.html")
        section = page.locator('section.lifecycle[data-series="BTC-USDT_1h"]')
        assert section.locator('tr[data-role="challenger"]').count() == 1
        assert section.locator('.decisions li[data-kind="rejected"]').count() == 1
        section.locator("details.events summary").click()
        assert section.locator(".event-log li").first.is_visible()
        shot(page, "models_lifecycle.png")
        page.context.close()
        page, series_visit = open_page(browser, f"{base}/BTC-USDT_1h.html")
        note = page.locator("[data-band-note]")
        assert note.is_visible() and "80 % band" in note.inner_text() and "USDT" in note.inner_text()
        page.locator("[data-band-note] a").click()
        page.wait_for_url("**/evaluation.html#track-BTC-USDT-1h")
        page.context.close()
    for seen in (visit, models_visit, series_visit):
        assert_clean(seen, base)


def test_track_record_page_fits_a_phone_screen(browser: Any, lifecycle_world: LifecycleWorld) -> None:
    world = lifecycle_world.site
    world.publish()
    with serve_directory(world.public) as base:
        for name in ("evaluation.html", "models.html"):
            page, visit = open_page(browser, f"{base}/{name}", width=390, height=844)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} scrolls sideways on a phone by {overflow}px"
            page.context.close()
            assert_clean(visit, base)
