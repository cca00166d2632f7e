"""The published site in Debian's headless Chromium (driven by playwright): it renders, stays on
127.0.0.1, logs no errors, and its chart shows what was published. Screenshots for a person to
look at are saved under test-artifacts/."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from coin_core.config import load_settings
from coin_core.publish.chart import CHART_MAX_CANDLES
from tests.fixtures.common import REPO, require
from tests.fixtures.site import SiteWorld, serve_directory

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require(CHROMIUM.exists(), "Debian's Chromium at /usr/bin/chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # pragma: no cover - depends on the environment
        require(False, "the playwright python package")
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Visit:
    """Everything a page did while loading: requests, console errors, failures, dialogs."""

    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


def open_page(browser: Any, url: str, *, width: int = 1280, height: int = 900) -> tuple[Any, Visit]:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    visit = Visit()
    page.on("request", lambda r: visit.requests.append(r.url))
    page.on("console", lambda m: visit.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: visit.errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: visit.errors.append(f"failed: {r.url} {r.failure}"))
    page.on("response", lambda r: visit.errors.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    page.on("dialog", lambda d: (visit.dialogs.append(d.message), d.dismiss()))
    response = page.goto(url, wait_until="load")
    assert response is not None and response.status == 200, url
    return page, visit


def assert_clean(visit: Visit, base: str) -> None:
    assert visit.errors == []
    assert visit.dialogs == []
    outside = [u for u in visit.requests if not u.startswith(base + "/")]
    assert outside == [], f"requests left 127.0.0.1: {outside}"


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def test_index_renders_every_visible_series(browser: Any, site_world: SiteWorld) -> None:
    site_world.publish()
    with serve_directory(site_world.public) as base:
        page, visit = open_page(browser, f"{base}/index.html")
        assert page.locator("article.card").count() == 2
        assert page.locator("article.card .badge-fresh").count() == 2
        badge_bg = page.locator(".badge-fresh").first.evaluate("e => getComputedStyle(e).backgroundColor")
        assert badge_bg not in ("rgba(0, 0, 0, 0)", "transparent")  # the stylesheet loaded
        assert any(u.endswith(".css") for u in visit.requests)
        shot(page, "index.png")
        page.context.close()
    assert_clean(visit, base)


def test_series_chart_shows_candles_forecast_and_boundary(browser: Any, site_world: SiteWorld) -> None:
    site_world.publish()
    horizon = site_world.settings.policy("1h").horizon
    with serve_directory(site_world.public) as base:
        page, visit = open_page(browser, f"{base}/BTC-USDT_1h.html")
        chart = page.locator("svg.price-chart")
        assert chart.count() == 1 and chart.is_visible()
        assert page.locator("svg.price-chart g.candle").count() == min(CHART_MAX_CANDLES, 200) == 120
        assert page.locator("svg.price-chart circle.forecast-point").count() == horizon
        assert chart.get_attribute("data-forecast-points") == str(horizon)
        last_candle = page.locator("g.candle").last.bounding_box()
        first_point = page.locator("circle.forecast-point").first.bounding_box()
        boundary = page.locator("line.forecast-boundary").bounding_box()
        assert last_candle["x"] < boundary["x"] < first_point["x"]  # the marker sits where the forecast starts
        assert page.locator("polygon.forecast-band").count() == 1
        assert page.locator("table.forecast-table tbody tr").count() == horizon
        shot(page, "series_BTC-USDT_1h.png")
        page.context.close()
    assert_clean(visit, base)


def test_pages_fit_a_phone_screen(browser: Any, site_world: SiteWorld) -> None:
    site_world.publish()
    with serve_directory(site_world.public) as base:
        for name in ("index.html", "ETH-USDT_1h.html", "status.html"):
            page, visit = open_page(browser, f"{base}/{name}", width=390, height=844)
            overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} scrolls sideways on a phone by {overflow}px"
            shot(page, f"phone_{name.replace('.html', '')}.png")
            page.context.close()
            assert_clean(visit, base)


def test_blocked_series_page_explains_why(browser: Any, site_world: SiteWorld) -> None:
    site_world.publish(now_ms=site_world.now_ms + 7 * 3_600_000)
    with serve_directory(site_world.public) as base:
        page, visit = open_page(browser, f"{base}/BTC-USDT_1h.html")
        notice = page.locator('[data-notice="history-blocked"]')
        assert notice.is_visible() and "hard limit" in notice.inner_text()
        assert page.locator("svg.price-chart").count() == 0
        shot(page, "series_blocked.png")
        page.context.close()
        page, status_visit = open_page(browser, f"{base}/status.html")
        assert page.locator("table.status-table tbody tr").count() == 2
        shot(page, "status_hard_stale.png")
        page.context.close()
    assert_clean(visit, base)
    assert_clean(status_visit, base)


def test_hostile_title_is_shown_as_text_and_never_runs(browser: Any, site_world: SiteWorld) -> None:
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>"
    site_world.settings = load_settings(data_dir=site_world.settings.data_dir,
                                        public_dir=site_world.settings.public_dir, site_title=hostile)
    site_world.health("BTC/USDT", "1h", "degraded", last_error="<img src=y onerror=alert(3)>")
    site_world.publish()
    with serve_directory(site_world.public) as base:
        for name in ("index.html", "BTC-USDT_1h.html", "status.html"):
            page, visit = open_page(browser, f"{base}/{name}")
            assert page.title().startswith(hostile) or page.title().endswith(hostile)
            assert page.locator("a.brand").inner_text() == hostile
            assert page.locator("img").count() == 0
            page.context.close()
            assert_clean(visit, base)


CHART_TEXT_METRICS = """() => {
  const svg = document.querySelector('svg.price-chart');
  const box = svg.getBoundingClientRect();
  const scale = box.width / svg.viewBox.baseVal.width;
  return [...svg.querySelectorAll('text')].map(t => {
    const r = t.getBoundingClientRect();
    return {text: t.textContent, cls: t.getAttribute('class'), px: parseFloat(getComputedStyle(t).fontSize) * scale,
            left: r.left, right: r.right, top: r.top, bottom: r.bottom,
            svgLeft: box.left, svgRight: box.right, svgTop: box.top, svgBottom: box.bottom,
            viewport: window.innerWidth};
  });
}"""


@pytest.mark.parametrize("width", [390, 1280])
def test_chart_text_is_legible_and_uncut_on_a_phone_and_a_desktop(browser: Any, site_world: SiteWorld, width: int) -> None:
    """Every label of the chart renders at >= 11 px, inside the chart and the screen, none overlapping."""
    site_world.publish()
    with serve_directory(site_world.public) as base:
        page, visit = open_page(browser, f"{base}/BTC-USDT_1h.html", width=width, height=844)
        texts = page.evaluate(CHART_TEXT_METRICS)
        shot(page, f"chart_{width}px.png")
        page.context.close()
    assert_clean(visit, base)
    assert {t["cls"] for t in texts} >= {"x-label", "y-label", "boundary-label"}
    for t in texts:
        assert t["px"] >= 11, f"{t['text']!r} renders at {t['px']:.1f}px"
        assert t["svgLeft"] - 0.5 <= t["left"] and t["right"] <= t["svgRight"] + 0.5, f"{t['text']!r} is cut at a side"
        assert t["svgTop"] - 0.5 <= t["top"] and t["bottom"] <= t["svgBottom"] + 0.5, f"{t['text']!r} is cut at the top/bottom"
        assert 0 <= t["left"] and t["right"] <= t["viewport"], f"{t['text']!r} is off screen"
    for kind in ("x-label", "y-label"):
        boxes = sorted((t for t in texts if t["cls"] == kind), key=lambda t: (t["left"], t["top"]))
        for a, b in zip(boxes, boxes[1:]):
            apart = a["right"] <= b["left"] if kind == "x-label" else a["bottom"] <= b["top"] or b["bottom"] <= a["top"]
            assert apart, f"{a['text']!r} overlaps {b['text']!r}"


def test_prices_carry_their_currency_and_candles_their_opening_time(browser: Any, site_world: SiteWorld) -> None:
    site_world.publish()
    latest = site_world.store.latest_ts("BTC/USDT", "1h")
    from coin_core.publish.format import format_candle

    with serve_directory(site_world.public) as base:
        for name in ("index.html", "BTC-USDT_1h.html", "status.html"):
            page, visit = open_page(browser, f"{base}/{name}", width=390, height=844)
            prices = page.locator("[data-price]").all_inner_texts()
            assert all(p.strip().endswith("USDT") for p in prices), prices
            assert name == "status.html" or len(prices) >= 2
            assert f"candle {format_candle(latest)}" in page.locator("main").inner_text().replace("\n", " ") or \
                format_candle(latest) in page.locator(f'[data-candle="{latest}"]').first.inner_text()
            page.context.close()
            assert_clean(visit, base)
