"""Ingest: every closed candle of every configured series, from the exchange into the store.

The cursor of a series is derived from the store (latest stored candle + one interval), never
from a state file, so a run killed at any moment resumes exactly where the store stands: each
page is written in one idempotent upsert, and nothing else has to agree with it.

Holes are handled in two ways. While paginating forward, the exchange returns the candles it
has in order, so a jump between two returned open times is an *exchange gap* (an outage such
as Binance 2018-02-08): it is recorded as known and never re-fetched. Any other hole (a
rejected malformed row, a lost write) is found by comparing the stored count with the expected
count and is refilled; what the exchange still does not return then becomes a known gap.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Callable, Iterable

from pydantic import BaseModel, Field

from . import timeframes as tfs
from .candles import to_frame, validate_candles
from .config import Settings
from .errors import StorageError, StorageUnavailableError
from .exchange import ExchangeClient
from .health import IngestState, update_ingest_state
from .storage import CandleStore, open_store

__all__ = [
    "SeriesReport", "IngestReport", "Progress", "ingest_series", "run_ingest", "should_ingest",
    "find_missing_ranges", "apply_retention",
]

log = logging.getLogger(__name__)

PAGE_LIMIT = 1000
MAX_REFILLS_PER_RUN = 50
_DAY_MS = 86_400_000

Progress = Callable[[str, str, int, int, int], None]
"""progress(symbol, timeframe, candles_so_far, cursor_ms, target_ms)"""


class SeriesReport(BaseModel):
    symbol: str
    timeframe: str
    new_candles: int = 0
    rejected: int = 0
    rejected_reasons: dict[str, int] = Field(default_factory=dict)
    gaps_found: int = 0
    gaps_filled: int = 0
    known_gaps: int = 0
    skipped: bool = False
    seconds: float = 0.0
    error: str | None = None

    def as_row(self) -> dict[str, object]:
        """One row of the run summary table."""
        return {
            "series": f"{self.symbol} {self.timeframe}", "new candles": self.new_candles,
            "rejected": self.rejected, "gaps": self.gaps_found, "known gaps": self.known_gaps,
            "skipped": self.skipped, "seconds": round(self.seconds, 2), "error": self.error or "",
        }


class IngestReport(BaseModel):
    series: list[SeriesReport]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(s.error is None for s in self.series)

    @property
    def new_candles(self) -> int:
        return sum(s.new_candles for s in self.series)


def should_ingest(store: CandleStore, symbol: str, tf: tfs.Timeframe, now_ms: int) -> bool:
    """Detection gate: is there a closed candle the store does not have yet?"""
    latest = store.latest_ts(symbol, tf)
    return latest is None or latest < tfs.last_closed_open(now_ms, tf)


def _initial_start(client: ExchangeClient, settings: Settings, symbol: str, tf: tfs.Timeframe, now_ms: int) -> int | None:
    policy = settings.policy(tf)
    if policy.backfill == "full":
        return client.earliest_ts(symbol, tf)
    days = policy.lookback_days or 30
    return tfs.floor(now_ms - days * _DAY_MS, tf)


class _Pager:
    """Forward pagination of one series, writing each page as it arrives."""

    def __init__(self, store: CandleStore, client: ExchangeClient, symbol: str, tf: tfs.Timeframe,
                 now_ms: int, report: SeriesReport, progress: Progress | None) -> None:
        self.store, self.client, self.symbol, self.tf = store, client, symbol, tf
        self.now_ms, self.report, self.progress = now_ms, report, progress
        self.reasons: Counter[str] = Counter()
        self._ambiguous = False

    def run(self, start: int, end: int, *, bounded: bool, leading: bool = True) -> None:
        """Fetch ``[start, end]`` (open times) page by page.

        A hole counts as a known exchange gap only when the exchange has shown a candle after
        it (``bounded``: a refill between two stored candles), so a momentarily empty answer
        about the newest candles is retried next cycle rather than written off.
        """
        cursor = start
        while cursor <= end:
            rows = self.client.fetch_ohlcv(self.symbol, self.tf, since=cursor, limit=PAGE_LIMIT, until=end)
            seen = self._store_page(rows, cursor, end)
            if not seen:
                if bounded and not self._ambiguous:
                    self._known_gap(cursor, end)
                return
            self._record_jumps(cursor, seen, leading)
            leading = True
            cursor = tfs.add(seen[-1], self.tf, 1)
            if self.progress:
                self.progress(self.symbol, self.tf, self.report.new_candles, cursor, end)

    def _store_page(self, rows: list[list], cursor: int, end: int) -> list[int]:
        """Validate and store a page; return the sorted open times the exchange returned in range."""
        frame = to_frame(r for r in rows if isinstance(r, (list, tuple)) and len(r) >= 6)
        malformed = sum(1 for r in rows if not (isinstance(r, (list, tuple)) and len(r) >= 6))
        self.reasons.update({"row with fewer than 6 fields": malformed} if malformed else {})
        checked = validate_candles(frame, self.tf, self.now_ms)
        self.reasons.update(r.reason for r in checked.rejected)
        valid = checked.valid[(checked.valid["ts"] >= cursor) & (checked.valid["ts"] <= end)]
        self.report.new_candles += self.store.write_candles(self.symbol, self.tf, valid)
        seen = {int(t) for t in valid["ts"]}
        seen |= {r.ts for r in checked.rejected if r.ts is not None and cursor <= r.ts <= end}
        # An unparseable timestamp hides where the hole is: leave it to the refill pass.
        self._ambiguous = malformed > 0 or any(r.ts is None for r in checked.rejected)
        return sorted(seen)

    def _record_jumps(self, cursor: int, seen: list[int], leading: bool) -> None:
        if self._ambiguous:
            return
        previous = tfs.add(cursor, self.tf, -1) if leading else seen[0]
        for ts in seen:
            if ts > tfs.add(previous, self.tf, 1):
                self._known_gap(tfs.add(previous, self.tf, 1), tfs.add(ts, self.tf, -1))
            previous = ts

    def _known_gap(self, start: int, end: int) -> None:
        self.store.add_known_gap(self.symbol, self.tf, start, end)
        self.report.known_gaps += 1
        log.info("known exchange gap %s %s %s -> %s", self.symbol, self.tf,
                 tfs.to_datetime(start).isoformat(), tfs.to_datetime(end).isoformat())


def _subtract(start: int, end: int, known: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Parts of ``[start, end]`` not covered by any known gap."""
    parts = [(start, end)]
    for g_start, g_end in known:
        parts = [p for a, b in parts for p in ((a, min(b, g_start - 1)), (max(a, g_end + 1), b)) if p[0] <= p[1]]
    return parts


def find_missing_ranges(store: CandleStore, symbol: str, tf: tfs.Timeframe, chunk_size: int = 20_000) -> list[tuple[int, int]]:
    """Holes between the first and latest stored candle that are not known exchange gaps.

    A cheap count comparison answers the common case; only when it disagrees are the stored
    open times streamed (in chunks, so memory stays bounded) to locate the holes.
    """
    bounds = store.bounds(symbol, tf)
    if bounds is None:
        return []
    first, last = bounds
    known = store.known_gaps(symbol, tf)
    expected = tfs.count_between(first, last, tf) - sum(
        tfs.count_between(max(a, first), min(b, last), tf) for a, b in known)
    if store.count(symbol, tf) >= expected:
        return []
    opens = (ts for page in store.iter_candles(symbol, tf, chunk_size=chunk_size) for ts in page["ts"].tolist())
    return [part for a, b in _holes(opens, tf, first, last) for part in _subtract(a, b, known)]


def _holes(opens: Iterable[int], tf: tfs.Timeframe, start: int, end: int) -> list[tuple[int, int]]:
    """Runs of open times in ``[start, end]`` missing from ``opens`` (ascending, streamed)."""
    holes: list[tuple[int, int]] = []
    expected = start
    for ts in opens:
        if ts > expected:
            holes.append((expected, tfs.add(ts, tf, -1)))
        expected = tfs.add(ts, tf, 1)
    if expected <= end:
        holes.append((expected, end))
    return holes


def _refill(pager: _Pager, report: SeriesReport) -> None:
    holes = find_missing_ranges(pager.store, pager.symbol, pager.tf)
    report.gaps_found = len(holes)
    for start, end in holes[:MAX_REFILLS_PER_RUN]:
        before, rejected = report.new_candles, sum(pager.reasons.values())
        pager.run(start, end, bounded=True)
        report.gaps_filled += int(report.new_candles > before)
        if sum(pager.reasons.values()) > rejected:
            # Served invalid again on a second asking: record it once rather than refetching
            # (and re-rejecting) it every cycle; the runbook says how to re-probe.
            present = pager.store.read_candles(pager.symbol, pager.tf, start, end)["ts"].tolist()
            for a, b in _holes(present, pager.tf, start, end):
                pager._known_gap(a, b)


def apply_retention(store: CandleStore, settings: Settings, symbol: str, tf: tfs.Timeframe, now_ms: int) -> None:
    """Drop candles older than the timeframe's retention window (1m keeps a rolling window)."""
    days = settings.policy(tf).retention_days
    if not days:
        return
    try:
        store.delete_range(symbol, tf, None, tfs.floor(now_ms - days * _DAY_MS, tf) - 1)
    except StorageUnavailableError:
        raise
    except StorageError as exc:
        # InfluxDB 2.x/3.x do not serve v1 DELETE: the candles are stored, only pruning is not
        # possible here, so the series must not fail every cycle for it (the budget guard holds).
        log.warning("retention of %s %s not applied: %s", symbol, tf, exc)


def ingest_series(store: CandleStore, client: ExchangeClient, settings: Settings, symbol: str,
                  tf: tfs.Timeframe, *, now_ms: int | None = None, progress: Progress | None = None) -> SeriesReport:
    """Bring one series up to the exchange's latest closed candle; errors propagate to the caller."""
    began = time.monotonic()
    now_ms = now_ms if now_ms is not None else client.now_ms()
    report = SeriesReport(symbol=symbol, timeframe=tf)
    pager = _Pager(store, client, symbol, tf, now_ms, report, progress)
    target = tfs.last_closed_open(now_ms, tf)
    latest = store.latest_ts(symbol, tf)
    if latest is not None and latest >= target:
        report.skipped = True  # detection gate: no new closed candle, no network call
    else:
        # Retention first: a store at its budget must be able to make room before it writes.
        apply_retention(store, settings, symbol, tf, now_ms)
        latest = store.latest_ts(symbol, tf)
        start = tfs.add(latest, tf, 1) if latest is not None else _initial_start(client, settings, symbol, tf, now_ms)
        if start is not None:
            pager.run(start, target, bounded=False, leading=latest is not None)
        _refill(pager, report)
    report.rejected = sum(pager.reasons.values())
    report.rejected_reasons = dict(pager.reasons)
    _mark_state(settings, store, symbol, tf, now_ms, report, started_empty=latest is None)
    report.seconds = time.monotonic() - began
    return report


def _mark_state(settings: Settings, store: CandleStore, symbol: str, tf: tfs.Timeframe, now_ms: int,
                report: SeriesReport, *, started_empty: bool) -> None:
    """Record backfill completion; the store stays the truth (an empty store is a new backfill)."""
    caught_up = (store.latest_ts(symbol, tf) or -1) >= tfs.last_closed_open(now_ms, tf)

    def change(state: IngestState) -> IngestState:
        if caught_up and state.backfill_complete_at is None:
            state.backfill_complete_at = now_ms
        elif started_empty and not caught_up:
            state.backfill_complete_at = None  # the store was wiped: hidden again until refilled
        state.last_run_at, state.last_new_candles, state.last_rejected = now_ms, report.new_candles, report.rejected
        state.last_error = None
        return state

    update_ingest_state(settings.data_dir, symbol, tf, change)


def run_ingest(settings: Settings, *, symbols: Iterable[str] | None = None, timeframes: Iterable[str] | None = None,
               now_ms: int | None = None, progress: Progress | None = None) -> IngestReport:
    """Ingest every configured series concurrently (see :mod:`coin_core.cycle`); one failing
    or unlisted series never stops the others."""
    from .cycle import run_ingest_all  # the fan-out builds on this module

    with open_store(settings) as store:
        return run_ingest_all(settings, store, symbols=symbols, timeframes=timeframes, now_ms=now_ms, progress=progress)
