"""Prophet beside the naive and drift baselines on real Binance candles: speed, accuracy, memory.

Run:  .venv/bin/python bench/bench_models.py [--candles-1h 8760] [--origins 4]
Prints one JSON document. Speed and accuracy are measured side by side in one run on the same
series; memory is measured on real ``train_series`` runs against a SQLite store filled from the
CSV (tracemalloc = Python heap during the run; maxrss = the whole bench process).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from coin_core.config import load_settings  # noqa: E402
from coin_core.forecast import ModelSpec, make_model, shared_spec, train_series  # noqa: E402
from coin_core.forecast.base import library_versions  # noqa: E402
from coin_core.storage.sqlite import SQLiteStore  # noqa: E402
from coin_core.timeframes import Timeframe, add  # noqa: E402

MARKET = REPO.parent / "shared" / "data" / "market"
SPECS = {"naive": lambda tf: ModelSpec(name="naive"), "drift": lambda tf: ModelSpec(name="drift"), "prophet": shared_spec}
#: Production predicts from a champion up to a week older than the latest candle (weekly train):
#: these variants fit one week before the origin and predict from the origin's latest candle,
#: with and without the level correction (``recent=``).
WEEK_OLD = {"prophet_week_old_fit": True, "prophet_week_old_fit_unanchored": False}
LAG = {"1h": 168, "1d": 7}


def load_csv(tf: Timeframe, last: int | None) -> pd.DataFrame:
    frame = pd.read_csv(MARKET / f"binance_BTC-USDT_{tf}.csv").rename(columns={"timestamp_ms": "ts"})
    frame = frame.astype({"ts": "int64"}).sort_values("ts").reset_index(drop=True)
    return frame.tail(last).reset_index(drop=True) if last else frame


def speed_and_accuracy(tf: Timeframe, candles: pd.DataFrame, horizon: int, origins: int) -> dict[str, Any]:
    """Fit at ``origins`` rolling cut-offs; score each model on the next ``horizon`` candles."""
    hist = candles[["ts", "close"]].rename(columns={"close": "y"})
    report: dict[str, Any] = {"timeframe": tf, "rows_per_fit": None, "horizon": horizon, "origins": origins, "models": {}}
    variants = {**{n: (f, 0, True) for n, f in SPECS.items()},
                **{n: (shared_spec, LAG.get(tf, 0), anchored) for n, anchored in WEEK_OLD.items()}}
    for name, (spec_of, lag, anchored) in variants.items():
        fits, preds, abs_err, pct_err, cover = [], [], [], [], []
        for k in range(origins, 0, -1):
            cut = len(hist) - k * horizon
            train, test = hist.iloc[:cut], hist.iloc[cut:cut + horizon]
            # targets are the boundary-aligned next candles after the cut, as in production
            targets = [add(int(train["ts"].iloc[-1]), tf, i) for i in range(1, horizon + 1)]
            started = time.perf_counter()
            model = make_model(spec_of(tf)).fit(train.iloc[:len(train) - lag])
            fits.append(time.perf_counter() - started)
            started = time.perf_counter()
            out = model.predict(targets, recent=train.tail(8) if anchored else None)
            preds.append(time.perf_counter() - started)
            merged = out.merge(test, on="ts", how="inner")  # real exchange gaps: score what exists
            err = (merged["yhat"] - merged["y"]).abs()
            abs_err += err.tolist()
            pct_err += (err / merged["y"]).tolist()
            cover += ((merged["y"] >= merged["yhat_lower"]) & (merged["y"] <= merged["yhat_upper"])).tolist()
            report["rows_per_fit"] = len(train)
        report["models"][name] = {
            "fit_s_median": round(float(np.median(fits)), 4), "predict_s_median": round(float(np.median(preds)), 4),
            "mae": round(float(np.mean(abs_err)), 2), "mape_pct": round(100 * float(np.mean(pct_err)), 3),
            "interval80_coverage_pct": round(100 * float(np.mean(cover)), 1), "scored_points": len(abs_err),
        }
    return report


def memory_of_training(tf: Timeframe, candles: pd.DataFrame, spec: ModelSpec, lookback: int | None) -> dict[str, Any]:
    """Peak Python heap during a real train_series run (chunked reads from SQLite)."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data", public_dir=Path(tmp) / "public")
        store = SQLiteStore(Path(tmp) / "c.db")
        for start in range(0, len(candles), 10_000):
            store.write_candles("BTC/USDT", tf, candles.iloc[start:start + 10_000])
        tracemalloc.start()
        started = time.perf_counter()
        result = train_series(store, settings, "BTC/USDT", tf, spec=spec, lookback=lookback)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        store.close()
    return {"timeframe": tf, "model": spec.name, "stored_rows": len(candles), "lookback": lookback,
            "rows_fitted": result.row_count, "train_s_traced": round(elapsed, 3),
            "python_heap_peak_mib": round(peak / 2**20, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--candles-1h", type=int, default=8760)
    parser.add_argument("--origins", type=int, default=4)
    args = parser.parse_args()
    settings = load_settings()
    h1, d1 = load_csv("1h", args.candles_1h + args.origins * 24), load_csv("1d", None)
    runs = [speed_and_accuracy("1h", h1, settings.policy("1h").horizon, args.origins),
            speed_and_accuracy("1d", d1, settings.policy("1d").horizon, args.origins)]
    full_1h = load_csv("1h", None)
    memory = [memory_of_training("1h", full_1h, ModelSpec(name="naive"), None),
              memory_of_training("1h", full_1h, shared_spec("1h"), args.candles_1h)]
    print(json.dumps({
        "bench": "models", "data": "binance BTC/USDT 1h (last N) and 1d (full), real gaps kept",
        "machine": {"python": platform.python_version(), "cpus": len(__import__("os").sched_getaffinity(0))},
        "libraries": library_versions(), "speed_accuracy": runs, "training_memory": memory,
        # Whole bench process; CmdStan optimises in a child process not counted here.
        "maxrss_self_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }, indent=2))


if __name__ == "__main__":
    main()
