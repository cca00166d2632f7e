"""The live track record: every realised forecast point, scored once, in ``DATA_DIR/scores.sqlite3``.

One row per (series, model version, issued_at, target_ts): the key makes scoring idempotent
(``INSERT OR IGNORE``), and a batch of rows is committed in one transaction together with the
series' watermark, so a kill at any moment leaves the book before or after the batch, never
half-way. Each row keeps what a metric needs without the candle store: the realised close, the
point forecast, both bands, the naive forecast's absolute error on the same point (so MASE of any
subset is ``sum(abs_err) / sum(naive_abs_err)``) and the volatility at issue (for the bands).

A separate file from the candle store on purpose: it is the same on both backends, stdlib only,
and scoring never writes into the InfluxDB the site is read from. A file that is not an SQLite
database (corrupt, truncated, emptied) raises a StorageError naming it: never silently reset.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import StorageError
from ..storage.connections import ThreadConnections

__all__ = ["SCORES_FILE", "ScoreRow", "Skill", "ScoreBook"]

SCORES_FILE = "scores.sqlite3"
_HEADER = b"SQLite format 3\x00"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    symbol TEXT NOT NULL, timeframe TEXT NOT NULL, model_version TEXT NOT NULL, issued_at INTEGER NOT NULL,
    target_ts INTEGER NOT NULL, role TEXT NOT NULL, model TEXT NOT NULL, step INTEGER NOT NULL,
    y REAL NOT NULL, yhat REAL NOT NULL, lo80 REAL NOT NULL, hi80 REAL NOT NULL, lo50 REAL, hi50 REAL,
    naive_abs_err REAL NOT NULL, sigma REAL,
    PRIMARY KEY (symbol, timeframe, model_version, issued_at, target_ts)
);
CREATE INDEX IF NOT EXISTS scores_by_target ON scores (symbol, timeframe, target_ts);
CREATE TABLE IF NOT EXISTS watermarks (
    symbol TEXT NOT NULL, timeframe TEXT NOT NULL, scored_through INTEGER NOT NULL,
    PRIMARY KEY (symbol, timeframe)
);
"""
_COLUMNS = ("symbol", "timeframe", "model_version", "issued_at", "target_ts", "role", "model", "step",
            "y", "yhat", "lo80", "hi80", "lo50", "hi50", "naive_abs_err", "sigma")


@dataclass(frozen=True)
class ScoreRow:
    symbol: str
    timeframe: str
    model_version: str
    issued_at: int
    target_ts: int
    role: str
    model: str
    step: int
    y: float
    yhat: float
    lo80: float
    hi80: float
    lo50: float | None
    hi50: float | None
    naive_abs_err: float
    sigma: float | None


@dataclass(frozen=True)
class Skill:
    """A model's live numbers on a set of scored points (None: nothing scored)."""

    n: int
    mae: float | None
    mase: float | None
    coverage80: float | None
    coverage50: float | None

    @classmethod
    def of(cls, rows: Sequence[tuple[float, float, int, int | None]]) -> "Skill":
        """From (abs_err, naive_abs_err, in80, in50) rows."""
        if not rows:
            return cls(0, None, None, None, None)
        err = sum(r[0] for r in rows)
        naive = sum(r[1] for r in rows)
        with50 = [r[3] for r in rows if r[3] is not None]
        return cls(len(rows), err / len(rows), err / naive if naive > 0 else None,
                   sum(r[2] for r in rows) / len(rows), sum(with50) / len(with50) if with50 else None)


_SKILL = ("ABS(y - yhat), naive_abs_err, (y BETWEEN lo80 AND hi80), "
          "CASE WHEN lo50 IS NULL THEN NULL ELSE (y BETWEEN lo50 AND hi50) END")


class ScoreBook:
    """The score table of every series; one connection per thread (WAL, like the SQLite store)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._check_file()
        self._create()
        self._conns = ThreadConnections(self.path, ("journal_mode=WAL", "busy_timeout=30000"))
        self._run(lambda c: c.executescript(_SCHEMA))

    def _create(self) -> None:
        """A new book is built aside, synced and linked into place: a process opening it at that
        moment (a cycle's worker processes score at once) finds no file or a whole database,
        never the empty file SQLite starts with, which :meth:`_check_file` calls truncated."""
        if self.path.exists():
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
            os.close(fd)
        except OSError as exc:
            raise StorageError(f"cannot create the score file {self.path}: {exc.strerror or exc}") from exc
        try:
            conn = sqlite3.connect(tmp)
            try:
                conn.executescript(_SCHEMA)
                conn.execute("PRAGMA journal_mode=WAL")
            finally:
                conn.close()
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process created it first: theirs stands
                os.link(tmp, self.path)
        except (OSError, sqlite3.Error) as exc:
            raise StorageError(f"cannot create the score file {self.path}: {exc}") from exc
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _check_file(self) -> None:
        try:
            with self.path.open("rb") as handle:
                header = handle.read(len(_HEADER))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise StorageError(f"score file {self.path} is unreadable: {exc.strerror}") from exc
        if header != _HEADER:
            raise StorageError(f"score file {self.path} is corrupt or truncated (not an SQLite database): "
                               "restore it or move it aside (docs/runbooks.md); it is never reset silently")

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    def _run(self, work):  # type: ignore[no-untyped-def]
        try:
            return work(self._conn())
        except sqlite3.Error as exc:
            raise StorageError(f"score file {self.path}: {exc} (corrupt? see docs/runbooks.md)") from exc

    def watermark(self, symbol: str, tf: str) -> int | None:
        rows = self._run(lambda c: c.execute(
            "SELECT scored_through FROM watermarks WHERE symbol=? AND timeframe=?", (symbol, tf)).fetchall())
        return int(rows[0][0]) if rows else None

    def known(self, symbol: str, tf: str, issued_from: int | None) -> set[tuple[str, int, int]]:
        """Keys (version, issued_at, target_ts) already scored for forecasts issued since ``issued_from``."""
        rows = self._run(lambda c: c.execute(
            "SELECT model_version, issued_at, target_ts FROM scores WHERE symbol=? AND timeframe=? AND issued_at >= ?",
            (symbol, tf, issued_from if issued_from is not None else -(2**62))).fetchall())
        return {(str(v), int(i), int(t)) for v, i, t in rows}

    def add(self, symbol: str, tf: str, rows: Iterable[ScoreRow], scored_through: int) -> int:
        """Insert new rows and move the watermark, in one transaction; returns rows inserted."""
        values = [tuple(getattr(r, c) for c in _COLUMNS) for r in rows]

        def work(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                before = conn.total_changes
                conn.executemany(f"INSERT OR IGNORE INTO scores VALUES ({','.join('?' * len(_COLUMNS))})", values)
                inserted = conn.total_changes - before
                conn.execute("INSERT OR REPLACE INTO watermarks VALUES (?,?,?)", (symbol, tf, int(scored_through)))
                conn.execute("COMMIT")
                return inserted
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return int(self._run(work))

    def skill(self, symbol: str, tf: str, version: str | None = None, *, role: str | None = None,
              last_n: int | None = None, on_issues_of: str | None = None) -> Skill:
        """Live skill of a version (or of every point of ``role``), optionally on the latest
        ``last_n`` points, or only on the (issued_at, target_ts) points ``on_issues_of`` also has."""
        where, params = "symbol=? AND timeframe=?", [symbol, tf]
        if version is not None:
            where, params = where + " AND model_version=?", params + [version]
        if role is not None:
            where, params = where + " AND role=?", params + [role]
        if on_issues_of is not None:
            where += (" AND EXISTS (SELECT 1 FROM scores o WHERE o.symbol=scores.symbol AND o.timeframe=scores.timeframe"
                      " AND o.model_version=? AND o.issued_at=scores.issued_at AND o.target_ts=scores.target_ts)")
            params.append(on_issues_of)
        tail = "" if last_n is None else f" ORDER BY target_ts DESC, issued_at DESC LIMIT {int(last_n)}"
        rows = self._run(lambda c: c.execute(f"SELECT {_SKILL} FROM scores WHERE {where}{tail}", params).fetchall())
        return Skill.of(rows)

    def forecasts_scored(self, symbol: str, tf: str, role: str | None = None) -> int:
        """How many issued forecasts have at least one realised point scored."""
        where, params = "symbol=? AND timeframe=?", [symbol, tf]
        if role is not None:
            where, params = where + " AND role=?", params + [role]
        rows = self._run(lambda c: c.execute(f"SELECT COUNT(DISTINCT issued_at) FROM scores WHERE {where}", params).fetchall())
        return int(rows[0][0])

    def versions(self, symbol: str, tf: str) -> list[tuple[str, str, str, int]]:
        """(model_version, role of its latest row, model, points scored), most recent first."""
        return [(str(v), str(r), str(m), int(n)) for v, r, m, n in self._run(lambda c: c.execute(
            "SELECT model_version, role, model, COUNT(*) FROM scores WHERE symbol=? AND timeframe=? "
            "GROUP BY model_version ORDER BY MAX(issued_at) DESC", (symbol, tf)).fetchall())]

    def rows(self, symbol: str, tf: str, *, role: str | None = None, step: int | None = None,
             since_target: int | None = None) -> list[ScoreRow]:
        where, params = "symbol=? AND timeframe=?", [symbol, tf]
        for column, value in (("role", role), ("step", step)):
            if value is not None:
                where, params = where + f" AND {column}=?", params + [value]
        if since_target is not None:
            where, params = where + " AND target_ts >= ?", params + [since_target]
        found = self._run(lambda c: c.execute(
            f"SELECT {','.join(_COLUMNS)} FROM scores WHERE {where} ORDER BY target_ts, issued_at", params).fetchall())
        return [ScoreRow(*row) for row in found]

    def prune(self, symbol: str, tf: str, issued_before: int) -> None:
        """Forget points of forecasts issued before ``issued_before`` (the forecast retention)."""
        self._run(lambda c: c.execute("DELETE FROM scores WHERE symbol=? AND timeframe=? AND issued_at < ?",
                                      (symbol, tf, int(issued_before))))

    def __enter__(self) -> "ScoreBook":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection of every thread that used the book (scoring runs on threads)."""
        self._conns.close()
