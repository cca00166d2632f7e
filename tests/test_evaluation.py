"""Rolling-origin evaluation on self-generated series: no look-ahead, honest baselines, persistence."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from coin_core.cli import main
from coin_core.config import Settings, load_settings
from coin_core.errors import ConfigError, DataValidationError
from coin_core.evaluation import evaluate_many, evaluate_series, evaluation_path, load_evaluation, save_evaluation
from coin_core.evaluation.calibrate import Calibration, _calibrate
from coin_core.evaluation.plan import Plan
from coin_core.forecast import ModelSpec
from coin_core.forecast.base import Model
from coin_core.storage.sqlite import SQLiteStore
from coin_core.timeframes import add, from_datetime
from tests.fixtures.forecast_fixtures import walk_candles

SYM = "BTC/USDT"
LATEST = from_datetime(datetime(2025, 3, 1, 12, tzinfo=timezone.utc))
NAIVE, DRIFT, ETS = ModelSpec(name="naive"), ModelSpec(name="drift"), ModelSpec(name="ets")


@pytest.fixture
def short_settings(settings: Settings) -> Settings:
    """A 6-step 1h horizon keeps the tests fast; everything else is the product's policy."""
    return load_settings(data_dir=settings.data_dir, public_dir=settings.public_dir,
                         timeframe_policy={"1h": {"horizon": 6}})


def _candles(closes: np.ndarray, latest: int = LATEST) -> pd.DataFrame:
    n = len(closes)
    opens = np.concatenate([[closes[0]], closes[:-1]])
    return pd.DataFrame({
        "ts": np.array([add(latest, "1h", k - n + 1) for k in range(n)], dtype="int64"),
        "open": opens, "high": np.maximum(opens, closes) * 1.001, "low": np.minimum(opens, closes) * 0.999,
        "close": closes, "volume": np.ones(n),
    })


@pytest.fixture
def eval_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """BTC with ~6 weeks of hours, ETH with too few; a 6-step horizon keeps Prophet's fits few."""
    env = {"DATA_DIR": str(settings.data_dir), "PUBLIC_DIR": str(settings.public_dir),
           "TARGET_SYMBOLS": "BTC/USDT,ETH/USDT", "TIMEFRAME_POLICY": json.dumps({"1h": {"horizon": 6}})}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with SQLiteStore(settings.data_dir / "candles.sqlite3") as store:
        store.write_candles("BTC/USDT", "1h", walk_candles("1h", 1000, LATEST))
        store.write_candles("ETH/USDT", "1h", walk_candles("1h", 200, LATEST, seed=3))
    return load_settings()



class PeekProbe(Model):
    """Forecasts the highest close it was shown and records the newest candle it ever saw."""

    name = "peek_probe"
    seen: ClassVar[list[tuple[int, int, float]]] = []  # (newest ts seen, first target, highest close seen)

    def _fit(self, history: pd.DataFrame) -> dict[str, Any]:
        return {"last_ts": int(history["ts"].max()), "top": float(history["y"].max())}

    def _predict(self, state: dict[str, Any], target_ts: np.ndarray, recent: pd.DataFrame | None) -> pd.DataFrame:
        newest = max(state["last_ts"], int(recent["ts"].max()) if recent is not None else 0)
        top = max(state["top"], float(recent["y"].max()) if recent is not None else 0.0)
        PeekProbe.seen.append((newest, int(target_ts.min()), top))
        y = np.full(len(target_ts), top)
        return pd.DataFrame({"ts": target_ts, "yhat": y, "yhat_lower": y * 0.99, "yhat_upper": y * 1.01})


def test_naive_mase_is_one_and_every_origin_is_scored(short_settings: Settings, forecast_store: SQLiteStore) -> None:
    forecast_store.write_candles(SYM, "1h", walk_candles("1h", 1200, LATEST))
    ev = evaluate_series(forecast_store, short_settings, SYM, "1h", [NAIVE, DRIFT], n_origins=60, workers=1, now_ms=LATEST)
    assert ev.status == "ok" and len(ev.origins) == 60 and ev.horizon == 6
    naive, drift = ev.scores["naive"], ev.scores["drift"]
    assert naive.mase == 1.0 and all(s.mase == 1.0 for s in naive.per_step)
    assert drift.mase != 1.0 and drift.n_points == naive.n_points == 60 * 6
    assert [s.step for s in naive.per_step] == list(range(1, 7))
    assert 0 < naive.width80 < 0.2 and naive.wis > 0
    assert naive.per_step[0].width80 < naive.per_step[-1].width80  # a random walk's band widens
    # every scored origin lies before the latest candle by at least one horizon
    assert ev.origins == sorted(ev.origins) and ev.origins[-1] <= add(LATEST, "1h", -6)


def test_origins_only_see_the_past(short_settings: Settings, forecast_store: SQLiteStore) -> None:
    closes = 100 * np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.01, 1200)))
    spike_at = 1200 - 40  # a tenfold spike inside the scored origins
    closes[spike_at] *= 10
    forecast_store.write_candles(SYM, "1h", _candles(closes))
    PeekProbe.seen.clear()
    ev = evaluate_series(forecast_store, short_settings, SYM, "1h", [NAIVE, ModelSpec(name="peek_probe")],
                         n_origins=50, workers=1, now_ms=LATEST)
    assert ev.status == "ok" and len(PeekProbe.seen) >= 50
    assert all(newest < first_target for newest, first_target, _ in PeekProbe.seen)
    spike_ts, spike = add(LATEST, "1h", -40), float(closes[spike_at])
    before = [top for _, first_target, top in PeekProbe.seen if first_target <= spike_ts]
    after = [top for newest, _, top in PeekProbe.seen if newest >= spike_ts]
    assert len(before) >= 40 and max(before) < spike / 2  # no origin before the spike foresaw it
    assert spike in after  # origins just after it were shown it (the probe does see its inputs)


def test_band_calibration_learns_only_from_closed_candles() -> None:
    """Two series equal up to T and different after it give identical bands at origins before T."""
    rng = np.random.default_rng(5)
    n, horizon = 700, 6
    ts = np.array([add(LATEST, "1h", k - n + 1) for k in range(n)], dtype="int64")
    y_a = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    y_b = y_a.copy()
    cut = n - 60
    y_b[cut:] *= np.exp(rng.normal(0, 0.2, n - cut))  # a wild future
    origins = tuple(int(t) for t in ts[200:n - horizon:3])
    plan = Plan(horizon, 3, 168, None, origins, origins, calibration=40)
    anchors = np.searchsorted(ts, origins)
    yhat = np.repeat(y_a[anchors][:, None], horizon, axis=1)  # the same point forecasts for both
    pts_a, _, _ = _calibrate(Calibration({"name": "naive"}, yhat, plan, ts, y_a, "1h"), "naive")
    pts_b, _, _ = _calibrate(Calibration({"name": "naive"}, yhat, plan, ts, y_b, "1h"), "naive")
    past = pts_a["origin"] < ts[cut]
    cols = ["yhat_lower", "yhat_upper", "yhat_lower_50", "yhat_upper_50"]
    pd.testing.assert_frame_equal(pts_a.loc[past, cols], pts_b.loc[past, cols])
    later = pts_a["origin"] >= ts[cut] + 3_600_000 * horizon
    assert not np.allclose(pts_a.loc[later, "yhat_upper"], pts_b.loc[later, "yhat_upper"])


def test_calibrated_coverage_holds_through_a_volatility_break(short_settings: Settings, forecast_store: SQLiteStore) -> None:
    rng = np.random.default_rng(11)
    n = 2400
    sigma = np.where(np.arange(n) < n - 700, 0.004, 0.02)  # a fivefold volatility break
    closes = 100 * np.exp(np.cumsum(rng.normal(0, sigma)))
    forecast_store.write_candles(SYM, "1h", _candles(closes))
    ev = evaluate_series(forecast_store, short_settings, SYM, "1h", [NAIVE], n_origins=200, workers=1, now_ms=LATEST)
    naive = ev.scores["naive"]
    assert ev.status == "ok" and len(ev.origins) == 200
    assert 0.72 <= naive.coverage80 <= 0.88, naive.coverage80
    assert 0.40 <= naive.coverage50 <= 0.60, naive.coverage50
    assert 0.65 <= naive.per_step[0].coverage80 <= 0.92 and 0.65 <= naive.per_step[-1].coverage80 <= 0.92


def test_too_little_data_is_insufficient_not_a_crash(short_settings: Settings, forecast_store: SQLiteStore) -> None:
    empty = evaluate_series(forecast_store, short_settings, SYM, "1h", [NAIVE], now_ms=LATEST)
    assert empty.status == "insufficient_data" and "no stored candles" in empty.message
    forecast_store.write_candles(SYM, "1h", walk_candles("1h", 300, LATEST))
    short = evaluate_series(forecast_store, short_settings, SYM, "1h", [NAIVE, DRIFT], now_ms=LATEST)
    assert short.status == "insufficient_data" and short.scores == {} and "300 candle(s)" in short.message
    not_predicted = evaluate_series(forecast_store, short_settings, SYM, "1m", [NAIVE], now_ms=LATEST)
    assert not_predicted.status == "insufficient_data"
    with pytest.raises(ConfigError):
        evaluate_series(forecast_store, short_settings, SYM, "1h", [NAIVE, NAIVE], now_ms=LATEST)


def test_evaluation_persists_atomically_and_a_corrupt_file_is_named(short_settings: Settings, forecast_store: SQLiteStore) -> None:
    forecast_store.write_candles(SYM, "1h", walk_candles("1h", 1000, LATEST))
    ev = evaluate_series(forecast_store, short_settings, SYM, "1h", [NAIVE], n_origins=20, workers=1, now_ms=LATEST,
                         calibration_origins=20)
    assert load_evaluation(short_settings, SYM, "1h") is None
    path = save_evaluation(short_settings, ev)
    assert path == evaluation_path(short_settings, SYM, "1h") and path.parent.name == "BTC-USDT"
    loaded = load_evaluation(short_settings, SYM, "1h")
    assert loaded is not None and loaded.scores == ev.scores and loaded.origins == ev.origins
    assert [p.name for p in path.parent.iterdir()] == ["1h.json"]  # no temp file left
    raw = path.read_bytes()
    for bad in (raw[: len(raw) // 2], b"\x00\x01", b'{"schema_version": 99}'):
        path.write_bytes(bad)
        with pytest.raises(DataValidationError, match=str(path)):
            load_evaluation(short_settings, SYM, "1h")
        assert path.read_bytes() == bad  # never silently reset


def test_parallel_and_serial_give_the_same_scores(short_settings: Settings, forecast_store: SQLiteStore) -> None:
    forecast_store.write_candles(SYM, "1h", walk_candles("1h", 1100, LATEST, seed=13))
    specs = [NAIVE, DRIFT, ETS]
    kwargs = {"n_origins": 30, "calibration_origins": 30, "now_ms": LATEST}
    serial = evaluate_series(forecast_store, short_settings, SYM, "1h", specs, workers=1, **kwargs)  # type: ignore[arg-type]
    parallel = evaluate_series(forecast_store, short_settings, SYM, "1h", specs, workers=2, **kwargs)  # type: ignore[arg-type]
    assert serial.calibration_origins == 30
    assert serial.workers == 1 and parallel.workers == 2
    assert parallel.scores == serial.scores and parallel.origins == serial.origins
    assert {k: v.model_dump() for k, v in parallel.bands.items()} == {k: v.model_dump() for k, v in serial.bands.items()}


@pytest.mark.parametrize("spec", [NAIVE, ETS, ModelSpec(name="prophet", params={"daily_seasonality": True})])
def test_predict_many_equals_one_predict_per_origin(spec: ModelSpec) -> None:
    """The evaluation's batched predictions are exactly what production's predict returns."""
    from coin_core.forecast import make_model
    from tests.fixtures.forecast_fixtures import walk_history

    history = walk_history("1h", 400, LATEST)
    model = make_model(spec).fit(history.iloc[:300])
    requests = []
    for end in (300, 320, 333, 400):
        recent = history.iloc[end - 8:end]
        requests.append(([add(int(recent["ts"].iloc[-1]), "1h", k) for k in range(1, 7)], recent))
    for batched, (targets, recent) in zip(model.predict_many(requests), requests):
        pd.testing.assert_frame_equal(batched, model.predict(targets, recent=recent), rtol=1e-9)


def test_evaluate_command_prints_a_line_per_model(eval_env: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "--symbols", "BTC/USDT", "--origins", "50", "--workers", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all(line.startswith("series=BTC/USDT 1h") for line in lines)
    assert any("model=naive" in line and "mase=1.0" in line for line in lines)
    assert main(["evaluate", "--symbols", "ETH/USDT", "--origins", "50"]) == 1  # insufficient, no crash
    assert "status=insufficient_data" in capsys.readouterr().out
    with pytest.raises(SystemExit) as bad:  # argparse refuses it before anything runs
        main(["evaluate", "--symbols", "BTC/USDT", "--origins", "0"])
    assert bad.value.code == 2 and "--origins" in capsys.readouterr().err


def test_several_series_share_one_pool_and_match_one_at_a_time(short_settings: Settings, forecast_store: SQLiteStore) -> None:
    """The whole evaluation of several series in one pool gives what each series alone gives."""
    other = "ETH/USDT"
    forecast_store.write_candles(SYM, "1h", walk_candles("1h", 1100, LATEST, seed=13))
    forecast_store.write_candles(other, "1h", walk_candles("1h", 1100, LATEST, seed=17))
    specs = [NAIVE, DRIFT, ETS]
    kwargs: dict[str, Any] = {"n_origins": 30, "calibration_origins": 30, "now_ms": LATEST}
    series = [(SYM, "1h"), (other, "1h"), (SYM, "1d")]  # 1d: no candles stored, reported as such
    pooled = evaluate_many(forecast_store, short_settings, series, lambda tf: specs, workers=2, **kwargs)
    assert [(e.symbol, e.status) for e in pooled] == [(SYM, "ok"), (other, "ok"), (SYM, "insufficient_data")]
    for ev in pooled[:2]:
        alone = evaluate_series(forecast_store, short_settings, ev.symbol, "1h", specs, workers=1, **kwargs)
        assert ev.scores == alone.scores and ev.origins == alone.origins
        assert {k: v.model_dump() for k, v in ev.bands.items()} == {k: v.model_dump() for k, v in alone.bands.items()}
    assert pooled[0].scores != pooled[1].scores  # two different markets, not one result copied


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_pool_workers_run_one_blas_thread_each() -> None:
    # Two workers on two cores: a BLAS pool of two threads in each oversubscribes the machine
    # (OpenBLAS threads spin while they wait) and made ETS fits 2.1x slower.
    from coin_core.workers import process_pool

    with process_pool(2) as pool:
        per_worker = [pool.submit(_blas_threads).result() for _ in range(2)]
    assert all(threads and set(threads) == {1} for threads in per_worker), per_worker
