"""Fit one series from the store and register the result.

The store is read in pages (``iter_candles(chunk_size=...)``) keeping only ``ts`` and ``close``,
so a fit's memory is bounded by one page of full candles plus two numeric columns, whatever the
history length. A fit whose inputs (spec + data range) match a registered model's (champion,
challenger or baseline) is skipped: a retried or re-triggered train run does not refit what is
already fitted. A fit is registered as a challenger (a baseline for naive/drift): it serves only
once the promotion gate passes it (``coin_core.lifecycle``).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from ..config import Settings
from ..errors import InsufficientDataError, ModelError
from ..storage.base import CandleStore
from ..symbols import parse_symbol, slug
from ..timeframes import Timeframe, add, parse_timeframe
from . import registry
from .base import ModelMetadata, ModelSpec, library_versions
from .events import Actor
from .models import make_model
from .specs import shared_spec, version_for

__all__ = [
    "TRAIN_CHUNK", "TrainResult", "DataRange", "train_series", "fit_cache_key", "fit_keys", "fit_group_key", "data_range", "read_history",
    "require_trained", "registered_fit_keys",
]

log = logging.getLogger(__name__)

TRAIN_CHUNK = 5_000
TrainStatus = Literal["trained", "skipped", "insufficient_data", "not_predicted"]


@dataclass(frozen=True)
class DataRange:
    """What a fit would read: ``row_count`` candles with ``first_ts <= ts <= last_ts``."""

    first_ts: int
    last_ts: int
    row_count: int


@dataclass(frozen=True)
class TrainResult:
    symbol: str
    timeframe: Timeframe
    status: TrainStatus
    model_version: str | None = None
    metadata: ModelMetadata | None = None
    row_count: int = 0
    fit_seconds: float = 0.0
    cache_key: str | None = None
    message: str = ""


def registered_fit_keys(settings: Settings, symbol: str, tf: Timeframe) -> set[str]:
    """The :func:`fit_cache_key` of every registered model (champion, challengers, baselines).

    An orchestrator's cached fit is only worth reusing while its model is still registered:
    after a prune, a deleted or a corrupt state, the key is gone and the fit must re-run.
    """
    try:
        found = registry.registered(settings, symbol, tf, intact=True)
    except ModelError:
        return set()
    return {fit_cache_key(symbol, tf, m.metadata.first_ts, m.metadata.last_ts, m.metadata.row_count,
                          m.metadata.spec.spec_hash) for m in found}


def fit_cache_key(symbol: str, tf: Timeframe, first_ts: int, last_ts: int, row_count: int, spec_hash: str) -> str:
    """Same inputs -> same key: the Prefect train task's cache key (a retry does not refit)."""
    raw = f"{parse_symbol(symbol)}|{parse_timeframe(tf)}|{int(first_ts)}|{int(last_ts)}|{int(row_count)}|{spec_hash}"
    return f"fit-{slug(symbol)}-{tf}-{hashlib.sha256(raw.encode()).hexdigest()[:24]}"


def fit_keys(store: CandleStore, symbol: str, tf: Timeframe, lookback: int | None,
             specs: Sequence[ModelSpec]) -> list[str] | None:
    """The :func:`fit_cache_key` of each spec fitted on the series' current training window;
    None when nothing is stored."""
    rng = data_range(store, symbol, tf, lookback)
    if rng is None:
        return None
    return [fit_cache_key(symbol, tf, rng.first_ts, rng.last_ts, rng.row_count, spec.spec_hash) for spec in specs]


def fit_group_key(symbol: str, tf: Timeframe, keys: Sequence[str]) -> str:
    """One key for fitting several candidates of a series together: same fits -> same key."""
    digest = hashlib.sha256("|".join(sorted(keys)).encode()).hexdigest()[:24]
    return f"fit-{slug(symbol)}-{tf}-{digest}"


def data_range(
    store: CandleStore, symbol: str, tf: Timeframe, lookback: int | None = None, end: int | None = None,
) -> DataRange | None:
    """The training window: the last ``lookback`` candle slots up to ``end`` (default: the latest
    stored candle). A rolling-origin evaluation passes ``end`` to train as production would have.
    """
    bounds = store.bounds(symbol, tf)
    if bounds is None:
        return None
    last = bounds[1] if end is None else min(int(end), bounds[1])
    start = None if lookback is None else add(last, tf, -(max(1, lookback) - 1))
    first_page = next(store.iter_candles(symbol, tf, start, last, chunk_size=1), None)
    if first_page is None:
        return None
    first = int(first_page["ts"].iloc[0])
    return DataRange(first, last, store.count(symbol, tf, first, last))


def read_history(store: CandleStore, symbol: str, tf: Timeframe, rng: DataRange, chunk_size: int = TRAIN_CHUNK) -> pd.DataFrame:
    """``ts``/``y`` (close) of the range, read page by page into preallocated arrays."""
    ts = np.empty(rng.row_count, dtype="int64")
    y = np.empty(rng.row_count, dtype="float64")
    filled = 0
    for page in store.iter_candles(symbol, tf, rng.first_ts, rng.last_ts, chunk_size=chunk_size):
        n = min(len(page), rng.row_count - filled)  # retention may race us: never overflow
        ts[filled:filled + n] = page["ts"].to_numpy()[:n]
        y[filled:filled + n] = page["close"].to_numpy()[:n]
        filled += n
    return pd.DataFrame({"ts": ts[:filled], "y": y[:filled]})


def _already_fitted(settings: Settings, symbol: str, tf: Timeframe, spec: ModelSpec, rng: DataRange) -> ModelMetadata | None:
    try:
        found = registry.registered(settings, symbol, tf, intact=True)
    except ModelError as exc:
        log.warning("registry of %s %s unreadable, refitting: %s", symbol, tf, exc)
        return None
    for entry in found:
        meta = entry.metadata
        if meta.spec.spec_hash == spec.spec_hash and (meta.first_ts, meta.last_ts, meta.row_count) == (
            rng.first_ts, rng.last_ts, rng.row_count
        ):
            return meta
    return None


def train_series(
    store: CandleStore, settings: Settings, symbol: str, tf: Timeframe, *,
    lookback: int | None = None, spec: ModelSpec | None = None, now_ms: int | None = None,
    chunk_size: int = TRAIN_CHUNK, actor: Actor = "schedule", history: pd.DataFrame | None = None,
) -> TrainResult:
    """Fit ``spec`` (default: the timeframe's shared spec) on the series and register it.

    The fit is registered as a challenger (naive/drift: as a baseline); it never becomes
    champion here (see ``coin_core.lifecycle.run_gate``).

    ``lookback`` limits the fit to the last N candle slots (None = the whole stored history).
    ``history``: that window already read (a caller fitting several specs reads it once); it is
    used only while it still matches the stored window, else the window is read again.
    Raises ModelError when the fit itself fails; data shortfalls are a result, not an error.
    """
    symbol, tf = parse_symbol(symbol), parse_timeframe(tf)
    policy = settings.policy(tf)
    if not policy.predicted:
        return TrainResult(symbol, tf, "not_predicted", message=f"{tf} is not predicted")
    spec = spec or shared_spec(tf)
    rng = data_range(store, symbol, tf, lookback)
    rows = rng.row_count if rng else 0
    if rng is None or rows < max(policy.min_samples, 2):
        return TrainResult(symbol, tf, "insufficient_data", row_count=rows,
                           message=f"{rows} candle(s) < minimum {policy.min_samples}")
    key = fit_cache_key(symbol, tf, rng.first_ts, rng.last_ts, rows, spec.spec_hash)
    existing = _already_fitted(settings, symbol, tf, spec, rng)
    if existing is not None:
        return TrainResult(symbol, tf, "skipped", existing.model_version, existing, rows, cache_key=key,
                           message="a registered model is already fitted on this data with this spec")
    if history is None or not _covers(history, rng):
        history = read_history(store, symbol, tf, rng, chunk_size)
    started = time.perf_counter()
    model = make_model(spec).fit(history)
    fit_s = time.perf_counter() - started
    trained_at = now_ms if now_ms is not None else int(time.time() * 1000)
    meta = ModelMetadata(
        model_version=version_for(spec, trained_at), spec=spec, trained_at=trained_at, symbol=symbol,
        timeframe=tf, first_ts=int(history["ts"].iloc[0]), last_ts=int(history["ts"].iloc[-1]),
        row_count=len(history), libraries=library_versions(),
    )
    role = "baseline" if spec.name in registry.BASELINES else "challenger"
    meta = registry.register(settings, symbol, tf, model, meta, role=role, actor=actor, now_ms=trained_at)
    log.info("trained %s %s: %s on %d candles in %.2fs", symbol, tf, meta.model_version, len(history), fit_s)
    return TrainResult(symbol, tf, "trained", meta.model_version, meta, len(history), fit_s, key)


def _covers(history: pd.DataFrame, rng: DataRange) -> bool:
    """Whether ``history`` is exactly the window ``rng`` describes."""
    return (len(history) == rng.row_count and not history.empty
            and int(history["ts"].iloc[0]) == rng.first_ts and int(history["ts"].iloc[-1]) == rng.last_ts)


def require_trained(result: TrainResult) -> ModelMetadata:
    """The metadata of a trained/skipped result; InsufficientDataError otherwise."""
    if result.metadata is None:
        raise InsufficientDataError(f"{result.symbol} {result.timeframe}: {result.message or result.status}")
    return result.metadata
