"""Raw write (and paged read) throughput of a candle store, printed as JSON.

    .venv/bin/python bench/bench_store_write.py --store sqlite --n 200000
    .venv/bin/python bench/bench_store_write.py --store influxdb --n 200000   # starts its own influxd
    .venv/bin/python bench/bench_store_write.py --store influxdb --influx-url http://127.0.0.1:8086

Other benchmarks import :func:`raw_write_throughput` (``from bench.bench_store_write import ...``
from the repository root). The influxd process manager is ``tests.fixtures.influx.InfluxdServer``,
the same one the test suite uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from coin_core.storage import CandleStore  # noqa: E402

__all__ = ["synthetic_candles", "raw_write_throughput", "raw_read_throughput", "main"]

START = 1_577_836_800_000  # 2020-01-01 00:00 UTC
MINUTE = 60_000


def synthetic_candles(n: int, start: int = START, seed: int = 0) -> pd.DataFrame:
    """``n`` valid consecutive 1m candles (a random walk), the shape a backfill writes."""
    rng = np.random.default_rng(seed)
    close = 30_000 + np.cumsum(rng.normal(0, 5, n))
    open_ = np.concatenate([[close[0]], close[:-1]])
    spread = rng.random(n) * 3
    return pd.DataFrame({
        "ts": start + np.arange(n, dtype="int64") * MINUTE, "open": open_,
        "high": np.maximum(open_, close) + spread, "low": np.minimum(open_, close) - spread,
        "close": close, "volume": rng.random(n) * 50,
    })


def raw_write_throughput(store: CandleStore, n: int, page: int = 10_000, symbol: str = "BENCH/USDT") -> dict:
    """Write ``n`` fresh 1m candles in ``page``-sized calls (as backfill does) and time it.

    Validation, budget guard and the backend's own batching are all included; candle
    generation is not. Verifies the count afterwards so a lossy store cannot look fast.
    """
    frame = synthetic_candles(n)
    t0 = time.perf_counter()
    for lo in range(0, n, page):
        store.write_candles(symbol, "1m", frame.iloc[lo:lo + page])
    seconds = time.perf_counter() - t0
    stored = store.count(symbol, "1m")
    if stored != n:
        raise RuntimeError(f"{store.name}: wrote {n} candles but {stored} are stored")
    return {"store": store.name, "n": n, "page": page, "seconds": round(seconds, 3),
            "candles_per_s": round(n / seconds, 1)}


def raw_read_throughput(store: CandleStore, symbol: str = "BENCH/USDT", chunk_size: int = 10_000) -> dict:
    """Read a series back in bounded pages (as training extraction does) and time it."""
    t0 = time.perf_counter()
    rows = sum(len(p) for p in store.iter_candles(symbol, "1m", chunk_size=chunk_size))
    seconds = time.perf_counter() - t0
    return {"n": rows, "chunk_size": chunk_size, "seconds": round(seconds, 3),
            "candles_per_s": round(rows / seconds, 1) if seconds else None}


def _open(args: argparse.Namespace, stack: ExitStack) -> CandleStore:
    workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coin-bench-")))
    if args.store == "sqlite":
        from coin_core.storage.sqlite import SQLiteStore

        store: CandleStore = SQLiteStore(workdir / "candles.sqlite3")
    else:
        from coin_core.storage.influx import InfluxStore

        url = args.influx_url
        if url is None:
            from tests.fixtures.influx import InfluxdServer, find_influxd

            binary = find_influxd()
            if binary is None:
                raise SystemExit("influxd not found: install Debian's influxdb or pass --influx-url")
            url = stack.enter_context(InfluxdServer(binary, workdir / "influxd")).url
        store = InfluxStore(url, f"bench_{uuid.uuid4().hex[:12]}", timeout_s=120.0)
    stack.callback(store.close)
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "influxdb"], default="sqlite")
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--page", type=int, default=10_000, help="candles per write_candles call")
    parser.add_argument("--influx-url", default=None, help="use this server instead of starting influxd")
    args = parser.parse_args(argv)
    with ExitStack() as stack:
        store = _open(args, stack)
        result = raw_write_throughput(store, args.n, args.page)
        result["read"] = raw_read_throughput(store)
        result["size_bytes"] = store.size_bytes()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
