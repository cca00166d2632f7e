"""The serving path: Prophet's predict from its parameters in numpy, and the compact serving file.

Equality is judged against prophet itself (``model_from_json`` + ``Prophet.predict``) on models
fitted here, not against stored numbers.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coin_core.config import Settings
from coin_core.errors import ModelError
from coin_core.forecast import ModelSpec, make_model, registry, shared_spec
from coin_core.forecast.base import ModelMetadata, library_versions
from coin_core.forecast.prophet_fast import ProphetParams, compact_params, predict_yhat
from coin_core.forecast.serving import serving_path
from coin_core.timeframes import add, from_datetime
from tests.fixtures.forecast_fixtures import walk_history

HOUR_END = from_datetime(pd.Timestamp("2024-06-30 23:00").to_pydatetime())

VARIANTS = {
    "additive": {},
    "multiplicative": {"seasonality_mode": "multiplicative"},
    "flat": {"growth": "flat"},
    "daily_weekly_orders": {"daily_seasonality": 7, "weekly_seasonality": 5},
}


def _prophet_yhat(state: dict, stamps: np.ndarray) -> np.ndarray:
    from prophet.serialize import model_from_json

    m = model_from_json(json.dumps(state["prophet"]))
    m.uncertainty_samples = 0
    order = np.argsort(stamps, kind="stable")  # prophet returns its rows sorted by ds
    out = np.empty(len(stamps))
    out[order] = m.predict(pd.DataFrame({"ds": pd.to_datetime(stamps[order], unit="ms")}))["yhat"].to_numpy()
    return out


@pytest.fixture(scope="module")
def fitted() -> dict[str, object]:
    history = walk_history("1h", 500, HOUR_END)
    base = dict(shared_spec("1h").params)
    return {name: make_model(ModelSpec(name="prophet", params={**base, **extra})).fit(history)
            for name, extra in VARIANTS.items()}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_numpy_predict_equals_prophet_predict(fitted: dict, variant: str) -> None:
    model = fitted[variant]
    # in-sample (changepoints crossed), the horizon, and far out (a year: every seasonality phase)
    stamps = np.concatenate([walk_history("1h", 500, HOUR_END)["ts"].to_numpy()[::7],
                             [add(HOUR_END, "1h", k) for k in (1, 2, 24, 168, 24 * 365)]]).astype("int64")
    expected = _prophet_yhat(model.state_, stamps)
    params = ProphetParams.model_validate(compact_params(model.state_["prophet"]))
    got = predict_yhat(params, stamps)
    assert np.max(np.abs(got - expected) / np.abs(expected)) < 1e-9
    if variant == "multiplicative":
        assert any(s.mode == "multiplicative" for s in params.seasonalities)


def test_model_predict_runs_the_compact_form_and_matches_prophet(fitted: dict) -> None:
    model = fitted["additive"]
    history = walk_history("1h", 520, add(HOUR_END, "1h", 20))
    recent = history.tail(8).reset_index(drop=True)
    targets = [add(int(recent["ts"].iloc[-1]), "1h", k) for k in range(1, 25)]
    out = model.predict(targets, recent=recent)
    stamps = np.append(np.asarray(targets, dtype="int64"), int(recent["ts"].iloc[-1]))
    yhat = _prophet_yhat(model.state_, stamps)
    expected = yhat[:-1] + (float(recent["y"].iloc[-1]) - yhat[-1])
    np.testing.assert_allclose(out["yhat"].to_numpy(), expected, rtol=1e-9)
    half = out["yhat_upper"] - out["yhat"]
    assert np.allclose(half, half.iloc[0]) and half.iloc[0] > 0, "the model's own band: z * sigma_obs"
    points = model.predict_points(targets, recent["ts"].to_numpy(), recent["y"].to_numpy())
    np.testing.assert_array_equal(points, out[["yhat", "yhat_lower", "yhat_upper"]].to_numpy())


def test_what_the_compact_form_cannot_express_keeps_prophets_predict(fitted: dict) -> None:
    state = fitted["additive"].state_["prophet"]
    names, seasonal = state["seasonalities"]
    conditioned = {**state, "seasonalities": [names, {n: {**s, "condition_name": "on"} for n, s in seasonal.items()}]}
    for unsupported in ({**state, "growth": "logistic"}, {**state, "extra_regressors": [["x"], {"x": {}}]},
                        {**state, "train_holiday_names": '{"name":"holiday"}'}, conditioned):
        assert compact_params(unsupported) is None
    sampled = make_model(ModelSpec(name="prophet", params={**shared_spec("1h").params, "uncertainty_samples": 20}))
    sampled.state_ = sampled._validate_state(fitted["additive"].state_)
    assert sampled.serving_state() is None, "a sampled band needs prophet itself"


def _register(settings: Settings, model: object, history: pd.DataFrame) -> str:
    meta = ModelMetadata(model_version=f"prophet-{model.spec.hash8}-20250101000000", spec=model.spec,  # type: ignore[attr-defined]
                         trained_at=1, symbol="BTC/USDT", timeframe="1h", first_ts=int(history["ts"].iloc[0]),
                         last_ts=int(history["ts"].iloc[-1]), row_count=len(history), libraries=library_versions())
    return registry.register(settings, "BTC/USDT", "1h", model, meta).model_version  # type: ignore[arg-type]


def test_serving_file_is_written_at_registration_and_forecasts_the_same(settings: Settings, fitted: dict) -> None:
    model = fitted["additive"]
    version = _register(settings, model, walk_history("1h", 500, HOUR_END))
    artifact = registry.artifact_path(settings, "BTC/USDT", "1h", version)
    side = serving_path(artifact)
    assert side.is_file() and side.stat().st_size < artifact.stat().st_size / 20
    assert registry.list_versions(settings, "BTC/USDT", "1h") == [version], "a serving file is no version"
    served = registry.load_serving(settings, "BTC/USDT", "1h", version)
    assert "prophet" not in (served.state_ or {}), "loaded from the serving file, not the artifact"
    full, _ = registry.load_version(settings, "BTC/USDT", "1h", version)
    targets = [add(HOUR_END, "1h", k) for k in range(1, 25)]
    np.testing.assert_array_equal(served.predict_points(targets), full.predict_points(targets))


def test_a_stale_corrupt_or_orphaned_serving_file_is_never_trusted(settings: Settings, fitted: dict,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    version = _register(settings, fitted["additive"], walk_history("1h", 500, HOUR_END))
    artifact = registry.artifact_path(settings, "BTC/USDT", "1h", version)
    side = serving_path(artifact)
    # stale: the artifact was replaced (another fit's state) after its serving file was written
    other = json.loads(artifact.read_text())
    other["state"] = fitted["flat"].state_
    artifact.write_text(json.dumps(other))
    os.utime(artifact, ns=(1, 1))
    served = registry.load_serving(settings, "BTC/USDT", "1h", version)
    targets = [add(HOUR_END, "1h", k) for k in (1, 5)]
    np.testing.assert_array_equal(served.predict_points(targets), fitted["flat"].predict_points(targets))
    assert json.loads(side.read_text())["artifact"]["mtime_ns"] == 1, "rebuilt from the artifact"
    # corrupt: rebuilt, with a warning naming it
    side.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        registry.load_serving(settings, "BTC/USDT", "1h", version)
    assert side.name in caplog.text and json.loads(side.read_text())["format"] == "coin-predict-model-serving"
    # orphaned: the artifact is gone, the serving file does not stand in for it
    artifact.unlink()
    with pytest.raises(ModelError, match="missing"):
        registry.load_serving(settings, "BTC/USDT", "1h", version)


def test_pruning_an_artifact_removes_its_serving_file(settings: Settings, fitted: dict) -> None:
    history = walk_history("1h", 500, HOUR_END)
    first = _register(settings, fitted["additive"], history)
    side = serving_path(registry.artifact_path(settings, "BTC/USDT", "1h", first))
    assert side.is_file()
    for name in ("flat", "multiplicative", "daily_weekly_orders"):  # each replaces the challenger
        _register(settings, fitted[name], history)
    assert not registry.artifact_path(settings, "BTC/USDT", "1h", first).exists()
    assert not side.exists()
    leftovers = sorted(p.name for p in Path(side.parent).glob("*.serve.json"))
    assert len(leftovers) == len(registry.list_versions(settings, "BTC/USDT", "1h"))


def test_forecasts_on_many_threads_never_rebuild_prophet_even_from_old_artifacts(
        settings: Settings, forecast_store: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cycle forecasts on its series threads without a lock: nothing on the serving path may
    call ``pandas.read_json`` (its ``catch_warnings(record=True)`` is not thread-safe). Artifacts
    written before serving files existed (removed here) must not need it either."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    import pandas

    from coin_core.cycle import forecast_one
    from coin_core.forecast import train_series
    from tests.fixtures.forecast_fixtures import walk_candles

    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    for i, symbol in enumerate(symbols):
        forecast_store.write_candles(symbol, "1h", walk_candles("1h", 400, HOUR_END, seed=i))  # type: ignore[attr-defined]
        train_series(forecast_store, settings, symbol, "1h", spec=shared_spec("1h"), now_ms=HOUR_END + 1)  # type: ignore[arg-type]
    for side in Path(settings.data_dir, "models").rglob("*.serve.json"):
        side.unlink()  # as an install upgraded from before this change

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pandas.read_json on the serving path")

    monkeypatch.setattr(pandas, "read_json", refuse)
    filters, show = list(warnings.filters), warnings.showwarning
    with ThreadPoolExecutor(len(symbols)) as pool:
        outcomes = list(pool.map(lambda s: forecast_one(forecast_store, settings, s, "1h", HOUR_END + 2), symbols))  # type: ignore[arg-type]
    assert [o.status for o in outcomes if o] == ["ok"] * 3
    assert all(o.shadows == 2 and not o.shadow_errors for o in outcomes if o), "naive serves; drift and prophet shadow"
    for symbol in symbols:
        stored = forecast_store.read_forecasts(symbol, "1h", role="challenger")  # type: ignore[attr-defined]
        assert [f.model for f in stored] == ["prophet"] and np.isfinite(stored[0].points["yhat"]).all()
    assert len(list(Path(settings.data_dir, "models").rglob("*.serve.json"))) == 3, "rebuilt from the dict, no read_json"
    assert warnings.filters == filters and warnings.showwarning is show
