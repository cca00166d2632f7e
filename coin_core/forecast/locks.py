"""A per-series file lock (``fcntl.flock``) around every change of a series' registry state.

An advisory lock on ``<series dir>/.lock``: the kernel drops it when the holder dies, so a killed
promotion never leaves a series locked. Two promotions at once: the second is refused at once
(``wait_s=0``) or after waiting (registration waits, it never refuses work).
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import LockError, ModelError

__all__ = ["series_lock", "LOCK_FILE"]

LOCK_FILE = ".lock"
_POLL_S = 0.05


@contextmanager
def series_lock(directory: Path, what: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock of ``directory``; LockError naming ``what`` if another holder keeps it."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:  # a full or read-only disk: one clean line, like any registry write
        raise ModelError(f"cannot write the lock file of {what}: {exc.strerror or exc}") from exc
    try:
        deadline = time.monotonic() + max(0.0, wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockError(f"another model change of {what} is in progress: refused") from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
