"""Worker processes for CPU-bound work: a cycle's forecasts and pages, an evaluation's fits.

One Python process computes on one core at a time (the GIL). A cycle's ingest threads mostly
wait on the exchange, but its forecasts (four models banded per series) and its pages (chart and
template per series) are pure CPU: in one process a 50-symbol cycle used one core of two.
:class:`Workers` runs such calls in a small process pool and falls back to this process when it
has no pool or its pool broke.

Why forkserver, not fork: the caller may hold threads (ingest threads, Prefect's API and log
threads), and forking a threaded process can copy a lock another thread held into the child.
The server process is started once per process (:func:`start_server` boots it early, so its
imports overlap the caller's network waits), imports :data:`PRELOAD` once, and forks every
worker from that clean state: a cycle's workers then start in milliseconds. ``__main__`` is not
preloaded: only ``coin_core`` functions are sent to workers, and re-running a caller's script
(a benchmark, Prefect's entry point) in the server cost seconds.

Each worker uses one BLAS thread: the pool already fills the cores, and OpenBLAS threads spin
while they wait (ETS fits ran 2.1x slower with two workers of two BLAS threads each).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import sys
import threading
import types
from contextlib import contextmanager
from itertools import islice
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import forkserver, util
from typing import Any, Callable, Iterable, Iterator, TypeVar

from threadpoolctl import threadpool_limits

__all__ = ["MIN_POOL_JOBS", "PRELOAD", "Workers", "default_workers", "kept_open", "pool_size", "process_pool", "shared_or_own",
           "start_server"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: What the fork server imports once for every worker it forks (a missing module is skipped).
#: The cycle's worker functions only: not ccxt (~0.6 s of imports) nor the evaluation's scipy.
PRELOAD = ["coin_core.forecast.predict", "coin_core.lifecycle.steps", "coin_core.publish.site"]


def default_workers() -> int:
    """The cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def start_server() -> None:
    """Start the fork server now (idempotent): its imports then run while the caller works."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return
    multiprocessing.get_context("forkserver").set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()


@contextmanager
def _main_not_rerun() -> Iterator[None]:
    """Start workers without re-running the caller's ``__main__`` in each of them.

    multiprocessing re-imports the parent's main module in every new worker (its "main fixup"):
    for a Prefect flow run that is ``prefect.engine`` (seconds of imports per worker), for a
    script its whole body. Workers here only run ``coin_core`` functions, so they are started
    while ``__main__`` is a bare module. Only the starting thread sees the swap's effect: the
    pool is built before any thread of the caller sends it work.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _ready() -> None:
    """A no-op: submitted once per worker so that all of them start at once."""


def _one_blas_thread() -> None:
    """Limit the BLAS libraries loaded now (threadpoolctl) and those a call loads later (a BLAS
    reads its thread count from the environment when it loads: scipy brings its own)."""
    os.environ.update({name: "1" for name in _BLAS_THREAD_VARS})
    threadpool_limits(1)


def _start_worker() -> None:
    """A worker process's initializer: one BLAS thread, and a place for what it keeps open."""
    global _KEPT
    _one_blas_thread()
    _KEPT = {}


#: What a worker process keeps open between calls (:func:`kept_open`); None outside workers.
_KEPT: dict[str, Any] | None = None

C = TypeVar("C")


@contextmanager
def kept_open(key: str, factory: Callable[[], C]) -> Iterator[C]:
    """``factory()`` (a store, a score book: closable context managers) for the length of a call.

    In a worker process the first one per ``key`` stays open for the worker's life, and closes
    when the worker exits: a cycle's worker scores and forecasts hundreds of series, and opening
    and closing a store and a score book for each cost ~1.7 ms (a WAL checkpoint at every last
    close). Elsewhere (in-process runs, a broken pool's fallback on the caller's threads) it is
    opened here and closed after the call. ``key`` must name everything ``factory`` depends on.
    """
    if _KEPT is None:
        with factory() as opened:  # type: ignore[attr-defined]
            yield opened
        return
    if key not in _KEPT:
        opened = factory()
        _KEPT[key] = opened
        util.Finalize(opened, opened.close, exitpriority=0)  # type: ignore[attr-defined]
    yield _KEPT[key]


_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def process_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes forked from the fork server, one BLAS thread each."""
    start_server()
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"),
                               initializer=_start_worker)


class Workers:
    """Calls run in worker processes when ``workers`` > 1, else (or once the pool broke) here.

    A context manager; the pool's processes end with it. Every function and argument sent must
    be picklable (module-level ``coin_core`` functions, settings, plain values).
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None
        self._busy = 0  # calls sent and not finished
        self._changed = threading.Condition()
        if self.workers > 1:
            self._pool = process_pool(self.workers)
            with _main_not_rerun():  # every worker starts here, not lazily on a caller's thread
                for _ in range(self.workers):
                    self._pool.submit(_ready)

    @property
    def parallel(self) -> bool:
        """True while calls go to worker processes."""
        return self._pool is not None

    def chunk_size(self, jobs: int) -> int:
        """Items per call for ``jobs`` items: few calls (each is a round trip to a worker), yet
        about four per worker, so that all stay busy to the end and held results stay bounded."""
        return max(1, min(16, jobs // (self.workers * 4)))

    def batches(self, items: list[T]) -> list[list[T]]:
        """``items`` in runs of :meth:`chunk_size` (for calls that open a store once per batch)."""
        return list(_batched(iter(items), self.chunk_size(len(items))))

    def call(self, fn: Callable[..., R], *args: Any) -> R:
        """``fn(*args)`` in a worker; here when there is no pool or it broke (a killed worker)."""
        return self.submit(fn, *args)()

    def submit(self, fn: Callable[..., R], *args: Any) -> Callable[[], R]:
        """Start ``fn(*args)`` in a worker now; the returned callable waits for its result (and
        computes it here if there is no pool or it broke meanwhile)."""
        pool = self._pool
        if pool is None:
            return lambda: fn(*args)
        try:
            future = self._track(pool.submit(_run_pickled, _pickled(fn, args)))
        except BrokenProcessPool as exc:
            self._broke(exc)
            return lambda: fn(*args)

        def result() -> R:
            try:
                return future.result()
            except BrokenProcessPool as exc:
                self._broke(exc)
                return fn(*args)
        return result

    def map(self, fn: Callable[[T], R], items: Iterable[T], chunksize: int = 1, *,
            eager: bool = False) -> Iterator[R]:
        """``fn`` over ``items`` in order, ``chunksize`` items a call; what a broken pool did not
        return is computed here. ``items`` is read as calls are sent: with ``eager``, all of it
        now, each call sent as soon as its items are read (the workers start while the caller
        still produces them, and the caller can work while they run); else two calls per worker
        ahead of the reader, to bound the results held."""
        source = _batched(iter(items), max(1, chunksize))
        if self._pool is None:
            return (result for chunk in source for result in map(fn, chunk))
        ahead = None if eager else 2 * self.workers
        pending: deque[tuple[list[T], Future[Any]]] = deque()
        self._top_up(pending, fn, source, ahead)
        return self._drain(pending, fn, source, ahead)

    def _top_up(self, pending: deque[tuple[list[T], Future[Any]]], fn: Callable[[T], R],
                source: Iterator[list[T]], ahead: int | None) -> None:
        while self._pool is not None and (ahead is None or len(pending) < ahead):
            chunk = next(source, None)
            if chunk is None:
                return
            try:
                pending.append((chunk, self._track(self._pool.submit(_run_pickled, _pickled(_run_chunk, (fn, chunk))))))
            except BrokenProcessPool as exc:
                self._broke(exc)
                pending.append((chunk, _failed(exc)))

    def _drain(self, pending: deque[tuple[list[T], Future[Any]]], fn: Callable[[T], R],
               source: Iterator[list[T]], ahead: int | None) -> Iterator[R]:
        while pending:
            chunk, future = pending.popleft()
            try:
                results: list[R] = future.result()
            except BrokenProcessPool as exc:
                self._broke(exc)
                results = [fn(item) for item in chunk]
            yield from results
            self._top_up(pending, fn, source, ahead)
        for chunk in source:  # the pool broke before these were sent
            yield from map(fn, chunk)

    def wait_below(self, limit: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s until fewer than ``limit`` calls are in flight (sent, not
        finished); False on timeout or once there is no pool."""
        with self._changed:
            return self._changed.wait_for(lambda: self._pool is not None and self._busy < limit, timeout)

    def _track(self, future: Future[Any]) -> Future[Any]:
        with self._changed:
            self._busy += 1
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future: Future[Any]) -> None:
        with self._changed:
            self._busy -= 1
            self._changed.notify_all()

    def _broke(self, exc: BaseException) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            log.warning("a worker process died (%s): the rest runs in this process", exc)
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _batched(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(items, size)):
        yield chunk


def _failed(exc: BaseException) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_exception(exc)
    return future


def _pickled(fn: Callable[..., Any], args: tuple[Any, ...]) -> bytes:
    """The call, pickled now in the caller's thread: the pool's feeder thread would pickle it
    later, while the caller may already be changing the arguments (a page's state fills its
    cached properties as it renders: "dictionary changed size during iteration")."""
    return pickle.dumps((fn, args), protocol=pickle.HIGHEST_PROTOCOL)


def _run_pickled(call: bytes) -> Any:
    fn, args = pickle.loads(call)
    return fn(*args)


def _run_chunk(fn: Callable[[T], R], items: list[T]) -> list[R]:
    return [fn(item) for item in items]


#: Below this many units a pool costs more than it saves (forking the workers, sending each call).
MIN_POOL_JOBS = 8


def pool_size(configured: int, jobs: int) -> int:
    """Processes for ``jobs`` CPU-bound units: ``configured`` (0: one per core), never more than
    there are jobs, and 1 (no pool) for fewer than :data:`MIN_POOL_JOBS`."""
    if jobs < MIN_POOL_JOBS:
        return 1
    return max(1, min(configured or default_workers(), jobs))


@contextmanager
def shared_or_own(workers: Workers | None, configured: int, jobs: int) -> Iterator[Workers]:
    """The caller's ``workers`` (one pool for a whole cycle), or a pool of this call's own."""
    if workers is not None:
        yield workers
        return
    with Workers(pool_size(configured, jobs)) as own:
        yield own
