"""Cost of the status picture and of one monitor pass, as JSON.

    .venv/bin/python bench/bench_monitor.py                 # 50 series, SQLite, 20 passes
    .venv/bin/python bench/bench_monitor.py --series 500 --passes 5

Seeds ``--series`` 1h series (500 candles and a forecast each) in a fresh SQLite store, records a
week of run metrics (a 5-minute monitor and an hourly cycle: ~2,200 rows), then times
``build_status`` and ``run_monitor`` (no sender) at the same instant, side by side. A pass that
alerts every series (all stale) is timed too: the worst case of the outbox writes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from coin_core import timeframes as tfs  # noqa: E402
from coin_core.config import load_settings  # noqa: E402
from coin_core.health import IngestState, PredictionHealth, write_ingest_state, write_prediction_health  # noqa: E402
from coin_core.metrics import RunRecord, record_run  # noqa: E402
from coin_core.monitor import run_monitor  # noqa: E402
from coin_core.status import build_status  # noqa: E402
from coin_core.storage import open_store  # noqa: E402
from coin_core.storage.base import Forecast  # noqa: E402

H = 3_600_000


def symbols(n: int) -> list[str]:
    return [f"C{i:03d}/USDT" for i in range(n)]


def seed(settings, now_ms: int) -> None:  # noqa: ANN001
    last = tfs.last_closed_open(now_ms, "1h")
    ts = np.arange(last - 499 * H, last + 1, H, dtype="int64")
    close = 100 + np.cumsum(np.random.default_rng(1).normal(0, 1, len(ts)))
    frame = pd.DataFrame({"ts": ts, "open": close, "high": close + 1, "low": close - 1, "close": close, "volume": 1.0})
    points = pd.DataFrame({"ts": [last + (i + 1) * H for i in range(24)], "yhat": 100.0, "yhat_lower": 99.0, "yhat_upper": 101.0})
    with open_store(settings) as store:
        for symbol in settings.target_symbols:
            store.write_candles(symbol, "1h", frame)
            store.write_forecast(Forecast(symbol, "1h", now_ms, "naive@v1", last, points))
            write_ingest_state(settings.data_dir, symbol, "1h", IngestState(backfill_complete_at=now_ms))
            write_prediction_health(settings.data_dir, symbol, "1h", PredictionHealth(status="ok", updated_at=now_ms))
    for k in range(7 * 288):
        record_run(settings.data_dir, RunRecord("monitor", now_ms - k * 300_000, 0.3), now_ms=now_ms)
    for k in range(7 * 24):
        record_run(settings.data_dir, RunRecord("cycle 1h", now_ms - k * H - 60_000, 5.0,
                                                steps={"ingest": 2.0, "forecast": 2.5, "publish": 0.5}), now_ms=now_ms)


def timed(fn, passes: int) -> dict[str, float]:  # noqa: ANN001
    spans = []
    for _ in range(passes):
        began = time.perf_counter()
        fn()
        spans.append(time.perf_counter() - began)
    return {"median_s": round(statistics.median(spans), 4), "max_s": round(max(spans), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=50)
    parser.add_argument("--passes", type=int, default=20)
    args = parser.parse_args()
    now = int(time.time() * 1000)
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data", public_dir=Path(tmp) / "public",
                                 target_symbols=symbols(args.series))
        seed(settings, now)
        result = {
            "series": args.series, "passes": args.passes, "store": "sqlite",
            "build_status": timed(lambda: build_status(settings, now_ms=now), args.passes),
            "monitor_pass_quiet": timed(lambda: run_monitor(settings, now_ms=now, send=None), args.passes),
        }
        began = time.perf_counter()
        report = run_monitor(settings, now_ms=now + 3 * H, send=None)  # every series stale at once
        result["monitor_pass_all_alerting"] = {"seconds": round(time.perf_counter() - began, 4),
                                               "queued": len(report.queued)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
