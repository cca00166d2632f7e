"""One publish generation: staged outside the served directory, then flipped into it.

Every changed file of a run is first written in full under a private run directory in the
staging area, then all of them are fsynced (:meth:`Generation.seal`: writeback is started for
each file as it is written and the fsyncs run on a few threads, so the file system commits them
in a handful of journal transactions instead of one per file; one fsync after another cost ~3 ms
a file here, most of a cycle's publish); only when all of them are on disk are they renamed into
``public/``, in the order given (data, pages, then ``index.html`` and ``manifest.json``). A run
that fails while staging (a full disk, a read-only file system) removes its run directory and
leaves ``public/`` exactly as the last good publish left it: a reader never sees a mix of two
generations because of a failed write. Renames need no new space, so the flip itself only fails
on a real obstruction (see docs/architecture.md, "Publish generations").

The staging area is ``<parent>/.<public name>.staging``, a sibling on the same file system,
so nothing half-written ever sits in the directory a host or ``rsync`` serves. When the parent
cannot hold it (not writable, or ``public/`` is its own mount point) it falls back to
``public/.staging``, a dot-directory that nginx refuses and the documented rsync excludes.
Runs killed mid-way leave their run directory behind; the next run removes those older than
:data:`~coin_core.fsutil.STALE_TEMP_S`, and old-style temp files in ``public/`` as well.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ..errors import PublishError
from ..fsutil import STALE_TEMP_S, remove_stale_temps

__all__ = ["Generation", "staging_root", "write_staged", "RUN_PREFIX"]

log = logging.getLogger(__name__)

RUN_PREFIX = "run-"
INNER_STAGING = ".staging"
SYNC_THREADS = 8  # fsync releases the GIL; concurrent ones share journal commits


def staging_root(public: Path) -> Path:
    """The staging area of ``public`` (created): a same-file-system sibling, else inside it."""
    public.mkdir(parents=True, exist_ok=True)
    sibling = public.parent / f".{public.name}.staging"
    try:
        if public.parent.stat().st_dev == public.stat().st_dev:
            sibling.mkdir(exist_ok=True)
            return sibling
        log.warning("%s is a mount point of its own: staging inside it", public)
    except OSError as exc:
        log.warning("cannot stage next to %s (%s): staging inside it instead", public, exc.strerror or exc)
    inner = public / INNER_STAGING
    inner.mkdir(exist_ok=True)
    return inner


def _newest_mtime(folder: Path) -> float:
    newest = folder.stat().st_mtime
    for base, _dirs, files in os.walk(folder):
        for name in files:
            try:
                newest = max(newest, os.stat(os.path.join(base, name)).st_mtime)
            except OSError:
                continue
    return newest


def _remove_stale_runs(root: Path, older_than_s: float) -> list[str]:
    """Run directories left by killed publishes (only ours: ``run-*`` directories, aged)."""
    cutoff, removed = time.time() - older_than_s, []
    for folder in sorted(root.glob(f"{RUN_PREFIX}*")):
        try:
            if folder.is_dir() and not folder.is_symlink() and _newest_mtime(folder) < cutoff:
                shutil.rmtree(folder)
                removed.append(folder.name)
        except OSError:
            continue  # removed meanwhile: nothing to do
    return removed


def write_staged(run_dir: Path, root: Path, rel: str, data: bytes) -> None:
    """Write ``rel`` in full under ``run_dir`` (of staging area ``root``), writeback started;
    PublishError if it cannot be. What :meth:`Generation.stage` does, for a worker process too."""
    path = run_dir / rel
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with open(fd, "wb", closefd=False) as handle:
                handle.write(data)
            os.fchmod(fd, 0o644)  # whatever the umask: the site is world-readable
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # start writeback now, for seal()
        finally:
            os.close(fd)
    except OSError as exc:
        raise _write_error(root, rel, exc) from exc


def _write_error(root: Path, rel: str, exc: OSError) -> PublishError:
    return PublishError(f"cannot write {rel} (staged in {root}): {exc.strerror or exc}; the previous site is kept")


class Generation:
    """Stage files with :meth:`stage`, :meth:`seal` them, then :meth:`flip` them into ``public`` or :meth:`discard`."""

    def __init__(self, public: Path, *, stale_after_s: float = STALE_TEMP_S) -> None:
        self.public = Path(public)
        try:
            self.root = staging_root(self.public)
            self.cleaned = _remove_stale_runs(self.root, stale_after_s) + remove_stale_temps(
                self.public, older_than_s=stale_after_s)
            self.dir = Path(tempfile.mkdtemp(prefix=RUN_PREFIX, dir=self.root))
        except OSError as exc:
            raise PublishError(f"cannot prepare the staging area of {self.public}: {exc.strerror or exc}") from exc
        if self.cleaned:
            log.info("removed %d leftover(s) of interrupted publishes: %s", len(self.cleaned), ", ".join(self.cleaned))
        self.staged: list[str] = []

    def stage(self, rel: str, data: bytes) -> None:
        """Write ``rel`` in full to the run directory (durable only after :meth:`seal`);
        PublishError (nothing served changed) if it cannot be."""
        write_staged(self.dir, self.root, rel, data)
        self.staged.append(rel)

    def adopt(self, rel: str) -> None:
        """Take in ``rel``, written to the run directory by another process (:func:`write_staged`)."""
        if not (self.dir / rel).is_file():
            raise PublishError(f"{rel} is not staged in {self.dir}")
        self.staged.append(rel)

    def seal(self) -> None:
        """fsync every staged file (a full disk can first show here); PublishError if one fails."""
        with ThreadPoolExecutor(max_workers=SYNC_THREADS, thread_name_prefix="publish-fsync") as pool:
            failures = [(rel, exc) for rel, exc in pool.map(self._sync, self.staged) if exc is not None]
        if failures:
            rel, exc = failures[0]
            raise self._error(rel, exc) from exc

    def _sync(self, rel: str) -> tuple[str, OSError | None]:
        try:
            fd = os.open(self.dir / rel, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            return rel, exc
        return rel, None

    def _error(self, rel: str, exc: OSError) -> PublishError:
        return _write_error(self.root, rel, exc)

    def flip(self, order: Callable[[str], int] | None = None) -> None:
        """Rename every staged (and sealed) file into ``public``, in staging order or stably
        sorted by ``order``, then drop the run directory."""
        try:
            for rel in self.staged if order is None else sorted(self.staged, key=order):
                target = self.public / rel
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(self.dir / rel, target)
                except OSError as exc:
                    raise PublishError(f"cannot write {rel} in {self.public}: {exc.strerror or exc}") from exc
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
