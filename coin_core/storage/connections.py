"""One SQLite connection per thread, all of them closable from any thread.

The candle store and the score book are both used from the series threads of a cycle: SQLite
connections must not be shared across threads, yet ``close()`` (called from one thread) has to
close every thread's connection. ``check_same_thread=False`` is set only for that close.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Sequence

__all__ = ["ThreadConnections"]


class ThreadConnections:
    """Per-thread connections to ``path`` in autocommit mode, each set up with ``pragmas``.

    :meth:`get` raises :class:`sqlite3.Error` (the caller translates it); after :meth:`close` a
    thread's older connection is never reused: the next :meth:`get` opens a fresh one.
    """

    def __init__(self, path: Path, pragmas: Sequence[str]) -> None:
        self.path, self._pragmas = Path(path), tuple(pragmas)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: list[sqlite3.Connection] = []
        self._generation = 0  # bumped by close()

    def get(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "generation", -1) != self._generation:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            for pragma in self._pragmas:
                conn.execute(f"PRAGMA {pragma}")
            with self._lock:
                self._open.append(conn)
            self._local.conn, self._local.generation = conn, self._generation
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
            self._generation += 1
        for conn in conns:
            conn.close()
        self._local.conn = None
