"""Atomic file writes: a reader sees the old file or the new one, never a partial one.

Temp files are named ``.<name>.<8 random chars>.tmp`` (``tempfile.mkstemp``) in the target's
directory; a process killed between create and rename leaves one behind, so every long-lived
writer calls :func:`remove_stale_temps` on its directories (only this exact pattern, only files
older than ``STALE_TEMP_S``, so a concurrent writer's live temp file is never taken away).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = [
    "STALE_TEMP_S",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "durable_write_bytes",
    "is_our_temp",
    "remove_stale_temps",
    "safe_child",
]

STALE_TEMP_S = 60.0
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def durable_write_bytes(path: Path, data: bytes) -> None:
    """Create ``path`` (new or replaced, not atomically) with ``data`` on disk (fsync), mode 0644.

    For staging files that no reader sees until they are renamed into place.
    """
    path = Path(path)
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(path, 0o644)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same directory, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, ensure_ascii=False, separators=(",", ":"), sort_keys=True))


def is_our_temp(name: str) -> bool:
    """Whether a file name has the shape of an :func:`atomic_write_bytes` temp file."""
    return bool(_TEMP_NAME.match(name))


def remove_stale_temps(root: Path, *, older_than_s: float = STALE_TEMP_S, now: float | None = None) -> list[str]:
    """Delete leftover temp files under ``root`` (recursively); returns their relative paths.

    Only regular files matching the temp pattern and not modified for ``older_than_s`` go: a
    temp file that young may belong to a writer that is still running.
    """
    root = Path(root)
    cutoff = (time.time() if now is None else now) - older_than_s
    removed = []
    for path in sorted(root.rglob(".*.tmp")) if root.is_dir() else []:
        try:
            if is_our_temp(path.name) and path.is_file() and not path.is_symlink() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed.append(str(path.relative_to(root)))
        except OSError:
            continue  # gone meanwhile, or not ours to delete: the next run tries again
    return removed


def safe_child(root: Path, name: str) -> Path:
    """``root / name`` for a single plain file name; anything that could escape root is refused."""
    if not name or name in {".", ".."} or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"unsafe file name {name!r}")
    return Path(root) / name
