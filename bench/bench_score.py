"""The cycle's score step in steady state: what reading a horizon of stored runs costs, as JSON.

    .venv/bin/python bench/bench_score.py                  # 50 series x 26 cycles x 4 models, 1h
    .venv/bin/python bench/bench_score.py --series 500

Every cycle the score step re-reads each series' runs of the last horizon + 2 candles (every
model: champion, challengers, both baselines), because each of them has one target that just
closed. Setup (not timed): a SQLite store with ``--cycles`` hourly candles and, per cycle, one
24-point run of each of 4 models per series; the score book is brought up to date once.

Timed, side by side in one process, alternating, best of ``--repeats``:

1. ``read_forecasts`` (a pandas frame per run: what scoring read before) against
   ``read_forecast_columns`` (plain columns: what it reads now), over every series;
2. ``score_all`` after one more candle has closed for every series (the steady-state step).
"""

from __future__ import annotations

import argparse
import json
import os
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
from coin_core.lifecycle import open_scorebook, score_all  # noqa: E402
from coin_core.storage.base import Forecast  # noqa: E402
from coin_core.storage.sqlite import SQLiteStore  # noqa: E402

HOUR = 3_600_000
T0 = 1_735_689_600_000  # 2025-01-01 00:00 UTC
MODELS = (("champion", "prophet"), ("challenger", "ets"), ("baseline", "naive"), ("baseline", "drift"))


def _fill(store: SQLiteStore, symbols: list[str], cycles: int, horizon: int) -> int:
    """Candles of ``cycles`` + 1 hours and one run per model per cycle; the last candle's open time."""
    rng = np.random.default_rng(7)
    ts = T0 + np.arange(cycles + 1, dtype="int64") * HOUR
    for symbol in symbols:
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(ts))))
        store.write_candles(symbol, "1h", pd.DataFrame({"ts": ts, "open": close, "high": close * 1.01,
                                                        "low": close * 0.99, "close": close, "volume": 1.0}))
        for k in range(cycles):
            targets = ts[k] + np.arange(1, horizon + 1, dtype="int64") * HOUR
            for role, model in MODELS:
                yhat = np.full(horizon, close[k])
                points = pd.DataFrame({"ts": targets, "yhat": yhat, "yhat_lower": yhat * 0.98, "yhat_upper": yhat * 1.02,
                                       "yhat_lower_50": yhat * 0.99, "yhat_upper_50": yhat * 1.01})
                store.write_forecast(Forecast(symbol, "1h", int(ts[k] + HOUR + 60_000), f"{model}-bench-{k}",
                                              int(ts[k]), points, role, model))  # type: ignore[arg-type]
    return int(ts[-1])


def _best(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=26, help="stored hourly cycles (horizon 24 + 2 by default)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    symbols = [f"S{i:03d}/USDT" for i in range(args.series)]
    with tempfile.TemporaryDirectory(prefix="coin-bench-score-") as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data", public_dir=Path(tmp) / "public", target_symbols=symbols)
        horizon = settings.policy("1h").horizon
        store = SQLiteStore(Path(tmp) / "c.db")
        latest = _fill(store, symbols, args.cycles, horizon)
        since = latest - (horizon + 2) * HOUR
        frames = lambda: [store.read_forecasts(s, "1h", issued_from=since) for s in symbols]  # noqa: E731
        plain = lambda: [store.read_forecast_columns(s, "1h", issued_from=since) for s in symbols]  # noqa: E731
        runs = sum(len(r) for r in plain())
        timing = {"read_forecasts_s": [], "read_forecast_columns_s": []}
        for _ in range(args.repeats):
            timing["read_forecasts_s"].append(_best(frames, 1))
            timing["read_forecast_columns_s"].append(_best(plain, 1))
        with open_scorebook(settings) as book:
            score_all(store, settings, book, latest + HOUR)  # brings the book up to date (not timed)
            close = store.read_candles(symbols[0], "1h")["close"].iloc[-1]
            for s in symbols:  # one more closed candle per series: the next cycle's work
                store.write_candles(s, "1h", pd.DataFrame({"ts": [latest + HOUR], "open": [close], "high": [close],
                                                           "low": [close], "close": [close], "volume": [1.0]}))
            started = time.perf_counter()
            steps = score_all(store, settings, book, latest + 2 * HOUR)
            step_s = time.perf_counter() - started
        store.close()
    frames_s, plain_s = min(timing["read_forecasts_s"]), min(timing["read_forecast_columns_s"])
    print(json.dumps({
        "bench": "score-step", "series": args.series, "runs_read_per_cycle": runs, "horizon": horizon,
        "read_forecasts_s": round(frames_s, 3), "read_forecast_columns_s": round(plain_s, 3),
        "reader_ratio": round(frames_s / plain_s, 2),
        "score_step_s": round(step_s, 3), "points_scored": sum(s.scored for s in steps.values()),
        "errors": [s.error for s in steps.values() if s.error][:3], "loadavg": [round(x, 2) for x in os.getloadavg()],
    }, indent=1))


if __name__ == "__main__":
    main()
