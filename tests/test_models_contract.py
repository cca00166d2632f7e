"""Every model passes ONE contract (statsforecast style), plus the maths of each baseline."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from coin_core.errors import ModelError
from coin_core.forecast import DriftModel, Model, ModelMetadata, ModelSpec, NaiveModel, ProphetModel, make_model
from coin_core.forecast.base import check_prediction, check_targets, library_versions, z_score
from coin_core.forecast.prophet_model import seasonality_for
from coin_core.forecast.specs import shared_spec, version_for
from coin_core.timeframes import Timeframe, add, from_datetime
from tests.fixtures.forecast_fixtures import walk_history

HOUR_END = from_datetime(pd.Timestamp("2024-06-30 23:00").to_pydatetime())
DAY_END = from_datetime(pd.Timestamp("2024-06-30").to_pydatetime())


def _metadata(model: Model, history: pd.DataFrame, tf: Timeframe) -> ModelMetadata:
    trained_at = int(history["ts"].iloc[-1]) + 1
    return ModelMetadata(
        model_version=version_for(model.spec, trained_at), spec=model.spec, trained_at=trained_at,
        symbol="BTC/USDT", timeframe=tf, first_ts=int(history["ts"].iloc[0]),
        last_ts=int(history["ts"].iloc[-1]), row_count=len(history), libraries=library_versions(),
    )


def assert_band_is_the_models_own(model: Model, targets: list[int]) -> None:
    """What the model itself must produce, read before ``check_prediction`` repairs anything:
    a band of real width at every target (never inverted, never collapsed) that holds the point
    forecast up to sampling noise (5 % of the band's width). ``predict``'s output would pass any
    such check by construction, since the base class widens a band to contain ``yhat``."""
    assert model.state_ is not None
    raw = model._predict(model.state_, check_targets(targets), None)
    lower, yhat, upper = (raw[c].to_numpy(dtype="float64") for c in ("yhat_lower", "yhat", "yhat_upper"))
    width = upper - lower
    assert (width > 1e-6 * np.abs(yhat)).all(), f"band inverted or of zero width: {width.tolist()}"
    slack = 0.05 * width
    assert ((lower - slack <= yhat) & (yhat <= upper + slack)).all(), "the point forecast lies outside its band"


def assert_model_contract(model_factory: Callable[[], Model], tmp_path: Path, tf: Timeframe = "1h", n: int = 240) -> None:
    """The one contract every model must pass."""
    end = HOUR_END if tf == "1h" else DAY_END
    history = walk_history(tf, n, end)
    targets = [add(end, tf, k) for k in range(1, 7)]

    fresh = model_factory()
    assert not fresh.is_fitted
    with pytest.raises(ModelError, match="not fitted"):
        fresh.predict(targets)
    with pytest.raises(ModelError):
        fresh.save(tmp_path / "unfitted.json")
    with pytest.raises(ModelError):
        model_factory().fit(history.assign(y=history["y"].where(history.index != 5, np.nan)))

    model = model_factory()
    assert model.fit(history) is model and model.is_fitted
    out = model.predict(targets)
    assert list(out.columns) == ["ts", "yhat", "yhat_lower", "yhat_upper"]
    assert out["ts"].tolist() == targets and out["ts"].dtype == "int64"
    values = out[["yhat", "yhat_lower", "yhat_upper"]].to_numpy()
    assert np.isfinite(values).all()
    assert_band_is_the_models_own(model, targets)
    # forecasts stay near the data's scale (catches unit mix-ups such as ms vs s)
    assert np.abs(out["yhat"] / history["y"].iloc[-1] - 1).max() < 0.5

    shuffled = model.predict(targets[::-1])
    assert shuffled["ts"].tolist() == targets[::-1]
    pd.testing.assert_frame_equal(shuffled.iloc[::-1].reset_index(drop=True), out)

    meta = _metadata(model, history, tf)
    path = tmp_path / f"{model.name}.json"
    model.save(path, meta)
    raw = path.read_bytes()
    assert raw[:1] == b"{" and not raw.startswith(b"\x80"), "artifact must be JSON, never pickle"
    envelope = json.loads(raw)
    assert envelope["model"] == model.name and envelope["metadata"]["model_version"] == meta.model_version
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "temp file left behind"

    for loader in (type(model).load, Model.load):
        loaded = loader(path)
        assert type(loaded) is type(model) and loaded.spec == model.spec
        assert loaded.metadata_ == meta
        pd.testing.assert_frame_equal(loaded.predict(targets), out)

    for name, payload in {"garbage": b"\x80\x04garbage", "truncated": raw[: len(raw) // 2],
                          "other_json": b'{"hello": 1}', "no_state": json.dumps({**envelope, "state": None}).encode(),
                          "future": json.dumps({**envelope, "schema_version": 99}).encode()}.items():
        bad = tmp_path / f"{name}.json"
        bad.write_bytes(payload)
        with pytest.raises(ModelError):
            type(model).load(bad)
    with pytest.raises(ModelError, match="missing"):
        Model.load(tmp_path / "absent.json")
    other = "naive" if model.name != "naive" else "drift"
    with pytest.raises(ModelError):
        type(make_model(other)).load(path)  # a naive file is not a drift model, etc.


FACTORIES: dict[str, tuple[Callable[[], Model], Timeframe]] = {
    "naive": (NaiveModel, "1h"),
    "drift": (DriftModel, "1h"),
    "prophet_1h": (lambda: ProphetModel(shared_spec("1h")), "1h"),
    "prophet_1d_auto": (lambda: make_model(ModelSpec(name="prophet", params={"uncertainty_samples": 100})), "1d"),
    "prophet_unsampled": (lambda: make_model(ModelSpec(name="prophet", params={"uncertainty_samples": 0})), "1d"),
    "ets": (lambda: make_model("ets"), "1h"),
    "ets_damped_1d": (lambda: make_model(ModelSpec(name="ets", params={"kind": "AAdN"})), "1d"),
}


@pytest.mark.parametrize("key", list(FACTORIES))
def test_every_model_passes_the_contract(key: str, tmp_path: Path) -> None:
    factory, tf = FACTORIES[key]
    assert_model_contract(factory, tmp_path, tf)


def test_naive_band_is_random_walk_band() -> None:
    history = walk_history("1h", 50, HOUR_END)
    out = NaiveModel().fit(history).predict([add(HOUR_END, "1h", k) for k in (1, 4)])
    sigma = float(np.std(np.diff(history["y"]), ddof=1))
    last = float(history["y"].iloc[-1])
    assert out["yhat"].tolist() == [last, last]
    half = (out["yhat_upper"] - out["yhat"]).to_numpy()
    np.testing.assert_allclose(half, [z_score(0.8) * sigma, z_score(0.8) * sigma * 2], rtol=1e-12)


def test_drift_extrapolates_a_line_and_counts_gaps_by_time() -> None:
    ts = np.array([add(HOUR_END, "1h", -k) for k in range(20, -1, -1)])
    history = pd.DataFrame({"ts": ts, "y": 10.0 + 0.5 * np.arange(21)}).drop(index=[5, 6, 7])  # an outage
    out = DriftModel().fit(history).predict([add(HOUR_END, "1h", 1), add(HOUR_END, "1h", 3)])
    np.testing.assert_allclose(out["yhat"], [20.5, 21.5])


@pytest.mark.parametrize("cls", [NaiveModel, DriftModel])
def test_anchor_follows_recent_tail(cls: type[Model]) -> None:
    history = walk_history("1h", 60, HOUR_END)
    model = cls().fit(history)
    newer = pd.DataFrame({"ts": [add(HOUR_END, "1h", 1), add(HOUR_END, "1h", 2)], "y": [500.0, 600.0]})
    out = model.predict([add(HOUR_END, "1h", 3)], recent=newer)
    assert out["yhat"].iloc[0] == pytest.approx(600.0, rel=0.01)
    stale = model.predict([add(HOUR_END, "1h", 3)], recent=history.tail(3))  # not newer: ignored
    assert stale["yhat"].iloc[0] == pytest.approx(model.predict([add(HOUR_END, "1h", 3)])["yhat"].iloc[0])


def test_spec_hash_is_stable_and_sensitive() -> None:
    a = ModelSpec(name="prophet", params={"x": 1, "y": True})
    b = ModelSpec(name="prophet", params={"y": True, "x": 1})
    assert a.spec_hash == b.spec_hash and len(a.hash8) == 8
    assert a.spec_hash != ModelSpec(name="prophet", params={"x": 2, "y": True}).spec_hash
    assert a.spec_hash != ModelSpec(name="drift", params={"x": 1, "y": True}).spec_hash
    assert version_for(a, from_datetime(pd.Timestamp("2025-01-02 03:04:05").to_pydatetime())) == f"prophet-{a.hash8}-20250102030405"
    with pytest.raises(ValueError):
        ModelSpec(name="prophet", params={"x": math.nan})


def test_factory_and_params_are_validated() -> None:
    assert isinstance(make_model("naive"), NaiveModel) and isinstance(make_model(shared_spec("1d")), ProphetModel)
    with pytest.raises(ModelError, match="unknown model"):
        make_model("arima")
    with pytest.raises(ModelError, match="unknown prophet parameter"):
        make_model(ModelSpec(name="prophet", params={"daily": True}))
    with pytest.raises(ModelError, match="uncertainty_samples"):
        make_model(ModelSpec(name="prophet", params={"uncertainty_samples": 5}))
    with pytest.raises(ModelError):
        make_model(ModelSpec(name="naive", params={"interval_width": 1.5}))


def test_seasonality_per_timeframe() -> None:
    hour, day, year = 3_600_000, 86_400_000, 365 * 86_400_000
    assert seasonality_for(hour, year) == {"daily_seasonality": True, "weekly_seasonality": True, "yearly_seasonality": False}
    assert seasonality_for(day, year)["yearly_seasonality"] is False
    assert seasonality_for(day, 3 * year) == {"daily_seasonality": False, "weekly_seasonality": True, "yearly_seasonality": True}
    assert seasonality_for(7 * day, 3 * year)["weekly_seasonality"] is False
    assert not any(seasonality_for(30 * day, 8 * year).values())
    assert shared_spec("1h").params["daily_seasonality"] is True and shared_spec("1d").params["daily_seasonality"] is False
    with pytest.raises(ModelError):
        shared_spec("1m")


def test_prophet_is_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    ProphetModel(ModelSpec(name="prophet", params={"uncertainty_samples": 50})).fit(walk_history("1d", 120, DAY_END)).predict([add(DAY_END, "1d", 1)])
    captured = capfd.readouterr()
    assert "cmdstanpy" not in captured.err + captured.out and "plotly" not in captured.err + captured.out


def test_prophet_forecast_starts_from_the_latest_close_not_from_an_old_fit() -> None:
    """A champion fitted a week ago must still forecast from the latest candle (level correction)."""
    import numpy as np
    import pandas as pd

    from coin_core.forecast import make_model, shared_spec

    h = 3_600_000
    rng = np.random.default_rng(7)
    ts = np.arange(400, dtype="int64") * h + 1_700_000_000_000 // h * h
    y = 100 + np.cumsum(rng.normal(0, 0.3, 400))
    model = make_model(shared_spec("1h")).fit(pd.DataFrame({"ts": ts[:300], "y": y[:300]}))
    recent = pd.DataFrame({"ts": ts[300:], "y": y[300:] * 2})  # the market doubled since the fit
    targets = [int(ts[-1]) + k * h for k in range(1, 4)]
    anchored = model.predict(targets, recent=recent)
    stale = model.predict(targets)
    assert abs(anchored["yhat"].iloc[0] - recent["y"].iloc[-1]) < 0.05 * recent["y"].iloc[-1]
    assert abs(stale["yhat"].iloc[0] - recent["y"].iloc[-1]) > 0.3 * recent["y"].iloc[-1]
    assert (anchored["yhat_lower"] <= anchored["yhat"]).all() and (anchored["yhat"] <= anchored["yhat_upper"]).all()


def test_check_prediction_rejects_an_inverted_band_and_widens_only_noise() -> None:
    targets = np.array([add(HOUR_END, "1h", k) for k in (1, 2)], dtype="int64")

    def frame(lower: list[float], yhat: list[float], upper: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"ts": targets, "yhat": yhat, "yhat_lower": lower, "yhat_upper": upper})

    with pytest.raises(ModelError, match="inverted"):
        check_prediction(frame([100.0, 101.0], [100.0, 100.0], [99.0, 102.0]), targets)
    with pytest.raises(ModelError, match="inverted"):  # tiny prices are judged on their own scale
        check_prediction(frame([2.1e-5, 1e-5], [2e-5, 1.1e-5], [1.9e-5, 1.2e-5]), targets)
    noisy = check_prediction(frame([60_000.000000001, 59_000.0], [60_000.0, 60_100.0], [60_000.0, 60_050.0]), targets)
    assert noisy["yhat_lower"].tolist() == [60_000.0, 59_000.0] and noisy["yhat_upper"].tolist() == [60_000.0, 60_100.0]


def test_a_model_whose_band_is_inverted_fails_the_contract(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The contract catches the fault it exists for (it passed before check_prediction raised)."""
    honest = NaiveModel._predict

    def inverted(self: NaiveModel, state: dict, target_ts: np.ndarray, recent: pd.DataFrame | None) -> pd.DataFrame:
        out = honest(self, state, target_ts, recent)
        return out.rename(columns={"yhat_lower": "yhat_upper", "yhat_upper": "yhat_lower"})

    monkeypatch.setattr(NaiveModel, "_predict", inverted)
    with pytest.raises(ModelError, match="inverted"):
        assert_model_contract(NaiveModel, tmp_path, "1h")
    with pytest.raises(AssertionError, match="inverted"):
        assert_band_is_the_models_own(NaiveModel().fit(walk_history("1h", 50, HOUR_END)), [add(HOUR_END, "1h", 1)])
