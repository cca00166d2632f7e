"""Registry, chunked training with fit skipping, and prediction that degrades instead of failing."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from coin_core.config import Settings
from coin_core.errors import ModelError
from coin_core.forecast import ModelSpec, fit_cache_key, forecast_series, train_series
from coin_core.forecast import registry
from coin_core.health import read_prediction_health
from coin_core.storage.sqlite import SQLiteStore
from coin_core.timeframes import Timeframe, add, from_datetime
from tests.fixtures.forecast_fixtures import walk_candles

SYM = "BTC/USDT"
LATEST = from_datetime(datetime(2025, 3, 1, 12, tzinfo=timezone.utc))
NAIVE = ModelSpec(name="naive")
BROKEN = ModelSpec(name="prophet", params={"growth": "logistic"})  # prophet's fit raises: no 'cap'


class PageRecordingStore(SQLiteStore):
    """A real SQLite store that records the size of every page a reader asks for and gets."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.pages: list[tuple[int, int]] = []

    def _read_page(self, symbol, tf, start, end, limit):  # type: ignore[no-untyped-def]
        page = super()._read_page(symbol, tf, start, end, limit)
        self.pages.append((limit, len(page)))
        return page


def _fill(store: SQLiteStore, n: int, tf: Timeframe = "1h", latest: int = LATEST, seed: int = 7) -> pd.DataFrame:
    candles = walk_candles(tf, n, latest, seed)
    store.write_candles(SYM, tf, candles)
    return candles


# ---- registry ------------------------------------------------------------------------------
def test_register_never_promotes_and_pruning_keeps_every_role(settings: Settings, forecast_store: SQLiteStore) -> None:
    from coin_core.lifecycle.gate import bootstrap_decision

    _fill(forecast_store, 200)
    versions = []
    for k in range(5):
        spec = ModelSpec(name="drift", params={"interval_width": 0.5 + k / 20})  # new spec: no skip
        versions.append(train_series(forecast_store, settings, SYM, "1h", spec=spec, now_ms=LATEST + k * 1000).model_version)
    naive = train_series(forecast_store, settings, SYM, "1h", spec=NAIVE, now_ms=LATEST + 9_000).model_version
    assert len(set(versions)) == 5
    state = registry.read_pointer(settings, SYM, "1h")
    assert state is not None and state.version is None, "registering never makes a champion"
    assert {n: m.model_version for n, m in state.baselines.items()} == {"drift": versions[-1], "naive": naive}
    assert registry.list_versions(settings, SYM, "1h")[-3:] == [versions[3], versions[4], naive]
    naive_entry = next(m for m in registry.registered(settings, SYM, "1h") if m.version == naive)
    registry.promote(settings, bootstrap_decision(naive_entry, LATEST + 10_000), actor="cli")
    model, loaded = registry.load_champion(settings, SYM, "1h")  # type: ignore[misc]
    assert loaded.model_version == naive and model.spec == NAIVE
    with pytest.raises(ModelError, match="no previous champion"):
        registry.rollback(settings, SYM, "1h")


def test_same_second_fits_do_not_overwrite(settings: Settings, forecast_store: SQLiteStore) -> None:
    candles = _fill(forecast_store, 200)
    a = train_series(forecast_store, settings, SYM, "1h", spec=NAIVE, now_ms=LATEST)
    newer = walk_candles("1h", 1, add(LATEST, "1h", 1))
    newer[["open", "high", "low", "close"]] = candles["close"].iloc[-1]
    forecast_store.write_candles(SYM, "1h", newer)
    b = train_series(forecast_store, settings, SYM, "1h", spec=NAIVE, now_ms=LATEST)  # same spec, same second
    assert b.status == "trained" and b.model_version == f"{a.model_version}-1"
    assert registry.list_versions(settings, SYM, "1h") == [a.model_version, b.model_version]
    assert registry.load_version(settings, SYM, "1h", a.model_version or "")[1].row_count == 200


def test_corrupt_or_unsafe_artifacts_are_model_errors(settings: Settings, forecast_store: SQLiteStore) -> None:
    assert registry.load_champion(settings, SYM, "1h") is None
    _fill(forecast_store, 200)
    forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 3_600_000)  # bootstraps: naive serves
    version = registry.read_pointer(settings, SYM, "1h").version
    path = registry.artifact_path(settings, SYM, "1h", version)
    assert path.parent == settings.data_dir / "models" / "BTC-USDT" / "1h"
    path.write_text('{"format": "coin-predict-model", "schema_vers', "utf-8")
    with pytest.raises(ModelError, match="not valid JSON"):
        registry.load_champion(settings, SYM, "1h")
    path.unlink()
    with pytest.raises(ModelError, match="missing"):
        registry.load_champion(settings, SYM, "1h")
    (path.parent / "champion.json").write_text("[]", "utf-8")
    with pytest.raises(ModelError, match="champion.json"):
        registry.load_champion(settings, SYM, "1h")
    with pytest.raises(ModelError, match="invalid model version"):
        registry.artifact_path(settings, SYM, "1h", "../../etc/passwd")


# ---- training ------------------------------------------------------------------------------
def test_training_reads_in_bounded_chunks(settings: Settings, tmp_path: Path) -> None:
    store = PageRecordingStore(tmp_path / "c.db")
    _fill(store, 1_000)
    store.pages.clear()
    result = train_series(store, settings, SYM, "1h", spec=NAIVE, lookback=700, chunk_size=128, now_ms=LATEST)
    assert result.status == "trained" and result.row_count == 700
    assert result.metadata is not None and result.metadata.first_ts == add(LATEST, "1h", -699)
    assert result.metadata.last_ts == LATEST
    reads = [(limit, got) for limit, got in store.pages if limit > 1]  # limit 1 = the range probe
    assert reads and all(limit == 128 and got <= 128 for limit, got in reads)
    assert sum(got for _, got in reads) == 700 and len(reads) == 6  # ceil(700 / 128)
    store.close()


def test_min_sample_gate(settings: Settings, forecast_store: SQLiteStore) -> None:
    assert train_series(forecast_store, settings, SYM, "1h").status == "insufficient_data"
    _fill(forecast_store, 167)  # 1h needs 168
    result = train_series(forecast_store, settings, SYM, "1h", spec=NAIVE)
    assert result.status == "insufficient_data" and result.row_count == 167
    assert registry.list_versions(settings, SYM, "1h") == []
    assert train_series(forecast_store, settings, SYM, "1h", spec=NAIVE, lookback=100).status == "insufficient_data"


def test_fit_is_skipped_when_spec_and_data_unchanged(settings: Settings, forecast_store: SQLiteStore) -> None:
    candles = _fill(forecast_store, 300)
    first = train_series(forecast_store, settings, SYM, "1h", spec=NAIVE, now_ms=LATEST)
    again = train_series(forecast_store, settings, SYM, "1h", spec=NAIVE, now_ms=LATEST + 5_000)
    assert (first.status, again.status) == ("trained", "skipped")
    assert again.model_version == first.model_version and again.cache_key == first.cache_key
    assert len(registry.list_versions(settings, SYM, "1h")) == 1
    other_spec = train_series(forecast_store, settings, SYM, "1h", spec=ModelSpec(name="drift"), now_ms=LATEST + 6_000)
    assert other_spec.status == "trained"
    newer = walk_candles("1h", 1, add(LATEST, "1h", 1), seed=9)
    newer[["open", "high", "low", "close"]] = candles["close"].iloc[-1]
    forecast_store.write_candles(SYM, "1h", newer)
    moved = train_series(forecast_store, settings, SYM, "1h", spec=ModelSpec(name="drift"), now_ms=LATEST + 7_000)
    assert moved.status == "trained" and moved.cache_key != other_spec.cache_key


def test_fit_cache_key_depends_on_every_input() -> None:
    base = ("BTC/USDT", "1h", 1, 2, 3, "abc")
    key = fit_cache_key(*base)  # type: ignore[arg-type]
    assert key == fit_cache_key(" btc/usdt ", "1h", 1, 2, 3, "abc") and key.startswith("fit-BTC-USDT-1h-")
    for i, changed in enumerate(["ETH/USDT", "1d", 0, 5, 4, "abd"]):
        args = list(base)
        args[i] = changed
        assert fit_cache_key(*args) != key  # type: ignore[arg-type]


def test_failing_fit_raises_model_error(settings: Settings, forecast_store: SQLiteStore) -> None:
    _fill(forecast_store, 200)
    with pytest.raises(ModelError, match="prophet fit failed"):
        train_series(forecast_store, settings, SYM, "1h", spec=BROKEN)
    assert registry.list_versions(settings, SYM, "1h") == []


def test_candidates_of_a_series_fit_together_and_a_failure_is_its_own_row(settings: Settings) -> None:
    from coin_core.pipeline import train_candidates
    from coin_core.storage import open_store

    with open_store(settings) as store:
        _fill(store, 200)  # type: ignore[arg-type]
    drift = ModelSpec(name="drift")
    results = train_candidates(settings, SYM, "1h", None, [NAIVE, BROKEN, drift], "cli")
    assert [type(r).__name__ for r in results] == ["TrainResult", "str", "TrainResult"]
    assert results[1].startswith("ModelError: prophet fit failed"), results[1]  # type: ignore[union-attr]
    assert {m.metadata.spec.name for m in registry.registered(settings, SYM, "1h")} == {"naive", "drift"}


# ---- prediction ----------------------------------------------------------------------------
def test_insufficient_data_is_recorded(settings: Settings, forecast_store: SQLiteStore) -> None:
    _fill(forecast_store, 50)
    outcome = forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 3_600_000)
    assert outcome.status == "insufficient_data"
    health = read_prediction_health(settings.data_dir, SYM, "1h")
    assert health is not None and health.status == "insufficient_data" and health.last_success_at is None
    assert forecast_store.latest_forecast(SYM, "1h") is None


def test_degraded_keeps_last_good_forecast(settings: Settings, forecast_store: SQLiteStore) -> None:
    _fill(forecast_store, 300)
    ok_at = LATEST + 3_600_000
    ok = forecast_series(forecast_store, settings, SYM, "1h", now_ms=ok_at)
    assert ok.status == "ok"
    good = forecast_store.latest_forecast(SYM, "1h")
    health = read_prediction_health(settings.data_dir, SYM, "1h")
    assert good is not None and health is not None and (health.status, health.last_success_at) == ("ok", ok_at)

    pointer = registry.read_pointer(settings, SYM, "1h")
    assert pointer is not None
    registry.artifact_path(settings, SYM, "1h", pointer.version).write_bytes(b"\x00\x01 not a model")
    bad = forecast_series(forecast_store, settings, SYM, "1h", now_ms=ok_at + 3_600_000)
    assert bad.status == "degraded" and bad.error and "ModelError" in bad.error
    kept = forecast_store.latest_forecast(SYM, "1h")
    assert kept is not None and kept.issued_at == good.issued_at
    pd.testing.assert_frame_equal(kept.points, good.points)
    health = read_prediction_health(settings.data_dir, SYM, "1h")
    assert health is not None and health.status == "degraded" and health.last_success_at == ok_at
    assert health.last_error and "\n" not in health.last_error and len(health.last_error) <= 200


def test_fresh_series_bootstraps_naive_without_fitting_prophet(settings: Settings, forecast_store: SQLiteStore) -> None:
    _fill(forecast_store, 200)
    outcome = forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 3_600_000)
    assert (outcome.status, outcome.trained_now, outcome.shadows) == ("ok", True, 1)  # drift shadows naive
    assert outcome.model_version and outcome.model_version.startswith("naive-")
    assert {v.split("-")[0] for v in registry.list_versions(settings, SYM, "1h")} == {"naive", "drift"}
    [event] = [e for e in registry.model_events(settings, SYM, "1h") if e.kind == "promoted"]
    assert event.metrics["bootstrap"] is True and "baseline serves" in event.reason
    runs = forecast_store.read_forecasts(SYM, "1h")
    assert [(f.role, f.model) for f in runs] == [("champion", "naive"), ("baseline", "drift")]
    assert forecast_store.latest_forecast(SYM, "1h").model == "naive"


def test_a_failing_shadow_never_degrades_the_series(settings: Settings, forecast_store: SQLiteStore) -> None:
    _fill(forecast_store, 200)
    forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 3_600_000)
    drift = registry.read_pointer(settings, SYM, "1h").baselines["drift"].model_version
    registry.artifact_path(settings, SYM, "1h", drift).write_text("{ corrupt")
    outcome = forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 7_200_000)
    assert outcome.status == "ok" and outcome.shadows == 0 and drift in outcome.shadow_errors[0]
    assert read_prediction_health(settings.data_dir, SYM, "1h").status == "ok"


def test_artifact_metadata_is_complete(settings: Settings, forecast_store: SQLiteStore) -> None:
    _fill(forecast_store, 200)
    result = train_series(forecast_store, settings, SYM, "1h", spec=NAIVE, now_ms=LATEST)
    raw = json.loads(registry.artifact_path(settings, SYM, "1h", result.model_version or "").read_text("utf-8"))
    meta = raw["metadata"]
    assert meta["model_version"] == f"naive-{NAIVE.hash8}-20250301120000"
    assert (meta["symbol"], meta["timeframe"], meta["row_count"], meta["trained_at"]) == (SYM, "1h", 200, LATEST)
    assert {"prophet", "pandas", "numpy", "python", "coin_core"} <= set(meta["libraries"])
    assert meta["spec"] == {"name": "naive", "params": {}} and meta["schema_version"] == 1


def test_forecast_runs_older_than_the_retention_are_pruned(settings: Settings, forecast_store: SQLiteStore) -> None:
    _fill(forecast_store, 200)
    settings = settings.model_copy(update={"forecast_retention_days": 2})
    day = 86_400_000
    for k in (5, 3, 1):  # forecasts issued 5, 3 and 1 day(s) before this cycle
        old = forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 3_600_000 - k * day)
        assert old.status == "ok"
    forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 3_600_000)
    runs = forecast_store.read_forecasts(SYM, "1h")
    assert {f.role for f in runs} == {"champion", "baseline"}, "shadow runs are pruned with the champion's"
    issued = sorted({f.issued_at for f in runs})
    assert issued == [LATEST + 3_600_000 - day, LATEST + 3_600_000]


def test_champion_summary_reads_only_the_pointer(settings: Settings, forecast_store: SQLiteStore) -> None:
    from coin_core.forecast.registry import artifact_path, champion_metadata, champion_summary

    _fill(forecast_store, 200)
    forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 3_600_000)
    version = registry.read_pointer(settings, SYM, "1h").version
    artifact_path(settings, SYM, "1h", version).write_text("{ corrupt")
    summary = champion_summary(settings, SYM, "1h")
    assert summary is not None and summary.model_version == version and summary.row_count == 200
    with pytest.raises(ModelError):  # the artifact check stays where integrity matters
        champion_metadata(settings, SYM, "1h")
