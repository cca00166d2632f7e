"""Model lifecycle on a real SQLite store and real files: roles, the gated promote, the event log,
live scoring of realised candles, the gate's verdicts and demotion."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from coin_core.config import Settings
from coin_core.errors import DataValidationError, LockError, ModelError, StorageError
from coin_core.forecast import ModelMetadata, ModelSpec, forecast_series, make_model, registry, train_series
from coin_core.forecast.specs import version_for
from coin_core.forecast.bands import load_band_state, sigma_at
from coin_core.forecast.events import append_event
from coin_core.forecast.registry import RegisteredModel
from coin_core.lifecycle import ScoreBook, check_demotion, decide, open_scorebook, score_series
from coin_core.lifecycle.gate import bootstrap_decision
from coin_core.storage.sqlite import SQLiteStore
from coin_core.timeframes import add, from_datetime
from tests.fixtures.forecast_fixtures import walk_candles

SYM = "BTC/USDT"
LATEST = from_datetime(datetime(2025, 3, 1, 12, tzinfo=timezone.utc))
HOUR = 3_600_000


@dataclass(frozen=True)
class Score:
    """An evaluation result as the gate reads it (the fields of evaluation.ModelScore)."""

    mase: float | None
    coverage80: float | None
    n_origins: int = 60


def _boot(store: SQLiteStore, settings: Settings, n: int = 300) -> pd.DataFrame:
    candles = walk_candles("1h", n, LATEST)
    store.write_candles(SYM, "1h", candles)
    assert forecast_series(store, settings, SYM, "1h", now_ms=LATEST + HOUR).status == "ok"
    return candles


def _challenger(store: SQLiteStore, settings: Settings, width: float = 0.7) -> RegisteredModel:
    """A drift fit registered as a challenger (a second family would need a slow fit)."""
    spec = ModelSpec(name="drift", params={"interval_width": width})
    history = store.read_candles(SYM, "1h")[["ts", "close"]].rename(columns={"close": "y"})
    model = make_model(spec).fit(history)
    meta = ModelMetadata(model_version=version_for(spec, LATEST + 5_000), spec=spec, trained_at=LATEST + 5_000, symbol=SYM,
                         timeframe="1h", first_ts=int(history["ts"].iloc[0]), last_ts=int(history["ts"].iloc[-1]),
                         row_count=len(history))
    registry.register(settings, SYM, "1h", model, meta, role="challenger", now_ms=LATEST + 5_000)
    return next(m for m in registry.registered(settings, SYM, "1h") if m.role == "challenger")


def _champion(settings: Settings) -> RegisteredModel:
    return next(m for m in registry.registered(settings, SYM, "1h") if m.role == "champion")


# ---- roles and the one gated promote ---------------------------------------------------------
def test_promote_demands_a_passed_decision_and_logs_it(settings: Settings, forecast_store: SQLiteStore) -> None:
    _boot(forecast_store, settings)
    cand, champ = _challenger(forecast_store, settings), _champion(settings)
    failed = decide(settings, cand, champ, candidate_score=Score(1.08, 0.80), champion_score=Score(1.0, 0.8),
                    live=None, now_ms=LATEST)
    assert not failed.passed and "loses to naive: MASE 1.080 > 1.00" in failed.summary
    with pytest.raises(ModelError, match="did not pass the promotion gate"):
        registry.promote(settings, failed, actor="cli")
    passed = decide(settings, cand, champ, candidate_score=Score(0.97, 0.79), champion_score=Score(1.0, 0.8),
                    live=None, now_ms=LATEST)
    assert passed.passed and passed.metrics["mase"] == 0.97
    event = registry.promote(settings, passed, actor="ui", now_ms=LATEST + 7_000)
    assert (event.kind, event.actor, event.champion_before, event.champion_after) == (
        "promoted", "ui", champ.version, cand.version)
    state = registry.read_pointer(settings, SYM, "1h")
    assert (state.version, state.previous, state.challengers) == (cand.version, champ.version, {})
    assert forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 2 * HOUR).model_version == cand.version


def test_two_promotions_at_once_one_wins(settings: Settings, forecast_store: SQLiteStore) -> None:
    _boot(forecast_store, settings)
    first = _challenger(forecast_store, settings, 0.7)
    champ = _champion(settings)
    a = decide(settings, first, champ, candidate_score=Score(0.9, 0.8), champion_score=Score(1.0, 0.8), live=None, now_ms=LATEST)
    b = a.model_copy(update={"metrics": {**a.metrics, "note": "second run"}})
    lock = os.open(registry.series_dir(settings, SYM, "1h") / ".lock", os.O_RDWR)
    fcntl.flock(lock, fcntl.LOCK_EX)  # another process is in the middle of a change
    try:
        with pytest.raises(LockError, match="in progress"):
            registry.promote(settings, a, actor="schedule")
    finally:
        os.close(lock)
    registry.promote(settings, a, actor="schedule")
    with pytest.raises(LockError, match="changed since the gate decided"):
        registry.promote(settings, b, actor="ui")  # decided against the champion that just lost its seat
    kinds = [e.kind for e in registry.model_events(settings, SYM, "1h")]
    assert kinds.count("promoted") == 2 and kinds[-1] == "promoted"  # bootstrap + the winner only


def test_a_kill_between_event_and_state_is_finished_by_the_next_change(settings: Settings, forecast_store: SQLiteStore) -> None:
    _boot(forecast_store, settings)
    cand, champ = _challenger(forecast_store, settings), _champion(settings)
    # What a promotion killed after logging its event, before writing the state, leaves on disk.
    append_event(registry.events_path(settings, SYM, "1h"), at=LATEST, kind="promoted", actor="schedule", symbol=SYM,
                 timeframe="1h", version=cand.version, champion_before=champ.version, champion_after=cand.version,
                 reason="killed half-way")
    assert registry.read_pointer(settings, SYM, "1h").version == champ.version
    outcome = forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 2 * HOUR)
    assert outcome.model_version == cand.version, "the next run finished the promotion"
    state = registry.read_pointer(settings, SYM, "1h")
    assert (state.version, state.previous, state.event_seq) == (cand.version, champ.version, len(registry.model_events(settings, SYM, "1h")))
    rolled = registry.rollback(settings, SYM, "1h", actor="cli", reason="test")
    assert (rolled.kind, rolled.champion_after) == ("rolled_back", champ.version)
    with pytest.raises(ModelError, match="no previous champion"):
        registry.rollback(settings, SYM, "1h")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "gap"])
def test_a_damaged_event_log_is_an_error_naming_it(settings: Settings, forecast_store: SQLiteStore, damage: str) -> None:
    _boot(forecast_store, settings)
    path = registry.events_path(settings, SYM, "1h")
    raw = path.read_bytes()
    lines = raw.splitlines(keepends=True)
    path.write_bytes({"truncated": raw[:-7], "garbage": raw + b"{not json\n", "gap": lines[0] + lines[2]}[damage])
    with pytest.raises(DataValidationError, match=str(path)):
        registry.model_events(settings, SYM, "1h")
    before = path.read_bytes()
    with pytest.raises(DataValidationError, match="events.jsonl"):
        registry.rollback(settings, SYM, "1h")
    assert path.read_bytes() == before, "never reset"
    served = forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 2 * HOUR)
    assert served.status == "ok", "a damaged log blocks model changes, not forecasting"
    assert path.read_bytes() == before


def test_shadows_are_not_refit_nor_pruned(settings: Settings, forecast_store: SQLiteStore) -> None:
    _boot(forecast_store, settings)
    cand = _challenger(forecast_store, settings)
    again = train_series(forecast_store, settings, SYM, "1h", spec=cand.metadata.spec, now_ms=LATEST + 60_000)
    assert (again.status, again.model_version) == ("skipped", cand.version)
    for k in range(4):  # four newer fits of another family: the challenger stays pinned
        train_series(forecast_store, settings, SYM, "1h", spec=ModelSpec(name="naive", params={"interval_width": 0.6 + k / 20}),
                     now_ms=LATEST + 100_000 + k * 1000)
    assert registry.artifact_path(settings, SYM, "1h", cand.version).exists()
    assert registry.artifact_path(settings, SYM, "1h", _champion(settings).version).exists()


# ---- live scoring --------------------------------------------------------------------------
def _cycles(store: SQLiteStore, settings: Settings, candles: pd.DataFrame, hours: int) -> None:
    """``hours`` hourly cycles: one new candle, then a forecast from it."""
    more = walk_candles("1h", len(candles) + hours, add(LATEST, "1h", hours), seed=7)
    for k in range(1, hours + 1):
        store.write_candles(SYM, "1h", more.iloc[[len(candles) + k - 1]])
        forecast_series(store, settings, SYM, "1h", now_ms=add(LATEST, "1h", k) + HOUR)


def test_scoring_is_incremental_idempotent_and_exact(settings: Settings, forecast_store: SQLiteStore) -> None:
    candles = _boot(forecast_store, settings)
    book = open_scorebook(settings)
    _cycles(forecast_store, settings, candles, 6)
    first = score_series(forecast_store, settings, book, SYM, "1h", now_ms=LATEST + 7 * HOUR)
    # forecasts issued from the candles at LATEST .. LATEST+5h, two models each; targets up to +6h
    assert first.scored == 2 * sum(range(1, 7)) and first.through == add(LATEST, "1h", 6)
    assert score_series(forecast_store, settings, book, SYM, "1h", now_ms=LATEST + 7 * HOUR).scored == 0
    naive = book.skill(SYM, "1h", _champion(settings).version)
    assert naive.n == 21 and naive.mase == pytest.approx(1.0), "the naive champion ties naive by definition"
    rows = book.rows(SYM, "1h", role="champion", step=1)
    closes = walk_candles("1h", len(candles) + 6, add(LATEST, "1h", 6)).set_index("ts")["close"]
    assert [r.y for r in rows] == [closes[r.target_ts] for r in rows]
    # live errors fed each model's calibrated bands once, with the volatility the forecast was banded with
    assert first.fed_bands == 42
    for model in ("naive", "drift"):
        state = load_band_state(settings, SYM, "1h", model)
        assert state is not None and [lv.scored for lv in state.levels] == [21, 21]
        assert sum(len(w) for w in state.residuals) == 21
    assert rows[0].sigma == pytest.approx(sigma_at(forecast_store, SYM, "1h", LATEST, settings.policy("1h").horizon))
    book.close()


def test_a_damaged_score_file_is_an_error_naming_it(settings: Settings) -> None:
    path = settings.data_dir / "scores.sqlite3"
    ScoreBook(path).close()
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(StorageError, match="scores.sqlite3.*corrupt or truncated"):
        ScoreBook(path)
    path.write_bytes(b"")
    with pytest.raises(StorageError, match="never reset"):
        ScoreBook(path)
    assert size > 0 and path.stat().st_size == 0


def _trend_candles(n: int, up: int) -> pd.DataFrame:
    """``up`` candles rising 1 % an hour, then falling 1 % an hour: drift extrapolates the wrong way."""
    steps = [0.01] * up + [-0.01] * (n - up)
    closes = 100 * np.exp(np.cumsum(steps))
    opens = np.concatenate([[100.0], closes[:-1]])
    return pd.DataFrame({"ts": [add(LATEST, "1h", k - up + 1) for k in range(n)], "open": opens,
                         "high": np.maximum(opens, closes) * 1.001, "low": np.minimum(opens, closes) * 0.999,
                         "close": closes, "volume": np.ones(n)})


def test_demotion_when_live_skill_falls_below_naive(settings: Settings, forecast_store: SQLiteStore) -> None:
    candles = _trend_candles(312, 300)
    forecast_store.write_candles(SYM, "1h", candles.iloc[:300])
    forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + HOUR)
    settings = settings.model_copy(update={"demote_window_points": 10})
    drift = RegisteredModel(role="baseline", metadata=registry.read_pointer(settings, SYM, "1h").baselines["drift"])
    promoted = decide(settings, drift, _champion(settings), candidate_score=Score(0.95, 0.8),
                      champion_score=Score(1.0, 0.8), live=None, now_ms=LATEST)
    registry.promote(settings, promoted, actor="cli")
    book = open_scorebook(settings)
    for k in range(1, 5):  # the trend turns: every live point of drift is worse than naive's
        forecast_store.write_candles(SYM, "1h", candles.iloc[[299 + k]])
        forecast_series(forecast_store, settings, SYM, "1h", now_ms=add(LATEST, "1h", k) + HOUR)
    score_series(forecast_store, settings, book, SYM, "1h", now_ms=LATEST + 5 * HOUR)
    skill = book.skill(SYM, "1h", drift.version, last_n=10)
    assert skill.n == 10 and skill.mase is not None and skill.mase > 1.2
    new = check_demotion(settings, book, SYM, "1h", now_ms=LATEST + 5 * HOUR)
    assert new is not None and new.startswith("naive-") and _champion(settings).version == new
    event = registry.model_events(settings, SYM, "1h")[-1]
    assert (event.kind, event.actor, event.champion_before) == ("demoted", "schedule", drift.version)
    assert event.metrics["live_mase"] == round(skill.mase, 4) and "worse than naive" in event.reason
    assert check_demotion(settings, book, SYM, "1h", now_ms=LATEST + 5 * HOUR) is None, "naive is never demoted"
    book.close()


def test_a_scoring_pass_killed_mid_transaction_is_finished_once_by_the_next(settings: Settings, forecast_store: SQLiteStore) -> None:
    """SIGKILL a process holding an open scoring transaction: nothing of it lands, the next pass scores all."""
    import signal
    import subprocess
    import sys
    import textwrap

    candles = _boot(forecast_store, settings)
    _cycles(forecast_store, settings, candles, 3)
    book = open_scorebook(settings)
    book.close()
    script = textwrap.dedent(f"""
        import os, signal, sqlite3
        conn = sqlite3.connect({str(book.path)!r}, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO scores VALUES ('BTC/USDT','1h','x-00000000-20250101000000',1,2,'champion','x',1,1,1,1,1,NULL,NULL,1,NULL)")
        conn.execute("INSERT OR REPLACE INTO watermarks VALUES ('BTC/USDT','1h',9999999999999)")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert done.returncode == -signal.SIGKILL
    with open_scorebook(settings) as book:
        assert book.watermark(SYM, "1h") is None and book.versions(SYM, "1h") == [], "the killed batch left nothing"
        report = score_series(forecast_store, settings, book, SYM, "1h", now_ms=LATEST + 4 * HOUR)
        assert report.scored == 2 * (3 + 2 + 1)
        assert score_series(forecast_store, settings, book, SYM, "1h", now_ms=LATEST + 4 * HOUR).scored == 0


def test_retrain_triggers_fire_on_age_new_candles_and_band_miss_drift(settings: Settings, forecast_store: SQLiteStore) -> None:
    from coin_core.lifecycle.triggers import check_triggers, miss_rate_drift, read_triggers

    assert miss_rate_drift([0] * 200, 0.002) is None
    rate = miss_rate_drift([0, 0, 0, 1] * 50 + [1] * 60, 0.002)  # 25 % misses, then every point misses
    assert rate is not None and rate > 0.5
    assert miss_rate_drift([1, 0, 0, 0, 0] * 80, 0.002) is None, "a steady 20 % miss rate is the band working"
    candles = _boot(forecast_store, settings)
    with open_scorebook(settings) as book:
        check = check_triggers(forecast_store, settings, book, SYM, "1h", now_ms=LATEST + HOUR)
        assert [t.kind for t in check.triggers] == ["no_candidate"], "naive serves and nothing may replace it"
        _challenger(forecast_store, settings)
        tight = settings.model_copy(update={"retrain_max_age_days": 0.01, "retrain_new_candles": 3})
        _cycles(forecast_store, tight, candles, 3)
        check = check_triggers(forecast_store, tight, book, SYM, "1h", now_ms=LATEST + 4 * HOUR)
    assert [t.kind for t in check.triggers] == ["age", "new_candles"]
    assert "3 candles closed since its training data" in check.triggers[1].detail
    assert read_triggers(settings, SYM, "1h") == check, "recorded for the site"
