"""Embedded SQLite backend (stdlib, WAL): the zero-setup default store under ``DATA_DIR``.

Threads: each thread reads through its own connection (WAL readers never block each other),
and writes go one at a time through a process-wide lock (SQLite has one writer; queueing on a
lock is cheaper than SQLite's busy-retry sleeps). :meth:`SQLiteStore.close` closes the
connections of every thread, not just the caller's.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from itertools import repeat
from pathlib import Path

import pandas as pd

from ..candles import CheckedCandles
from ..errors import StorageError
from ..timeframes import Timeframe
from .connections import ThreadConnections
from .base import CandleStore, Forecast, ForecastRow, points_payload, rows_frame

__all__ = ["SQLiteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS candles (
    symbol TEXT NOT NULL, timeframe TEXT NOT NULL, ts INTEGER NOT NULL,
    open REAL NOT NULL, high REAL NOT NULL, low REAL NOT NULL, close REAL NOT NULL,
    volume REAL NOT NULL,
    PRIMARY KEY (symbol, timeframe, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS known_gaps (
    symbol TEXT NOT NULL, timeframe TEXT NOT NULL, start_ts INTEGER NOT NULL, end_ts INTEGER NOT NULL,
    PRIMARY KEY (symbol, timeframe, start_ts)
);
CREATE TABLE IF NOT EXISTS forecast_runs (
    symbol TEXT NOT NULL, timeframe TEXT NOT NULL, issued_at INTEGER NOT NULL,
    role TEXT NOT NULL, model TEXT NOT NULL,
    model_version TEXT NOT NULL, input_last_ts INTEGER NOT NULL, points TEXT NOT NULL,
    PRIMARY KEY (symbol, timeframe, issued_at, role, model)
) WITHOUT ROWID;
"""

# Stores written before forecasts had roles kept one champion run per (series, issued_at) in
# ``forecasts``: carried over once, in the same transaction that drops the old table.
_MIGRATE = """
INSERT OR IGNORE INTO forecast_runs
SELECT symbol, timeframe, issued_at, 'champion',
       CASE WHEN instr(model_version, '-') > 0 THEN substr(model_version, 1, instr(model_version, '-') - 1)
            ELSE model_version END,
       model_version, input_last_ts, points FROM forecasts;
DROP TABLE forecasts;
"""
_FORECAST_FIELDS = "issued_at, role, model, model_version, input_last_ts, points"


class SQLiteStore(CandleStore):
    name = "sqlite"

    def __init__(self, path: Path, budget_bytes: int | None = None) -> None:
        super().__init__(budget_bytes)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()  # serialises the write path
        # One connection per thread (Prefect and the ingest fan-out run series in threads).
        self._conns = ThreadConnections(self.path, ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"))
        conn = self._conn()
        try:
            conn.executescript(_SCHEMA)
            legacy = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='forecasts'").fetchall()
            if legacy:
                conn.executescript(f"BEGIN IMMEDIATE;{_MIGRATE}COMMIT;")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot prepare SQLite store {self.path.name}: {exc}") from exc

    def _conn(self) -> sqlite3.Connection:
        try:
            return self._conns.get()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite store {self.path}: {exc}") from exc

    def _exec(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite error on {self.path.name}: {exc}") from exc

    def _write(self, sql: str, params: tuple = ()) -> None:
        with self._lock:
            self._exec(sql, params)

    @staticmethod
    def _where(start: int | None, end: int | None, column: str = "ts") -> tuple[str, tuple]:
        clause, params = "", ()
        if start is not None:
            clause, params = clause + f" AND {column} >= ?", params + (int(start),)
        if end is not None:
            clause, params = clause + f" AND {column} <= ?", params + (int(end),)
        return clause, params

    def _write_candles(self, symbol: str, tf: Timeframe, candles: CheckedCandles) -> None:
        # Column lists zipped lazily: a list of a thousand row lists would wake the garbage
        # collector (a full pass over ccxt's and pandas' objects) several times a page.
        n = len(candles)
        rows = zip(repeat(symbol, n), repeat(tf, n), candles.ts.tolist(), *(c.tolist() for c in candles.values.T))
        conn = self._conn()
        try:
            with self._lock, conn:  # one transaction: a page is stored whole or not at all
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT OR REPLACE INTO candles VALUES (?,?,?,?,?,?,?,?)", rows)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite write failed for {symbol} {tf}: {exc}") from exc

    def _read_rows(self, symbol, tf, start, end, limit) -> list[tuple]:
        clause, params = self._where(start, end)
        sql = f"SELECT ts,open,high,low,close,volume FROM candles WHERE symbol=? AND timeframe=?{clause} ORDER BY ts LIMIT ?"
        return self._exec(sql, (symbol, tf) + params + (int(limit),))

    def _read_page(self, symbol, tf, start, end, limit) -> pd.DataFrame:
        return rows_frame(self._read_rows(symbol, tf, start, end, limit))

    def _read_tail(self, symbol, tf, n) -> pd.DataFrame:
        sql = "SELECT ts,open,high,low,close,volume FROM candles WHERE symbol=? AND timeframe=? ORDER BY ts DESC LIMIT ?"
        return rows_frame(self._exec(sql, (symbol, tf, int(n)))[::-1])  # ascending: no sort after

    def _bounds(self, symbol, tf):
        row = self._exec("SELECT MIN(ts), MAX(ts) FROM candles WHERE symbol=? AND timeframe=?", (symbol, tf))[0]
        return None if row[0] is None else (int(row[0]), int(row[1]))

    def _count(self, symbol, tf, start, end) -> int:
        clause, params = self._where(start, end)
        return int(self._exec(f"SELECT COUNT(*) FROM candles WHERE symbol=? AND timeframe=?{clause}", (symbol, tf) + params)[0][0])

    def _delete(self, symbol, tf, start, end) -> None:
        clause, params = self._where(start, end)
        self._write(f"DELETE FROM candles WHERE symbol=? AND timeframe=?{clause}", (symbol, tf) + params)

    def _write_gap(self, symbol, tf, start, end) -> None:
        self._write("INSERT OR REPLACE INTO known_gaps VALUES (?,?,?,?)", (symbol, tf, int(start), int(end)))

    def _read_gaps(self, symbol, tf):
        rows = self._exec("SELECT start_ts, end_ts FROM known_gaps WHERE symbol=? AND timeframe=?", (symbol, tf))
        return [(int(a), int(b)) for a, b in rows]

    def _write_forecast(self, forecast: Forecast) -> None:
        self._write(
            "INSERT OR REPLACE INTO forecast_runs VALUES (?,?,?,?,?,?,?,?)",
            (forecast.symbol, forecast.timeframe, int(forecast.issued_at), forecast.role, forecast.model,
             forecast.model_version, int(forecast.input_last_ts),
             json.dumps(points_payload(forecast.points), separators=(",", ":"), allow_nan=False)),
        )

    def _read_latest_forecast(self, symbol, tf, role) -> ForecastRow | None:
        rows = self._exec(
            f"SELECT {_FORECAST_FIELDS} FROM forecast_runs WHERE symbol=? AND timeframe=? AND role=? "
            "ORDER BY issued_at DESC LIMIT 1", (symbol, tf, role))
        return tuple(rows[0]) if rows else None  # type: ignore[return-value]

    def _read_forecasts(self, symbol, tf, start, end, role) -> list[ForecastRow]:
        clause, params = self._where(start, end, "issued_at")
        if role is not None:
            clause, params = clause + " AND role = ?", params + (role,)
        return [tuple(row) for row in self._exec(  # type: ignore[misc]
            f"SELECT {_FORECAST_FIELDS} FROM forecast_runs WHERE symbol=? AND timeframe=?{clause}", (symbol, tf) + params)]

    def _delete_forecasts(self, symbol, tf, issued_before) -> None:
        self._write("DELETE FROM forecast_runs WHERE symbol=? AND timeframe=? AND issued_at < ?", (symbol, tf, issued_before))

    def _series(self):
        return [(s, t) for s, t in self._exec("SELECT DISTINCT symbol, timeframe FROM candles")]

    def _size_bytes(self) -> int:
        # Pages in use, not the file size: deleted rows free pages that SQLite reuses, so
        # retention makes room under the budget without a VACUUM (the file never shrinks).
        (page_size,), (pages,), (free,) = (self._exec(f"PRAGMA {p}")[0] for p in ("page_size", "page_count", "freelist_count"))
        return int(page_size) * (int(pages) - int(free))

    def close(self) -> None:
        """Close every thread's connection; a later call on any thread opens a fresh one."""
        with self._lock:  # not in the middle of a write
            self._conns.close()
