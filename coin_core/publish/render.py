"""HTML pages from ``site_templates/`` with an autoescaping Jinja2 environment.

Every value that reaches a page (site title, symbols, model versions, error text) is escaped by
Jinja2's autoescape; no template uses ``|safe`` (the chart's candle and point elements are built
by :mod:`coin_core.publish.chart` from numbers and ``markupsafe``-escaped text). Every page is
rendered in memory and staged before anything is served, so a template error leaves the previous
site untouched.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, StrictUndefined, TemplateError, select_autoescape
from jinja2.bccache import Bucket

from ..errors import PublishError
from ..freshness import FreshnessStatus
from .chart import Chart, build_chart, candles_markup, forecast_rows_markup, points_markup
from .collect import SeriesState
from .models import StatusFile
from .track import build_track_chart, markers_markup
from .format import format_age_s, format_candle, format_change, format_price, format_share, format_ts, sentence

__all__ = ["DEFAULT_TEMPLATES_DIR", "PageContext", "SiteContext", "make_environment", "render_pages", "series_page", "summary_pages",
           "template_cache_dir"]

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "site_templates"


@dataclass(frozen=True)
class PageContext:
    """What every page shares, a series page included: known before any series is read."""

    site_title: str
    css_href: str
    now_ms: int


@dataclass(frozen=True)
class SiteContext(PageContext):
    """What the pages about every series add: the site's overall verdict (a series page does
    not show it, so it can be rendered before the other series are read)."""

    overall: FreshnessStatus
    overall_reason: str


def make_environment(templates_dir: Path | None = None, cache_dir: Path | None = None) -> Environment:
    """Autoescape on for every template (html or not) and for strings; undefined names fail.

    Cached per folder: compiling the templates costs more than rendering a small site, and the
    loader still reloads a template whose file changed. ``cache_dir`` (see
    :func:`template_cache_dir`) keeps the compiled templates on disk for the next process.
    """
    folder = Path(templates_dir or DEFAULT_TEMPLATES_DIR).resolve()
    if not (folder / "base.html").is_file():
        raise PublishError(f"site templates not found in {folder}")
    return _environment(str(folder), None if cache_dir is None else str(cache_dir))


def template_cache_dir(data_dir: Path) -> Path:
    """Where compiled templates are kept: ``<data_dir>/cache/templates-<key>``.

    Every publish runs in a fresh process (a flow run), and compiling the 13 templates took
    longer than rendering 50 series. Jinja checks each cached template against its source's
    checksum and the Python version; the key adds the Jinja version and this module's source,
    which holds the environment's options (autoescape, filters) that compiled code bakes in.
    """
    digest = hashlib.sha256(jinja2.__version__.encode() + Path(__file__).read_bytes()).hexdigest()[:12]
    return Path(data_dir) / "cache" / f"templates-{digest}"


class _BytecodeCache(FileSystemBytecodeCache):
    """A cache that never fails a publish: unreadable or unwritable means compile as before."""

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except (OSError, EOFError, ValueError, TypeError) as exc:  # damaged file: recompile and rewrite it
            log.warning("compiled template cache unreadable (%s): compiling", exc)
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError as exc:
            log.warning("cannot keep a compiled template in %s: %s", self.directory, exc.strerror or exc)


def _bytecode_cache(cache_dir: str | None) -> _BytecodeCache | None:
    if cache_dir is None:
        return None
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("no compiled template cache in %s: %s", cache_dir, exc.strerror or exc)
        return None
    return _BytecodeCache(cache_dir)


@lru_cache(maxsize=8)
def _environment(folder: str, cache_dir: str | None = None) -> Environment:
    env = Environment(
        loader=FileSystemLoader(folder),
        bytecode_cache=_bytecode_cache(cache_dir),
        autoescape=select_autoescape(enabled_extensions=("html", "svg"), default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(price=format_price, ts=format_ts, candle=format_candle, age=format_age_s, change=format_change,
                       sentence=sentence, pct=format_share, candle_marks=candles_markup, point_marks=points_markup,
                       forecast_rows=forecast_rows_markup,
                       track_marks=markers_markup)
    return env


def _render(env: Environment, name: str, what: str, **context: Any) -> bytes:
    try:
        return env.get_template(name).render(**context).encode("utf-8")
    except TemplateError as exc:
        raise PublishError(f"rendering {what} failed: {type(exc).__name__}: {exc}") from exc


def _chart(state: SeriesState) -> Chart | None:
    if not state.history.served or state.candles.empty:
        return None
    return build_chart(state.candles, state.shown_points, state.timeframe, state.quote)


def series_page(env: Environment, site: PageContext, state: SeriesState) -> bytes:
    return _render(
        env, "series.html", f"the page of {state.symbol} {state.timeframe}",
        site=site, s=state, chart=_chart(state), page=state.files.page,
    )


def render_pages(env: Environment, site: SiteContext, states: list[SeriesState],
                 status: StatusFile | None = None) -> list[tuple[str, bytes]]:
    """Every HTML page as (file name, bytes), series pages first and ``index.html`` last."""
    return [(state.files.page, series_page(env, site, state)) for state in states] + summary_pages(env, site, states, status)


def summary_pages(env: Environment, site: SiteContext, states: list[SeriesState],
                  status: StatusFile | None = None) -> list[tuple[str, bytes]]:
    """The pages about every series (status, models, evaluation, 404), ``index.html`` last."""
    pages: list[tuple[str, bytes]] = []
    visible = [s for s in states if s.visible]
    hidden = [s for s in states if not s.visible]
    common = {"site": site, "series": states, "visible": visible, "hidden": hidden}
    pages.append(("status.html", _render(env, "status.html", "status.html", page="status.html", status=status, **common)))
    pages.append(("models.html", _render(env, "models.html", "models.html", page="models.html", **common)))
    charts = {(s.symbol, s.timeframe): build_track_chart(s.track.chart, s.timeframe) for s in states if s.track is not None}
    pages.append(("evaluation.html", _render(env, "evaluation.html", "evaluation.html", page="evaluation.html",
                                             track_charts=charts, **common)))
    pages.append(("404.html", _render(env, "404.html", "404.html", page="404.html", **common)))
    pages.append(("index.html", _render(env, "index.html", "index.html", page="index.html", **common)))
    return pages
