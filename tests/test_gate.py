"""Train -> evaluate -> gate -> promote on generated candles, with a real rolling-origin evaluation,
and the CLI's view of it (models, events, rollback)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from coin_core.cli import main
from coin_core.config import Settings
from coin_core.evaluation import evaluate_series
from coin_core.forecast import ModelSpec, forecast_series, registry, train_series
from coin_core.forecast.registry import RegisteredModel
from coin_core.lifecycle import decide, open_scorebook, run_gate
from tests.test_lifecycle import Score
from coin_core.storage.sqlite import SQLiteStore
from coin_core.timeframes import add, from_datetime

SYM = "BTC/USDT"
LATEST = from_datetime(datetime(2025, 3, 1, 12, tzinfo=timezone.utc))
N = 2_400


def _trending(n: int, drift: float, seed: int = 3) -> pd.DataFrame:
    """A steady uptrend with small noise: drift extrapolates it, naive lags one step behind."""
    rng = np.random.default_rng(seed)
    closes = 100 * np.exp(np.cumsum(drift + rng.normal(0, 0.0005, n)))
    opens = np.concatenate([[100.0], closes[:-1]])
    return pd.DataFrame({"ts": [add(LATEST, "1h", k - n + 1) for k in range(n)], "open": opens,
                         "high": np.maximum(opens, closes) * 1.0005, "low": np.minimum(opens, closes) * 0.9995,
                         "close": closes, "volume": np.ones(n)})


@pytest.fixture
def gate_settings(settings: Settings) -> Settings:
    # Coverage bounds are settings: widened here so the verdict turns on MASE alone.
    return settings.model_copy(update={"gate_coverage80_min": 0.0, "gate_coverage80_max": 1.0})


def test_gate_promotes_a_baseline_that_beats_naive_and_records_its_numbers(
    gate_settings: Settings, forecast_store: SQLiteStore
) -> None:
    settings = gate_settings
    forecast_store.write_candles(SYM, "1h", _trending(N, 0.002))
    assert forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 3_600_000).model_version.startswith("naive-")
    drift = registry.read_pointer(settings, SYM, "1h").baselines["drift"]
    with open_scorebook(settings) as book:
        outcome = run_gate(forecast_store, settings, SYM, "1h", actor="cli", now_ms=LATEST + 3_700_000, book=book)
    assert (outcome.status, outcome.champion) == ("promoted", drift.model_version), outcome.message
    expected = evaluate_series(forecast_store, settings, SYM, "1h", [ModelSpec(name="naive"), ModelSpec(name="drift")],
                               now_ms=LATEST + 3_700_000).scores["drift"]
    event = registry.model_events(settings, SYM, "1h")[-1]
    assert (event.kind, event.actor, event.version) == ("promoted", "cli", drift.model_version)
    assert event.metrics["mase"] == round(expected.mase, 4) < 1.0
    assert event.metrics["origins"] == expected.n_origins >= 50
    assert "beats the champion" in event.reason

    with open_scorebook(settings) as book:  # the same gate again: naive cannot beat drift, drift stays
        again = run_gate(forecast_store, settings, SYM, "1h", actor="schedule", now_ms=LATEST + 3_800_000, book=book)
    assert (again.status, again.champion) == ("kept", drift.model_version)
    [naive] = [d for d in again.decisions if d.candidate.startswith("naive-")]
    assert not naive.passed and "does not beat the champion" in naive.summary


def test_a_champion_that_loses_to_naive_gives_way_to_the_baseline(settings: Settings, forecast_store: SQLiteStore,
                                                                   capsys: pytest.CaptureFixture[str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A trend that reverses every 100 hours: drift keeps extrapolating the wrong way."""
    n = 1_700
    steps = np.where((np.arange(n) // 100) % 2 == 0, 0.003, -0.003)
    frame = _trending(n, 0.0)
    closes = 100 * np.exp(np.cumsum(steps))
    frame["close"], frame["open"] = closes, np.concatenate([[100.0], closes[:-1]])
    frame["high"], frame["low"] = np.maximum(frame["open"], closes) * 1.0005, np.minimum(frame["open"], closes) * 0.9995
    forecast_store.write_candles(SYM, "1h", frame)
    forecast_series(forecast_store, settings, SYM, "1h", now_ms=LATEST + 3_600_000)
    state = registry.read_pointer(settings, SYM, "1h")
    drift = RegisteredModel(role="baseline", metadata=state.baselines["drift"])
    naive = RegisteredModel(role="champion", metadata=state.metadata)
    # An operator's earlier decision (numbers from another period) made drift champion.
    registry.promote(settings, decide(settings, drift, naive, candidate_score=Score(0.9, 0.8), champion_score=Score(1.0, 0.8),
                                      live=None, now_ms=LATEST), actor="ui")
    strict = settings.model_copy(update={"gate_coverage80_min": 0.999, "gate_coverage80_max": 1.0})
    with open_scorebook(settings) as book:  # no candidate can pass, and drift itself loses to naive
        second = run_gate(forecast_store, strict, SYM, "1h", actor="schedule", now_ms=LATEST + 3_800_000, book=book)
    assert second.status == "demoted" and second.champion.startswith("naive-"), second.message
    event = registry.model_events(settings, SYM, "1h")[-1]
    assert event.kind == "demoted" and event.champion_before == drift.version and event.metrics["mase"] > 1.0

    monkeypatch.setenv("DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("PUBLIC_DIR", str(settings.public_dir))
    monkeypatch.chdir(settings.data_dir.parent)
    assert main(["events", "--symbol", SYM, "--timeframe", "1h", "--limit", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "promoted" in out[0] and "by ui" in out[0] and "demoted" in out[1] and "by schedule" in out[1]
    assert main(["models", "--symbols", SYM]) == 0
    assert "naive baseline is served" in capsys.readouterr().out
    assert main(["rollback", "--symbol", SYM, "--timeframe", "1h", "--reason", "operator check"]) == 0
    assert registry.read_pointer(settings, SYM, "1h").version == drift.version
    assert (settings.public_dir / "index.html").is_file(), "a rollback republishes at once"
    assert main(["rollback", "--symbol", SYM, "--timeframe", "1h"]) == 2, "one step only"
    assert "no previous champion" in capsys.readouterr().err
