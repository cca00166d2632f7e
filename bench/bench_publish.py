"""Benchmark publish_site as a cycle runs it: seconds and peak RSS per publish, for 10, 50 and 500 symbols on 1h.

A world made by the real pipeline on generated candles in a temporary SQLite store: per symbol
``--candles`` 1h candles, the champion (naive) and its shadow (drift) registered by the bootstrap
forecast, ``--replay`` hours replayed cycle by cycle (candle -> forecast) and scored, so every
series has a forecast, models, a scored track record and events, as on a live site.

Every publish runs in a fresh process (as a Prefect process worker runs each flow run), timed
from the call to ``publish_site`` (imports excluded), wall and CPU (all threads) seconds, the
latter less sensitive to other load on the machine; ``rss_peak_mib`` is the process's peak RSS
after it, ``rss_before_mib`` before it (interpreter + imports + store open). Per size:

- ``cold``: empty public dir, every file written;
- ``warm``: nothing changed, every file compared, none written;
- ``cycle`` (x ``--cycles``): one hour later, one new candle, a new forecast (champion + shadow)
  and its scoring on every series, then publish: what the hourly flow does.

``--compare DIR`` also runs every publish with the code of another checkout (e.g. ``/work/main``)
on a copy of the same world, interleaved with this checkout's, so the two are measured side by
side under the same machine load. Prints JSON.

    .venv/bin/python bench/bench_publish.py [--sizes 10,50,500] [--cycles 3] [--compare /work/main]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
H = 3_600_000
T0_MS = 1_714_564_800_000 + 600_000  # 2024-05-01 12:10 UTC


def _settings(root: Path, n: int, public: str = "public"):  # type: ignore[no-untyped-def]
    from coin_core.config import load_settings

    symbols = [f"C{i:03d}/USDT" for i in range(n)]
    return load_settings(data_dir=root / "data", public_dir=root / public, target_symbols=symbols)


def _rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child(root: Path, n: int, now_ms: int, public: str) -> dict[str, Any]:
    """One publish in this (fresh) process, as a flow run does it."""
    from coin_core.publish import publish_site
    from coin_core.storage.sqlite import SQLiteStore

    settings = _settings(root, n, public)
    store = SQLiteStore(root / "data" / "candles.sqlite3")
    before = _rss_mib()
    t0, c0 = time.perf_counter(), time.process_time()
    report = publish_site(store, settings, now_ms=now_ms)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    store.close()
    return {"seconds": round(seconds, 4), "cpu_s": round(cpu, 4), "written": len(report.written), "files": len(report.sizes),
            "bytes_written": report.bytes_written, "rss_before_mib": before, "rss_peak_mib": _rss_mib(),
            "series_html_bytes": max((v for k, v in report.sizes.items() if k.endswith("_1h.html")), default=0)}


def _candles(n: int, last_open: int, seed: int):  # type: ignore[no-untyped-def]
    import numpy as np
    import pandas as pd

    from coin_core import timeframes as tfs

    rng = np.random.default_rng(seed)
    closes = 100.0 * (1 + seed % 50) * np.exp(np.cumsum(rng.normal(0, 0.004, n)))
    opens = np.concatenate([[closes[0]], closes[:-1]])
    spread = np.abs(rng.normal(0, 0.002, n)) * closes
    return pd.DataFrame({
        "ts": np.array([tfs.add(last_open, "1h", i - n + 1) for i in range(n)], dtype="int64"),
        "open": opens, "high": np.maximum(opens, closes) + spread, "low": np.minimum(opens, closes) - spread,
        "close": closes, "volume": rng.uniform(10, 100, n),
    })


class World:
    """The store, models and score book of ``n`` series; :meth:`hour` runs one cycle's writes."""

    def __init__(self, root: Path, n: int, n_candles: int, replay: int, extra_hours: int) -> None:
        from coin_core import timeframes as tfs
        from coin_core.storage.sqlite import SQLiteStore

        self.root, self.n = root, n
        self.settings = _settings(root, n)
        self.store = SQLiteStore(root / "data" / "candles.sqlite3")
        self.symbols = list(self.settings.target_symbols)
        self.last_open = tfs.last_closed_open(T0_MS, "1h")
        total = n_candles + replay + extra_hours
        self.frames = {s: _candles(total, self.last_open + (replay + extra_hours) * H, i) for i, s in enumerate(self.symbols)}
        self.first, self.cursor = n_candles, n_candles  # candles written so far, per series
        for symbol in self.symbols:
            self._bootstrap(symbol)
        for _ in range(replay):
            self.hour(score=False)
        self.score()

    @property
    def now_ms(self) -> int:
        return T0_MS + (self.cursor - self.first) * H

    def _bootstrap(self, symbol: str) -> None:
        from coin_core import timeframes as tfs
        from coin_core.forecast import forecast_series
        from coin_core.health import IngestState, write_ingest_state

        frame = self.frames[symbol]
        self.store.write_candles(symbol, "1h", frame.iloc[: self.cursor])
        write_ingest_state(self.settings.data_dir, symbol, "1h", IngestState(backfill_complete_at=T0_MS - H))
        last = int(frame["ts"].iloc[self.cursor - 1])
        forecast_series(self.store, self.settings, symbol, "1h", now_ms=tfs.close_time(last, "1h") + 60_000)

    def hour(self, score: bool = True) -> None:
        """One closed candle, a new forecast (and its scoring) on every series."""
        from coin_core import timeframes as tfs
        from coin_core.forecast import forecast_series

        for symbol in self.symbols:
            row = self.frames[symbol].iloc[[self.cursor]]
            self.store.write_candles(symbol, "1h", row)
            forecast_series(self.store, self.settings, symbol, "1h",
                            now_ms=tfs.close_time(int(row["ts"].iloc[0]), "1h") + 60_000)
        self.cursor += 1
        if score:
            self.score()

    def score(self) -> None:
        from coin_core.lifecycle import open_scorebook, score_series

        with open_scorebook(self.settings) as book:
            for symbol in self.symbols:
                score_series(self.store, self.settings, book, symbol, "1h", now_ms=self.now_ms)


def _publish(code: Path, root: Path, n: int, now_ms: int, public: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(root), "--symbols", str(n),
                          "--now", str(now_ms), "--public", public],
                         env=env, check=True, capture_output=True, text=True, cwd=code)
    return json.loads(out.stdout)


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 4)


def run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    codes = {"this": REPO, **({"compare": Path(args.compare).resolve()} if args.compare else {})}
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        t0 = time.perf_counter()
        world = World(Path(tmp), n, args.candles, args.replay, args.cycles + 1)
        setup_s = time.perf_counter() - t0
        runs: dict[str, dict[str, Any]] = {name: {"cycle": []} for name in codes}
        for name, code in codes.items():
            runs[name]["cold"] = _publish(code, world.root, n, world.now_ms, f"public-{name}")
            runs[name]["warm"] = _publish(code, world.root, n, world.now_ms, f"public-{name}")
        for c in range(args.cycles):
            world.hour()
            order = list(codes.items()) if c % 2 == 0 else list(codes.items())[::-1]
            for name, code in order:
                runs[name]["cycle"].append(_publish(code, world.root, n, world.now_ms, f"public-{name}"))
        world.store.close()
    result: dict[str, Any] = {"symbols": n, "setup_s": round(setup_s, 1), "loadavg": os.getloadavg()}
    for name, r in runs.items():
        cycle = r["cycle"]
        result[name] = {
            "cold_s": r["cold"]["seconds"], "warm_s": r["warm"]["seconds"],
            "cycle_p50_s": _median(cycle, "seconds"), "cycle_max_s": max(x["seconds"] for x in cycle),
            "cycle_ms_per_series": round(_median(cycle, "seconds") / n * 1000, 2),
            "cycle_cpu_p50_s": _median(cycle, "cpu_s"),
            "cycle_cpu_ms_per_series": round(_median(cycle, "cpu_s") / n * 1000, 2),
            "cycle_written": cycle[-1]["written"], "files": r["cold"]["files"],
            "cycle_bytes_written": cycle[-1]["bytes_written"], "series_html_bytes": r["cold"]["series_html_bytes"],
            "rss_before_mib": max(x["rss_before_mib"] for x in cycle),
            "rss_peak_mib": max(x["rss_peak_mib"] for x in [r["cold"], r["warm"], *cycle]),
        }
    if "compare" in result:
        result["cycle_speedup"] = round(result["compare"]["cycle_p50_s"] / result["this"]["cycle_p50_s"], 2)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,50,500", help="comma-separated symbol counts")
    parser.add_argument("--candles", type=int, default=400, help="stored 1h candles per symbol")
    parser.add_argument("--replay", type=int, default=6, help="hours replayed and scored before measuring")
    parser.add_argument("--cycles", type=int, default=3, help="measured cycle publishes per size")
    parser.add_argument("--compare", help="another checkout whose publish runs side by side")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--symbols", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--now", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--public", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        json.dump(child(Path(args.child), args.symbols, args.now, args.public), sys.stdout)
        return 0
    results = [run(int(s), args) for s in args.sizes.split(",") if s.strip()]
    json.dump({"benchmark": "publish_site", "timeframe": "1h", "candles_per_symbol": args.candles,
               "replayed_hours": args.replay, "results": results}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
