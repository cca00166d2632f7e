"""An early publish: a cycle's series are rendered in the workers' idle time while units still run.

Many series' units (score -> ingest -> forecast) are held by the exchange's request throttle
(500 series: ~10 s of requests at Binance's pace), and the worker processes wait much of that
time. Once a series' unit is done, nothing in the cycle changes that series any more, so its
files can be built then: a worker reads the series as publish would (its status with
:func:`~coin_core.status.read_series` and :func:`~.collect.collect_one`, at the cycle's clock),
renders its data files and page, and stages the changed ones in the publish's run directory.

While units run, only the workers' spare time is used: one feeder thread sends a series only
while fewer than :data:`AHEAD` calls beyond one per worker are in flight, so a unit's score or
forecast never queues behind more than that many pages. When the units are done, publish calls
:meth:`EarlyPublish.finish`: every series still queued is sent at once (the workers have
nothing else to do), and the status each worker read becomes the status picture, each series
taken only while :func:`~coin_core.status.unmoved` (same candle bounds, latest forecast and
records), else read again. Publish takes an early series' files when the picture judges it as
the early read did; otherwise (or when the early job failed, or the store is unreachable by
then) it reads and renders the series again, so the site is what a publish alone makes
(``tests/test_cpu_workers.py`` compares every byte). Without worker processes nothing is done
early.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from ..config import Settings
from ..errors import CoinPredictError
from ..lifecycle.steps import kept_book
from ..status import SeriesHealth, StatusPicture, read_series
from ..storage import kept_store
from ..timeframes import Timeframe
from ..workers import Workers
from .collect import SeriesState, _public, collect_one
from .render import DEFAULT_TEMPLATES_DIR, PageContext, template_cache_dir
from .site import _css, _SeriesJob, _Templates, _Writer, series_artifacts, unchanged
from .staging import Generation, write_staged

__all__ = ["EarlyPublish", "render_early"]

log = logging.getLogger(__name__)

#: What an early job returns: the series' status, its state and, per file, (name, size, staged).
Rendered = tuple[SeriesHealth, SeriesState, list[tuple[str, int, bool]]]
Key = tuple[str, Timeframe]
IDLE_POLL_S = 0.05
#: Calls in flight beyond one per worker under which the feeder sends a series while units run.
#: With none (pages only on an idle worker), 500 series had ~200 pages rendered early, ~340-420
#: with 2 (a cycle 17.9 -> 15.2-15.4 s); 4 and 8 were no faster, the units' forecasts waited longer.
AHEAD = 2


@dataclass(frozen=True)
class _EarlyJob:
    """One series' early files, picklable for a worker process."""

    settings: Settings
    symbol: str
    timeframe: Timeframe
    now_ms: int
    page: PageContext
    templates: _Templates
    run_dir: Path
    staging_root: Path


def render_early(job: _EarlyJob) -> Rendered:
    """Read one series as publish would, render its files and stage those that changed."""
    settings = job.settings
    with kept_store(settings) as store, kept_book(settings) as book:
        health = read_series(store, settings, job.symbol, job.timeframe, job.now_ms)
        state = collect_one(store, settings, job.symbol, job.timeframe, job.now_ms, health, book)
    public, done = Path(settings.public_dir), []
    for rel, data in series_artifacts(_SeriesJob(state, job.page, job.templates)):
        staged = not unchanged(public, rel, data)
        if staged:
            write_staged(job.run_dir, job.staging_root, rel, data)
        done.append((rel, len(data), staged))
    return health, _sent_back(state), done


def _sent_back(state: SeriesState) -> SeriesState:
    """The state as publish keeps it: its files are rendered, and the pages about every series
    need only the last candle's close, so the served history is not pickled back and held (500
    series: the parent's peak RSS 213 -> 206 MiB). Changed in place, keeping the values cached
    while rendering (the forecast rows the pages show); this worker's copy is not used again."""
    object.__setattr__(state, "candles", state.candles.tail(1))
    return state


class EarlyPublish:
    """The early part of one cycle's publish: :meth:`series_done` as each unit ends, then hand it
    to :func:`~.site.publish_site` (``early=``). A context manager: what publish did not take is
    discarded at its end."""

    def __init__(self, settings: Settings, templates_dir: Path | None = None) -> None:
        self.settings = settings
        self._folder = Path(templates_dir or DEFAULT_TEMPLATES_DIR)
        self._series = set(settings.series())
        self._changed = threading.Condition()
        self._queue: deque[Key] = deque()
        self._pending: dict[Key, Callable[[], Rendered]] = {}
        self._done: dict[Key, Rendered] = {}
        self._generation: Generation | None = None
        self._job: _EarlyJob | None = None  # what every series' job shares
        self._feeder: threading.Thread | None = None
        self._workers: Workers | None = None
        self._closed = False
        self._handed = self._adopted = False  # the run directory given to publish; its files recorded

    def series_done(self, workers: Workers, now_ms: int, symbol: str, tf: Timeframe) -> None:
        """A series' unit is done: queue its files for the workers' idle time (none without a pool)."""
        if not workers.parallel or (symbol, tf) not in self._series:
            return
        with self._changed:
            if self._closed or not self._start(workers, now_ms) or self._job.now_ms != now_ms:  # type: ignore[union-attr]
                return
            self._queue.append((symbol, tf))
            self._changed.notify_all()

    def _start(self, workers: Workers, now_ms: int) -> bool:
        """The run directory, what every page shares and the feeder, made by the first unit to end."""
        if self._job is not None:
            return True
        try:
            css_href, _ = _css(self._folder)
            self._generation = Generation(Path(self.settings.public_dir))
        except CoinPredictError as exc:  # publish reports it when it runs
            log.warning("no early publish: %s", exc)
            self._closed = True
            return False
        templates = _Templates(self._folder, template_cache_dir(self.settings.data_dir))
        self._job = _EarlyJob(self.settings, "", "1h", now_ms, PageContext(self.settings.site_title, css_href, now_ms),
                              templates, self._generation.dir, self._generation.root)
        self._workers = workers
        self._feeder = threading.Thread(target=self._feed, args=(workers,), name="early-publish", daemon=True)
        self._feeder.start()
        return True

    def _feed(self, workers: Workers) -> None:
        """Send queued series one at a time, each when the workers have room, until stopped."""
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._closed)
                if self._closed:
                    return
            while not workers.wait_below(workers.workers + AHEAD, IDLE_POLL_S):
                if self._closed or not workers.parallel:
                    return
            with self._changed:
                if self._closed:
                    return
                symbol, tf = self._queue.popleft()
                job = replace(self._job, symbol=symbol, timeframe=tf)  # type: ignore[type-var]
                self._pending[(symbol, tf)] = workers.submit(render_early, job)

    def finish(self, now_ms: int) -> dict[Key, SeriesHealth]:
        """The units are done: send every queued series now, wait for all, and return the status
        of each series read at ``now_ms`` (for :func:`~coin_core.status.build_status`).

        Queued series are sent without waiting for room: nothing else in the cycle needs the
        workers any more, and publish would otherwise read them one by one in this process.
        """
        with self._changed:  # closed with the queue taken: the feeder cannot pop it any more
            queued, self._queue = list(self._queue), deque()
            started, self._closed = self._job is not None and not self._closed, True
            self._changed.notify_all()
        pending = self._stop()
        if started:
            for symbol, tf in queued:
                job = replace(self._job, symbol=symbol, timeframe=tf)  # type: ignore[type-var]
                pending[(symbol, tf)] = self._workers.submit(render_early, job)  # type: ignore[union-attr]
        self._collect(pending)
        if self._job is None or self._job.now_ms != now_ms:
            return {}
        return {key: health for key, (health, _, _) in self._done.items()}

    def _stop(self) -> dict[Key, Callable[[], Rendered]]:
        """Stop sending (queued series are left to publish); the series sent, to wait for."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        if self._feeder is not None:
            self._feeder.join()
        pending, self._pending = self._pending, {}
        return pending

    def generation(self, public: Path) -> Generation | None:
        """The run directory the early files are staged in, handed to publish once."""
        found = self._generation
        if found is None or self._handed or Path(public) != found.public:
            return None
        self._handed = True
        return found

    def _collect(self, pending: dict[Key, Callable[[], Rendered]]) -> None:
        for key, result in pending.items():
            try:
                self._done[key] = result()
            except Exception as exc:  # noqa: BLE001 - publish reads and renders it again (and reports a real fault)
                log.warning("early files of %s %s not used (%s): publish renders them", *key, exc)

    def adopt(self, picture: StatusPicture, now_ms: int, writer: _Writer) -> dict[Key, SeriesState]:
        """Record in ``writer`` the early series the picture agrees with; their states by series."""
        self._collect(self._stop())
        done, self._done = self._done, {}
        self._adopted = True
        if not self._handed or writer.generation is not self._generation or self._job is None \
                or self._job.now_ms != now_ms or not picture.store.reachable:
            return {}
        judged = {(h.symbol, h.timeframe): h for h in picture.series}
        known: dict[Key, SeriesState] = {}
        for key, (health, state, files) in done.items():
            if key in judged and (judged[key] is health or _agrees(state, judged[key])):
                for rel, size, staged in files:
                    if staged:
                        writer.generation.adopt(rel)
                    writer.record(rel, size, staged)
                known[key] = state
        return known

    def __enter__(self) -> "EarlyPublish":
        return self

    def __exit__(self, *exc: object) -> None:
        _wait(self._stop())  # the workers finish writing before the directory goes
        if self._generation is not None and not (self._handed and self._adopted):
            self._generation.discard()  # publish never ran, or failed before it took these files


def _wait(pending: dict[Key, Callable[[], Rendered]]) -> None:
    for result in pending.values():
        try:
            result()
        except Exception:  # noqa: BLE001 - discarded anyway
            pass


def _agrees(state: SeriesState, h: SeriesHealth) -> bool:
    """The early read saw the series as the status picture does (same data, same verdicts)."""
    def run(forecast: object) -> tuple[object, ...] | None:
        return None if forecast is None else (forecast.issued_at, forecast.model_version)  # type: ignore[attr-defined]

    return h.from_store and (
        state.first_ts, state.latest_ts, state.history, state.prediction, state.ingest, state.health, run(state.forecast)
    ) == (h.first_ts, h.latest_ts, h.history, h.prediction, h.ingest, _public(h.health), run(h.forecast))
