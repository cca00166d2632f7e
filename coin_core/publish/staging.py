"""One publish generation: staged outside the served directory, then flipped into it.

Every changed file of a run is first written in full (and fsynced) under a private run
directory in the staging area; only when all of them are on disk are they renamed into
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
from pathlib import Path

from ..errors import PublishError
from ..fsutil import STALE_TEMP_S, durable_write_bytes, remove_stale_temps

__all__ = ["Generation", "staging_root", "RUN_PREFIX"]

log = logging.getLogger(__name__)

RUN_PREFIX = "run-"
INNER_STAGING = ".staging"


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


class Generation:
    """Stage files with :meth:`stage`, then :meth:`flip` them into ``public`` or :meth:`discard`."""

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
        """Write ``rel`` in full to the run directory; PublishError (nothing served changed) if not."""
        path = self.dir / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            durable_write_bytes(path, data)
        except OSError as exc:
            raise PublishError(
                f"cannot write {rel} (staged in {self.root}): {exc.strerror or exc}; the previous site is kept"
            ) from exc
        self.staged.append(rel)

    def flip(self) -> None:
        """Rename every staged file into ``public`` in staging order, then drop the run directory."""
        try:
            for rel in self.staged:
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
