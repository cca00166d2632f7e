"""``publish_site``: reconcile ``settings.public_dir`` with the store, atomically and idempotently.

Each run rebuilds every artifact from current state (store + health records) in memory, one
file at a time, and stages only the files whose bytes differ from what is on disk. There is no watermark: a missing
or corrupt file simply differs from its expected bytes and is rewritten. The data files and
page of a series that left the configuration are removed after the new index and manifest
(which no longer link them) are in place; nothing else in the directory is ever touched.

Crash safety: every changed file is first staged in full outside ``public/`` (see
:mod:`coin_core.publish.staging`), then renamed into place in dependency order (:func:`flip_rank`,
whatever order they were rendered in) — static assets
and schemas, data files, ``status.json``, series pages and the other pages, then ``index.html``
and ``manifest.json`` last. A publish that fails while writing (a full disk) changes nothing that
is served; one killed during the renames leaves every file valid and the entry points (index,
manifest) still describing the previous complete run, and the next run completes it.
"""

from __future__ import annotations

import hashlib
import re
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Collection, Iterable, Iterator

from jinja2 import Environment

from ..config import Settings
from ..errors import PublishError
from ..freshness import FreshnessStatus
from ..fsutil import safe_child
from ..status import StatusPicture, build_status
from ..storage.base import CandleStore
from ..workers import Workers, shared_or_own
from .artifacts import (
    history_bytes, manifest_file, overall, prediction_bytes, schema_files, status_file, to_bytes, track_record_file,
)
from .collect import SeriesState, iter_series
from .models import StatusFile
from .render import (
    DEFAULT_TEMPLATES_DIR, PageContext, SiteContext, make_environment, series_page, summary_pages, template_cache_dir,
)
from .staging import Generation

if TYPE_CHECKING:
    from .early import EarlyPublish

__all__ = ["PublishReport", "SeriesSummary", "publish_site", "build_artifacts", "series_artifacts", "flip_rank"]

log = logging.getLogger(__name__)

CSS_SOURCE = "assets/site.css"


@dataclass(frozen=True)
class SeriesSummary:
    symbol: str
    timeframe: str
    status: FreshnessStatus
    visible: bool
    signals: tuple[str, ...]
    history_served: bool
    prediction_served: bool | None


@dataclass
class PublishReport:
    """What one publish did: files written vs already up to date, and each series' verdict."""

    public_dir: Path
    now_ms: int
    overall: FreshnessStatus
    duration_s: float = 0.0
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    series: list[SeriesSummary] = field(default_factory=list)
    store_error: str | None = None
    early: int = 0  # series taken as rendered while the cycle's units ran

    @property
    def bytes_written(self) -> int:
        return sum(self.sizes[name] for name in self.written)


def _relative_path(root: Path, rel: str) -> Path:
    """``root/rel`` where every component passes safe_child (no traversal, no absolute path)."""
    path = Path(root)
    for part in rel.split("/"):
        path = safe_child(path, part)
    return path


class _Writer:
    """Stages a file only when its bytes changed; records what it did."""

    def __init__(self, root: Path, report: PublishReport, generation: Generation) -> None:
        self.root, self.report, self.generation = root, report, generation

    def put(self, rel: str, data: bytes) -> None:
        staged = not unchanged(self.root, rel, data)
        if staged:
            self.generation.stage(rel, data)
        self.record(rel, len(data), staged)

    def record(self, rel: str, size: int, staged: bool) -> None:
        self.report.sizes[rel] = size
        (self.report.written if staged else self.report.unchanged).append(rel)


def unchanged(root: Path, rel: str, data: bytes) -> bool:
    """Whether ``root/rel`` already holds exactly ``data``."""
    path = _relative_path(root, rel)
    try:
        return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False  # unreadable counts as different: rewriting it is the repair


def _css(templates_dir: Path) -> tuple[str, bytes]:
    """The stylesheet under a content-hashed name, so hosts may cache it for a year."""
    try:
        data = (templates_dir / CSS_SOURCE).read_bytes()
    except OSError as exc:
        raise PublishError(f"cannot read the site stylesheet {CSS_SOURCE}: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()[:12]
    return f"assets/site.{digest}.css", data


@dataclass(frozen=True)
class _Templates:
    """Where a worker process finds the templates: it builds its own Jinja environment once."""

    folder: Path
    cache_dir: Path

    def environment(self, env: Environment | None = None) -> Environment:
        return env or make_environment(self.folder, self.cache_dir)


@dataclass(frozen=True)
class _SeriesJob:
    """What rendering one series' files needs, picklable for a worker process."""

    state: SeriesState
    page: PageContext
    templates: _Templates


def series_artifacts(job: _SeriesJob, env: Environment | None = None) -> list[tuple[str, bytes]]:
    """One series' data files and page."""
    state = job.state
    files = [(state.files.history, history_bytes(state))]
    prediction = prediction_bytes(state)
    if prediction is not None:
        files.append((state.files.prediction, prediction))
    return files + [(state.files.page, series_page(job.templates.environment(env), job.page, state))]


def build_artifacts(
    states: Iterable[SeriesState], settings: Settings, now_ms: int, templates_dir: Path,
    picture: StatusPicture | None = None, env: Environment | None = None, workers: Workers | None = None,
    rendered: Collection[tuple[str, str]] = (),
) -> Iterator[tuple[str, bytes]]:
    """Every file of the site, rendered in memory: each series' data files and page together,
    and the files about every series. The order they go live in is :func:`flip_rank`'s.
    Series in ``rendered`` (symbol, timeframe) were rendered already (an early publish): only
    the files about every series include them.

    In one process, series by series (one series' bytes held at a time), then the rest. With
    ``workers`` in parallel, each series is sent to a worker as soon as it is read from
    ``states`` (a few per call); this process builds the data files and pages about every
    series meanwhile and yields the series' files as they return.
    """
    cache_dir = template_cache_dir(settings.data_dir)
    env = env or make_environment(templates_dir, cache_dir)
    css_href, css = _css(templates_dir)
    yield from [(".nojekyll", b""), (css_href, css), *schema_files()]
    page = PageContext(settings.site_title, css_href, now_ms)
    read: list[SeriesState] = []
    templates = _Templates(Path(templates_dir), cache_dir)
    jobs = (_SeriesJob(state, page, templates) for state in _kept(states, read)
            if (state.symbol, state.timeframe) not in rendered)
    if workers is not None and workers.parallel:
        expected = len(picture.series) if picture is not None else 0
        series: Iterator[list[tuple[str, bytes]]] = workers.map(
            series_artifacts, jobs, chunksize=workers.chunk_size(expected), eager=True)
    else:
        for job in jobs:
            yield from series_artifacts(job, env)
        series = iter(())
    status_doc = status_file(read, now_ms, picture)
    site = SiteContext(settings.site_title, css_href, now_ms, status_doc.overall, status_doc.reason)
    yield "status.json", to_bytes(status_doc)
    yield "track_record.json", to_bytes(track_record_file(read))
    yield "manifest.json", to_bytes(manifest_file(read, settings.site_title))
    # Here, not in a worker: sending every series' state there cost more than rendering them.
    yield from summary_pages(env, site, read, status_doc)
    for files in series:
        yield from files


def _kept(states: Iterable[SeriesState], into: list[SeriesState]) -> Iterator[SeriesState]:
    for state in states:
        into.append(state)
        yield state


def flip_rank(rel: str) -> int:
    """Rename order of a staged file: assets and schemas, data files, ``status.json`` and
    ``track_record.json``, series pages, the other pages, ``index.html``, ``manifest.json``."""
    if rel in _LAST:
        return _LAST[rel]
    if rel.startswith(("history_", "prediction_")) or rel in ("status.json", "track_record.json"):
        return 1 if rel.startswith(("history_", "prediction_")) else 2
    if rel.endswith(".html") and "/" not in rel:
        return 3 if _SERIES_FILE.match(rel) else 4
    return 0


_LAST = {"index.html": 5, "manifest.json": 6}


def publish_site(
    store: CandleStore, settings: Settings, *, now_ms: int, templates_dir: Path | None = None,
    workers: Workers | None = None, early: EarlyPublish | None = None,
) -> PublishReport:
    """Make ``settings.public_dir`` reflect the store at ``now_ms``; see the module docstring.

    Raises PublishError when a page cannot be rendered or a file cannot be written (the previous
    site stays in place). A store that cannot be read at all still gets a site: every series
    judged from its last known candle times, showing what the last publish showed while its
    freshness allows, and the outage named (``report.store_error``). A store that fails half-way
    through the reads raises its error unchanged, before anything served changed (what was
    staged is discarded).

    ``early``: the series a cycle's units already rendered and staged (:mod:`.early`); each is
    taken as it is when the status picture agrees with it, else read and rendered here again.
    """
    started = time.perf_counter()
    known_health = early.finish(now_ms) if early is not None else {}
    picture = build_status(settings, now_ms=now_ms, store=store, known=known_health)
    folder = Path(templates_dir or DEFAULT_TEMPLATES_DIR)
    env = make_environment(folder, template_cache_dir(settings.data_dir))  # no templates: fail before any write
    report = PublishReport(public_dir=Path(settings.public_dir), now_ms=now_ms, overall="fresh",
                           store_error=picture.store.error)
    states: list[SeriesState] = []
    generation = early.generation(report.public_dir) if early is not None else None
    generation = generation or Generation(report.public_dir)
    report.cleaned = generation.cleaned
    try:  # a store that fails mid-way through the reads fails here: only staged files, discarded
        with shared_or_own(workers, settings.cpu_workers, len(picture.series)) as pool:
            writer = _Writer(report.public_dir, report, generation)
            known = early.adopt(picture, now_ms, writer) if early is not None else {}
            report.early = len(known)
            reading = _kept(iter_series(store, settings, now_ms, picture, known), states)
            for rel, data in build_artifacts(reading, settings, now_ms, folder, picture, env, pool, set(known)):
                writer.put(rel, data)
        generation.seal()
    except BaseException:
        generation.discard()
        raise
    status, _ = overall(states, picture)
    report.overall = status  # type: ignore[assignment]
    generation.flip(order=flip_rank)
    report.written.sort(key=flip_rank)  # the order they went live in
    report.removed = _remove_orphans(report.public_dir, set(report.sizes))
    report.series = [
        SeriesSummary(s.symbol, s.timeframe, s.status, s.visible, s.signals, s.history.served,
                      None if s.prediction is None else s.prediction.served)
        for s in states
    ]
    report.duration_s = time.perf_counter() - started
    log.info("published %d series to %s (%d rendered early): %d written, %d unchanged, overall %s",
             len(states), report.public_dir, report.early, len(report.written), len(report.unchanged), status)
    return report


_SERIES_FILE = re.compile(r"^(?:history_|prediction_)?[A-Z0-9]{2,15}-[A-Z0-9]{2,10}_(?:1m|1h|1d|1w|1M)\.(?:json|html)$")


def _remove_orphans(root: Path, current: set[str]) -> list[str]:
    """Delete series files (by their exact naming pattern) that this run did not produce.

    A removed series must not stay online with a frozen "fresh" badge; everything that does not
    match the pattern (operator files, assets, schemas) is left alone.
    """
    removed = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.is_file() and _SERIES_FILE.match(path.name) and path.name not in current:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    if removed:
        log.info("removed %d file(s) of series no longer configured: %s", len(removed), ", ".join(removed))
    return removed
