"""Per-series forecast cost: Prophet's sampled band (before) vs calibrated bands (now), as JSON.

    .venv/bin/python bench/bench_serving.py [--rounds 30]

One Prophet champion fitted on 30 days of real BTC/USDT 1h candles (as in bench_cycle.py). Each
round times, interleaved so that machine load hits both alike:

* before: ``predict`` with ``uncertainty_samples=200`` (the old default; Prophet's own band);
* now: ``predict`` with ``uncertainty_samples=0`` plus ``serve_bands`` (reads the series' band
  state file from disk, estimates volatility from the last 200 closes, applies the bands).

The cycle's other costs (ingest, loading the champion, storing, publishing) are unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from coin_core.config import load_settings  # noqa: E402
from coin_core.forecast import ModelSpec, make_model, shared_spec  # noqa: E402
from coin_core.forecast.bands import BandOutcome, fit_bands, save_band_state, serve_bands  # noqa: E402
from coin_core.timeframes import add  # noqa: E402

MARKET = Path(os.environ.get("COIN_PREDICT_SHARED") or next(
    (p for p in (REPO.parent / "shared", REPO.parents[1] / "shared") if p.is_dir()), REPO.parent / "shared")) / "data" / "market"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    frame = pd.read_csv(MARKET / "binance_BTC-USDT_1h.csv").tail(720 + 200)
    history = frame.rename(columns={"timestamp_ms": "ts", "close": "y"})[["ts", "y"]].reset_index(drop=True)
    params = dict(shared_spec("1h").params)
    sampled = make_model(ModelSpec(name="prophet", params={**params, "uncertainty_samples": 200})).fit(history.tail(720))
    plain = make_model(ModelSpec(name="prophet", params={**params, "uncertainty_samples": 0})).fit(history.tail(720))
    recent, last = history.tail(8), int(history["ts"].iloc[-1])
    targets = [add(last, "1h", k) for k in range(1, 25)]
    rng = np.random.default_rng(0)
    state = fit_bands("prophet", 24, [BandOutcome(s, 100.0, 100.0 * float(np.exp(rng.normal(0, 0.01 * s ** 0.5))), 0.01)
                                      for _ in range(200) for s in range(1, 25)])
    before, now, bands_only = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data", public_dir=Path(tmp) / "public")
        save_band_state(settings, "BTC/USDT", "1h", state)
        closes = history["y"].tail(200).to_numpy()
        for _ in range(args.rounds):
            started = time.perf_counter()
            sampled.predict(targets, recent=recent)
            before.append(time.perf_counter() - started)
            started = time.perf_counter()
            points = plain.predict(targets, recent=recent)
            middle = time.perf_counter()
            serve_bands(settings, "BTC/USDT", "1h", "prophet", points, closes)
            now.append(time.perf_counter() - started)
            bands_only.append(time.perf_counter() - middle)
    med_b, med_n = statistics.median(before), statistics.median(now)
    print(json.dumps({
        "bench": "serving", "rounds": args.rounds, "rows_fitted": 720, "horizon": 24,
        "before_sampled_band_ms_median": round(1000 * med_b, 1), "now_calibrated_band_ms_median": round(1000 * med_n, 1),
        "before_ms_p95": round(1000 * sorted(before)[int(0.95 * (len(before) - 1))], 1),
        "now_ms_p95": round(1000 * sorted(now)[int(0.95 * (len(now) - 1))], 1),
        "of_which_serve_bands_ms_median": round(1000 * statistics.median(bands_only), 1),
        "saving_per_series_ms": round(1000 * (med_b - med_n), 1), "ratio_before_over_now": round(med_b / med_n, 2),
    }, indent=1))


if __name__ == "__main__":
    main()
