"""Runtime metrics: one record per flow run (its duration and its steps'), and summaries of them.

Records live in one SQLite table, ``DATA_DIR/metrics/runs.sqlite3``: an append is one
transaction (a reader never sees half a record, several workers may append at once), and each
append prunes records older than ``METRICS_RETENTION_DAYS`` so the file stays small (a 5-minute
monitor and an hourly cycle add ~2,200 rows a week).

The same records are the cycle heartbeat: :func:`last_run` says when a cycle of a timeframe last
reached its end (failed or not). A worker that is down records nothing, and the monitor alerts.

Times are passed in (``now_ms``) rather than read from the clock, so the soak benchmark can run
simulated days. Everything here is stdlib + typed dataclasses; nothing imports Prefect.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from .errors import StorageError

__all__ = [
    "RunRecord",
    "RunTimer",
    "WindowStats",
    "FlowStats",
    "WINDOWS",
    "metrics_path",
    "record_run",
    "read_runs",
    "last_run",
    "summarize",
    "percentile",
]

#: Summary windows: label -> length in ms.
WINDOWS: dict[str, int] = {"24h": 86_400_000, "7d": 7 * 86_400_000}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    flow TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    duration_s REAL NOT NULL,
    outcome TEXT NOT NULL,
    steps TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_flow_started ON runs (flow, started_at);
"""


@dataclass(frozen=True)
class RunRecord:
    """One finished run. ``flow`` is the flow plus its scope, e.g. ``cycle 1h``, ``train``."""

    flow: str
    started_at: int
    duration_s: float
    outcome: str = "completed"
    steps: dict[str, float] = field(default_factory=dict)

    @property
    def finished_at(self) -> int:
        return self.started_at + int(self.duration_s * 1000)


class RunTimer:
    """Times a run and its steps: ``with timer.step("ingest"): ...`` then :meth:`record`.

    A step entered twice adds up; a step that raised is still timed.
    """

    def __init__(self, flow: str, started_at_ms: int | None = None) -> None:
        self.flow = flow
        self.started_at = started_at_ms if started_at_ms is not None else int(time.time() * 1000)
        self._began = time.perf_counter()
        self.steps: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + time.perf_counter() - began

    def record(self, data_dir: Path, outcome: str, retention_days: int = 8) -> RunRecord:
        rec = RunRecord(self.flow, self.started_at, time.perf_counter() - self._began, outcome,
                        {k: round(v, 4) for k, v in self.steps.items()})
        record_run(data_dir, rec, now_ms=rec.finished_at, retention_days=retention_days)
        return rec


def metrics_path(data_dir: Path) -> Path:
    return Path(data_dir) / "metrics" / "runs.sqlite3"


@contextmanager
def _connect(data_dir: Path, create: bool) -> Iterator[sqlite3.Connection | None]:
    path = metrics_path(data_dir)
    if not create and not path.is_file():
        yield None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=30)
    except (OSError, sqlite3.Error) as exc:
        raise StorageError(f"cannot open the run metrics in {path.parent}: {exc}") from exc
    try:
        conn.executescript(_SCHEMA)
        with conn:
            yield conn
    except sqlite3.Error as exc:
        raise StorageError(f"run metrics in {path} unusable: {exc}") from exc
    finally:
        conn.close()


def record_run(data_dir: Path, record: RunRecord, *, now_ms: int, retention_days: int = 8) -> None:
    """Append ``record`` and prune what is older than ``retention_days`` before ``now_ms``."""
    with _connect(data_dir, create=True) as conn:
        assert conn is not None
        conn.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
                     (record.flow, record.started_at, float(record.duration_s), record.outcome,
                      json.dumps(record.steps, sort_keys=True)))
        conn.execute("DELETE FROM runs WHERE started_at < ?", (now_ms - retention_days * 86_400_000,))


def read_runs(data_dir: Path, *, since_ms: int, flow: str | None = None) -> list[RunRecord]:
    """Records started at or after ``since_ms`` (of one ``flow`` if given), oldest first."""
    sql, args = "SELECT flow, started_at, duration_s, outcome, steps FROM runs WHERE started_at >= ?", [since_ms]
    if flow is not None:
        sql, args = sql + " AND flow = ?", [since_ms, flow]
    with _connect(data_dir, create=False) as conn:
        rows = [] if conn is None else conn.execute(sql + " ORDER BY started_at", args).fetchall()
    return [RunRecord(f, int(s), float(d), o, json.loads(st)) for f, s, d, o, st in rows]


def last_run(data_dir: Path, flow: str) -> RunRecord | None:
    """The latest finished run of ``flow`` (any outcome), or None."""
    with _connect(data_dir, create=False) as conn:
        row = None if conn is None else conn.execute(
            "SELECT flow, started_at, duration_s, outcome, steps FROM runs WHERE flow = ? "
            "ORDER BY started_at DESC LIMIT 1", (flow,)).fetchone()
    return None if row is None else RunRecord(row[0], int(row[1]), float(row[2]), row[3], json.loads(row[4]))


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True)
class WindowStats:
    runs: int
    failed: int
    p50_s: float | None
    p95_s: float | None
    max_s: float | None
    overruns: int
    budget_s: float | None


@dataclass(frozen=True)
class FlowStats:
    flow: str
    windows: dict[str, WindowStats]
    steps_p95_s: dict[str, float]
    last: RunRecord | None


def _window(records: list[RunRecord], budget_s: float | None) -> WindowStats:
    durations = [r.duration_s for r in records]
    p50, p95 = percentile(durations, 50), percentile(durations, 95)
    return WindowStats(
        runs=len(records), failed=sum(1 for r in records if r.outcome != "completed"),
        p50_s=None if p50 is None else round(p50, 3), p95_s=None if p95 is None else round(p95, 3),
        max_s=round(max(durations), 3) if durations else None,
        overruns=0 if budget_s is None else sum(1 for d in durations if d > budget_s), budget_s=budget_s,
    )


def summarize(data_dir: Path, *, now_ms: int, budgets: dict[str, float]) -> list[FlowStats]:
    """p50 / p95 / max and overruns per flow over :data:`WINDOWS`; ``budgets`` by flow kind.

    A flow's kind is its first word (``cycle 1h`` -> ``cycle``), so one budget covers every
    timeframe's cycle.
    """
    records = read_runs(data_dir, since_ms=now_ms - max(WINDOWS.values()))
    out: list[FlowStats] = []
    for flow in sorted({r.flow for r in records}):
        mine = [r for r in records if r.flow == flow]
        budget = budgets.get(flow.split(" ")[0])
        windows = {label: _window([r for r in mine if r.started_at >= now_ms - span], budget)
                   for label, span in WINDOWS.items()}
        steps = sorted({s for r in mine for s in r.steps})
        steps_p95 = {s: round(percentile([r.steps[s] for r in mine if s in r.steps], 95) or 0.0, 3) for s in steps}
        out.append(FlowStats(flow, windows, steps_p95, mine[-1]))
    return out
