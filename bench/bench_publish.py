"""Benchmark publish_site: seconds per run and bytes per file, for 1, 10 and 50 symbols on 1h.

Generated data in a temporary SQLite store (400 candles and a 24-point forecast per symbol).
Three runs per size: ``cold`` (empty public dir: every file written), ``warm`` (nothing changed:
every file compared, none written) and ``cycle`` (one new candle and forecast per symbol, one hour
later: what the hourly flow does). Prints JSON.

    .venv/bin/python bench/bench_publish.py [--sizes 1,10,50] [--candles 400]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from coin_core import timeframes as tfs
from coin_core.config import Settings, load_settings
from coin_core.health import IngestState, PredictionHealth, write_ingest_state, write_prediction_health
from coin_core.publish import PublishReport, publish_site
from coin_core.storage.base import Forecast
from coin_core.storage.sqlite import SQLiteStore

NOW_MS = tfs.from_datetime(pd.Timestamp("2024-05-01 12:10", tz="UTC").to_pydatetime())
H = 3_600_000


def candles(n: int, last_open: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    closes = 100.0 * (1 + seed % 50) * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    opens = np.concatenate([[closes[0]], closes[:-1]])
    spread = np.abs(rng.normal(0, 0.002, n)) * closes
    return pd.DataFrame({
        "ts": np.array([tfs.add(last_open, "1h", i - n + 1) for i in range(n)], dtype="int64"),
        "open": opens, "high": np.maximum(opens, closes) + spread, "low": np.minimum(opens, closes) - spread,
        "close": closes, "volume": rng.uniform(10, 100, n),
    })


def seed(store: SQLiteStore, settings: Settings, symbol: str, n: int, last_open: int, now_ms: int, i: int) -> None:
    frame = candles(n, last_open, i)
    store.write_candles(symbol, "1h", frame)
    close = float(frame["close"].iloc[-1])
    horizon = settings.policy("1h").horizon
    steps = np.arange(1, horizon + 1)
    yhat = close * (1 + 0.001 * steps)
    points = pd.DataFrame({"ts": [tfs.add(last_open, "1h", k) for k in steps], "yhat": yhat,
                           "yhat_lower": yhat * 0.99, "yhat_upper": yhat * 1.01})
    store.write_forecast(Forecast(symbol, "1h", now_ms - 300_000, "prophet-shared-1h@bench", last_open, points))
    write_ingest_state(settings.data_dir, symbol, "1h", IngestState(backfill_complete_at=now_ms - H))
    write_prediction_health(settings.data_dir, symbol, "1h", PredictionHealth(status="ok", updated_at=now_ms))


def mean_size(report: PublishReport, prefix: str, suffix: str) -> int:
    sizes = [v for k, v in report.sizes.items() if k.startswith(prefix) and k.endswith(suffix)]
    return int(statistics.mean(sizes)) if sizes else 0


def run(n_symbols: int, n_candles: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        root = Path(tmp)
        symbols = [f"C{i:03d}/USDT" for i in range(n_symbols)]
        settings = load_settings(data_dir=root / "data", public_dir=root / "public", target_symbols=symbols)
        store = SQLiteStore(root / "data" / "candles.sqlite3")
        last_open = tfs.last_closed_open(NOW_MS, "1h")
        for i, symbol in enumerate(symbols):
            seed(store, settings, symbol, n_candles, last_open, NOW_MS, i)
        cold = publish_site(store, settings, now_ms=NOW_MS)
        warm = publish_site(store, settings, now_ms=NOW_MS)
        for i, symbol in enumerate(symbols):
            seed(store, settings, symbol, n_candles + 1, last_open + H, NOW_MS + H, i)
        cycle = publish_site(store, settings, now_ms=NOW_MS + H)
        store.close()
    series_pages = [k for k in cold.sizes if k.endswith("_1h.html")]
    return {
        "symbols": n_symbols,
        "files": len(cold.sizes),
        "seconds": {"cold": round(cold.duration_s, 3), "warm": round(warm.duration_s, 3),
                    "cycle": round(cycle.duration_s, 3)},
        "written": {"cold": len(cold.written), "warm": len(warm.written), "cycle": len(cycle.written)},
        "bytes_written": {"cold": cold.bytes_written, "warm": warm.bytes_written, "cycle": cycle.bytes_written},
        "bytes_per_file": {
            "history_json": mean_size(cold, "history_", ".json"),
            "prediction_json": mean_size(cold, "prediction_", ".json"),
            "series_html": int(statistics.mean(cold.sizes[k] for k in series_pages)),
            "index_html": cold.sizes["index.html"],
            "status_html": cold.sizes["status.html"],
            "manifest_json": cold.sizes["manifest.json"],
            "status_json": cold.sizes["status.json"],
        },
        "total_bytes": sum(cold.sizes.values()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50", help="comma-separated symbol counts")
    parser.add_argument("--candles", type=int, default=400, help="stored 1h candles per symbol")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = [run(n, args.candles) for n in sizes]
    json.dump({"benchmark": "publish_site", "timeframe": "1h", "candles_per_symbol": args.candles,
               "results": results}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
