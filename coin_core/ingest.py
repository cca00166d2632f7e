"""Ingest: every closed candle of every configured series, from the exchange into the store.

The cursor of a series is derived from the store (latest stored candle + one interval), never
from a state file, so a run killed at any moment resumes exactly where the store stands: each
page is written in one idempotent upsert, and nothing else has to agree with it.

Holes are handled in two ways. While paginating forward, the exchange returns the candles it
has in order, so a jump between two returned open times is an *exchange gap* (an outage such
as Binance 2018-02-08): it is recorded as known and never re-fetched. Any other hole (a
rejected malformed row, a lost write) is found by comparing the stored count with the expected
count and is refilled with requests that reach the stored candle after it.

A range becomes a known gap only when a well-formed answer demonstrably skips it: candles after
it and none in it, every row's open time trustworthy (a row whose open time is unknown, off the
grid, in the future or before the request might be the skipped candle: such a page records no
gap). A refill answered with no candle at all contradicts the store and is an error (the hole
stays for the next run); a candle served invalid at its open time on the refill is recorded as a
one-candle gap rather than refetched every cycle.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any, Callable, Iterable

import numpy as np
from pydantic import BaseModel, Field

from . import timeframes as tfs
from .candles import FUTURE, CheckedCandles, Rejection, validate_matrix
from .config import Settings
from .errors import StorageError, StorageUnavailableError, TransientExchangeError
from .exchange import ExchangeClient, KlinePage
from .health import IngestState, update_ingest_state
from .storage import CandleStore, open_store

__all__ = [
    "SeriesReport", "IngestReport", "Progress", "ingest_series", "run_ingest", "should_ingest",
    "find_missing_ranges", "apply_retention",
]

log = logging.getLogger(__name__)

PAGE_LIMIT = 1000
MAX_REFILLS_PER_RUN = 50
JUMP_FACTOR = 10.0  # a candle reaching 10x (or 1/10) the previous close is flagged, not dropped
MAX_FLAGGED_LISTED = 20
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
    flagged: int = 0
    """Stored candles moving over JUMP_FACTOR x against the previous close: for a human to review."""
    flagged_at: list[int] = Field(default_factory=list)
    clock_note: str | None = None
    skipped: bool = False
    seconds: float = 0.0
    error: str | None = None

    def as_row(self) -> dict[str, object]:
        """One row of the run summary table."""
        return {
            "series": f"{self.symbol} {self.timeframe}", "new candles": self.new_candles,
            "rejected": self.rejected, "gaps": self.gaps_found, "known gaps": self.known_gaps,
            "flagged": self.flagged, "skipped": self.skipped, "seconds": round(self.seconds, 2), "error": self.error or "",
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
        self.target = tfs.last_closed_open(now_ms, tf)
        self.reasons: Counter[str] = Counter()
        self.invalid: set[int] = set()  # open times the exchange served invalid (reset per refill)
        self._prev_close: float | None = None

    def run(self, start: int, end: int, *, bounded: bool, leading: bool = True) -> None:
        """Fetch ``[start, end]`` (aligned open times) page by page.

        ``bounded``: a refill of a hole a stored candle follows. Its requests reach that candle,
        so a well-formed answer either has the hole's candles or demonstrably skips them (rows
        after the hole, none in it: a known gap); an answer with no row at all contradicts the
        store and is an error, retried next run.
        """
        cursor, until = start, (max(self.target, tfs.add(end, self.tf, 1)) if bounded else end)
        # Not ``leading``: nothing of the series is stored, so no close precedes the page.
        self._prev_close = self._close_before(start) if leading else None
        while cursor <= end:
            # A refill asks for the hole plus one candle: the one that proves what the answer skips.
            limit = min(PAGE_LIMIT, tfs.count_between(cursor, end, self.tf) + 1) if bounded else PAGE_LIMIT
            page = self.client.fetch_klines(self.symbol, self.tf, since=cursor, limit=limit, until=until)
            seen, ambiguous = self._store_page(page, cursor, end, head_known=leading)
            if not seen:
                if bounded and not ambiguous:
                    raise TransientExchangeError(
                        f"{self.symbol} {self.tf}: the exchange answered no candle from {_iso(cursor)} on, although "
                        f"{_iso(tfs.add(end, self.tf, 1))} is stored; the hole is kept and refetched next run")
                return
            if not ambiguous:  # a row whose open time is unknown may be the candle a jump skips
                self._record_jumps(cursor, end, seen, leading)
            leading = True
            cursor = tfs.add(seen[-1], self.tf, 1)
            if self.progress:
                self.progress(self.symbol, self.tf, self.report.new_candles, cursor, end)

    def _store_page(self, page: KlinePage, cursor: int, end: int, *, head_known: bool) -> tuple[list[int], bool]:
        """Validate a page and store its candles in ``[cursor, end]``.

        Returns the sorted open times at or after ``cursor`` where the exchange has a candle
        (valid, or invalid at a trustworthy open time), and whether some row's place is unknown.
        ``head_known`` False (a first backfill): no stored candle precedes the page, so a row of
        unknown place before its first candle could never be refilled; nothing is stored then.
        """
        checked = validate_matrix(page.matrix, self.tf, self.now_ms)
        valid = checked.checked
        early = int((valid.ts < cursor).sum())
        self.reasons.update(r.reason for r in checked.rejected)
        if page.malformed or early:
            self.reasons.update(["row is not a list of 6 values"] * page.malformed
                                + ["open time before the requested start"] * early)
        placed = {int(r.ts) for r in checked.rejected if self._placed(r, cursor)}  # type: ignore[arg-type]
        self.invalid |= placed
        at_or_after = valid.ts[valid.ts >= cursor]
        seen = sorted(set(at_or_after.tolist()) | placed) if placed else at_or_after.tolist()
        ambiguous = page.malformed > 0 or early > 0 or not all(self._placed(r, cursor) for r in checked.rejected)
        if ambiguous and not head_known and (not seen or seen[0] > cursor):
            raise TransientExchangeError(
                f"{self.symbol} {self.tf}: the first candle of the backfill from {_iso(cursor)} is uncertain "
                f"(a row of unknown open time precedes {_iso(seen[0]) if seen else 'nothing'}); nothing stored")
        fresh = valid.select((valid.ts >= cursor) & (valid.ts <= end))
        self._flag_jumps(fresh)
        self.report.new_candles += self.store.write_candles(self.symbol, self.tf, fresh)
        return seen, ambiguous

    def _placed(self, rejection: Rejection, cursor: int) -> bool:
        """A rejected row whose open time can be trusted to name the candle it stands for."""
        ts = rejection.ts
        return (ts is not None and cursor <= ts <= self.now_ms and rejection.reason != FUTURE
                and tfs.is_aligned(ts, self.tf))

    def _record_jumps(self, cursor: int, end: int, seen: list[int], leading: bool) -> None:
        previous = tfs.add(cursor, self.tf, -1) if leading else seen[0]
        if self.tf != "1M" and _contiguous(previous, seen, tfs.add(0, self.tf, 1)):
            return  # the common page: every candle follows the one before, nothing skipped
        for ts in seen:
            first_missing = tfs.add(previous, self.tf, 1)
            if ts > first_missing and first_missing <= end:
                self._known_gap(first_missing, min(tfs.add(ts, self.tf, -1), end))
            if ts > end:
                return
            previous = ts

    def _known_gap(self, start: int, end: int) -> None:
        self.store.add_known_gap(self.symbol, self.tf, start, end)
        self.report.known_gaps += 1
        log.info("known exchange gap %s %s %s -> %s", self.symbol, self.tf, _iso(start), _iso(end))

    def _close_before(self, start: int) -> float | None:
        return self.store.close_at(self.symbol, self.tf, tfs.add(start, self.tf, -1))

    def _flag_jumps(self, fresh: CheckedCandles) -> None:
        """Count (and log) candles that move tenfold against the previous close: kept, for review."""
        if not len(fresh):
            return
        close = fresh.column("close")
        prev = np.r_[np.nan if self._prev_close is None else self._prev_close, close[:-1]]
        with np.errstate(invalid="ignore"):
            jump = (fresh.column("high") > JUMP_FACTOR * prev) | (fresh.column("low") < prev / JUMP_FACTOR)
        self._prev_close = float(close[-1])
        flagged = fresh.ts[jump].tolist()
        if flagged:
            self.report.flagged += len(flagged)
            self.report.flagged_at = (self.report.flagged_at + flagged)[:MAX_FLAGGED_LISTED]
            log.warning("%s %s: %d candle(s) move over %gx against the previous close (stored, flagged "
                        "for review), first at %s", self.symbol, self.tf, len(flagged), JUMP_FACTOR, _iso(int(flagged[0])))


def _contiguous(previous: int, seen: list[int], step: int) -> bool:
    """``seen`` (ascending) steps by exactly ``step`` from ``previous`` (or from its own first)."""
    opens = np.asarray(seen, dtype=np.int64)
    return bool(opens[0] - previous in (0, step) and (np.diff(opens) == step).all())


def _iso(ts: int) -> str:
    return tfs.to_datetime(ts).isoformat()


def _subtract(start: int, end: int, known: list[tuple[int, int]], tf: tfs.Timeframe) -> list[tuple[int, int]]:
    """Parts of ``[start, end]`` not covered by any known gap (every bound an aligned open time)."""
    parts = [(start, end)]
    for g_start, g_end in known:
        before, after = tfs.add(g_start, tf, -1), tfs.add(g_end, tf, 1)
        parts = [p for a, b in parts for p in ((a, min(b, before)), (max(a, after), b)) if p[0] <= p[1]]
    return parts


def _merged(known: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Known gaps as disjoint ranges (two records may overlap: counting both would hide a hole)."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(known):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def find_missing_ranges(store: CandleStore, symbol: str, tf: tfs.Timeframe, chunk_size: int = 20_000) -> list[tuple[int, int]]:
    """Holes between the first and latest stored candle that are not known exchange gaps.

    A cheap count comparison answers the common case; only when it disagrees are the stored
    open times streamed (in chunks, so memory stays bounded) to locate the holes.
    """
    return _missing(store, symbol, tf, store.bounds(symbol, tf), chunk_size)


def _missing(store: CandleStore, symbol: str, tf: tfs.Timeframe, bounds: tuple[int, int] | None,
             chunk_size: int = 20_000) -> list[tuple[int, int]]:
    if bounds is None:
        return []
    first, last = bounds
    known = _merged(store.known_gaps(symbol, tf))
    expected = tfs.count_between(first, last, tf) - sum(
        tfs.count_between(max(a, first), min(b, last), tf) for a, b in known)
    if store.count(symbol, tf) >= expected:
        return []
    opens = (ts for page in store.iter_candles(symbol, tf, chunk_size=chunk_size) for ts in page["ts"].tolist())
    return [part for a, b in _holes(opens, tf, first, last) for part in _subtract(a, b, known, tf)]


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


def _refill(pager: _Pager, report: SeriesReport) -> int | None:
    """Refetch every hole; one that fails stays a hole for the next run, the others go on.

    Returns the latest stored open time (read once here: with no hole, nothing is written after).
    """
    bounds = pager.store.bounds(pager.symbol, pager.tf)
    holes = _missing(pager.store, pager.symbol, pager.tf, bounds)
    report.gaps_found = len(holes)
    if not holes:
        return bounds[1] if bounds else None
    failed: TransientExchangeError | None = None
    for start, end in holes[:MAX_REFILLS_PER_RUN]:
        before, pager.invalid = report.new_candles, set()
        try:
            pager.run(start, end, bounded=True)
        except TransientExchangeError as exc:
            failed = failed or exc
            continue
        report.gaps_filled += int(report.new_candles > before)
        # Served invalid at its open time on a second asking (the hole was left by an earlier
        # rejection): recorded once rather than refetched and re-rejected every cycle; the
        # runbook says how to re-probe. A row of unknown place never makes a gap.
        again = sorted(t for t in pager.invalid if start <= t <= end)
        present = set(pager.store.read_candles(pager.symbol, pager.tf, start, end)["ts"].tolist())
        for a, b in _runs([t for t in again if t not in present], pager.tf):
            pager._known_gap(a, b)
    if failed is not None:
        raise failed
    return pager.store.latest_ts(pager.symbol, pager.tf)


def _runs(opens: list[int], tf: tfs.Timeframe) -> list[tuple[int, int]]:
    """Consecutive aligned open times grouped into ``(first, last)`` ranges."""
    out: list[tuple[int, int]] = []
    for ts in opens:
        if out and ts == tfs.add(out[-1][1], tf, 1):
            out[-1] = (out[-1][0], ts)
        else:
            out.append((ts, ts))
    return out


def apply_retention(store: CandleStore, settings: Settings, symbol: str, tf: tfs.Timeframe, now_ms: int,
                    *, oldest: int | None = None) -> bool:
    """Drop candles older than the timeframe's retention window (1m keeps a rolling window).

    ``oldest``: the series' first stored open time when the caller has just read it; no delete
    is sent when nothing is that old. Returns whether a delete was sent.
    """
    days = settings.policy(tf).retention_days
    if not days:
        return False
    cutoff = tfs.floor(now_ms - days * _DAY_MS, tf)
    if oldest is not None and oldest >= cutoff:
        return False
    try:
        store.delete_range(symbol, tf, None, cutoff - 1)
        return True
    except StorageUnavailableError:
        raise
    except StorageError as exc:
        # InfluxDB 2.x/3.x do not serve v1 DELETE: the candles are stored, only pruning is not
        # possible here, so the series must not fail every cycle for it (the budget guard holds).
        log.warning("retention of %s %s not applied: %s", symbol, tf, exc)
        return False


def ingest_series(store: CandleStore, client: ExchangeClient, settings: Settings, symbol: str,
                  tf: tfs.Timeframe, *, now_ms: int | None = None, progress: Progress | None = None) -> SeriesReport:
    """Bring one series up to the exchange's latest closed candle; errors propagate to the caller."""
    began, now_ms_given = time.monotonic(), now_ms
    now_ms = now_ms if now_ms is not None else client.now_ms()
    report = SeriesReport(symbol=symbol, timeframe=tf)
    report.clock_note = client.clock_note if now_ms_given is None else None
    pager = _Pager(store, client, symbol, tf, now_ms, report, progress)
    target = pager.target
    bounds = store.bounds(symbol, tf)
    latest = bounds[1] if bounds else None
    if latest is not None and latest >= target:
        report.skipped = True  # detection gate: no new closed candle, no network call
        started_empty = False
    else:
        # Retention first: a store at its budget must be able to make room before it writes.
        if apply_retention(store, settings, symbol, tf, now_ms, oldest=bounds[0] if bounds else None):
            latest = store.latest_ts(symbol, tf)
        start = tfs.add(latest, tf, 1) if latest is not None else _initial_start(client, settings, symbol, tf, now_ms)
        started_empty = latest is None
        if start is not None:
            pager.run(start, target, bounded=False, leading=not started_empty)
        latest = _refill(pager, report)
    report.rejected = sum(pager.reasons.values())
    report.rejected_reasons = dict(pager.reasons)
    _mark_state(settings, symbol, tf, now_ms, report, latest=latest, started_empty=started_empty)
    report.seconds = time.monotonic() - began
    return report


def _mark_state(settings: Settings, symbol: str, tf: tfs.Timeframe, now_ms: int, report: SeriesReport, *,
                latest: int | None, started_empty: bool) -> None:
    """Record backfill completion; the store stays the truth (``latest``: its latest open time
    as read after the writes; an empty store is a new backfill)."""
    caught_up = (latest if latest is not None else -1) >= tfs.last_closed_open(now_ms, tf)

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
