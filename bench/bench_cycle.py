"""Cycle latency (boundary -> published site) for 1, 10 and 50 symbols on 1h, as JSON.

    .venv/bin/python bench/bench_cycle.py                    # 1, 10, 50 symbols, 6 cycles each
    .venv/bin/python bench/bench_cycle.py --symbols 10 --cycles 12

Each size runs in fresh processes against the simulated exchange (in the same process, with a
frozen clock, so every cycle has exactly one new closed candle per series):

1. setup: backfill 30 days of 1h candles per symbol (not measured);
2. train: fit the champion (Prophet) of every series — seconds and peak RSS of the process;
3. cycle: move the clock to the next boundary, then ingest -> forecast -> publish
   (``run_cycle``, the same chain as the Prefect cycle flow) — latency p50/p95 over the
   cycles and peak RSS of the process.
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

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

T0_S = 1_735_689_600 + 300  # 2025-01-01 00:05 UTC: five minutes after a boundary


def _rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _settings(n: int, workdir: Path, url: str):
    from coin_core.config import load_settings

    symbols = [f"C{i:02d}/USDT" for i in range(n)]
    return load_settings(target_symbols=symbols, exchange_api_url=url, data_dir=workdir / "data",
                         public_dir=workdir / "public", timeframe_policy={"1h": {"lookback_days": 30}})


def child(phase: str, n: int, workdir: Path, cycles: int) -> dict:
    from coin_core.exchange_sim import SimClock, SimExchange
    from coin_core.ingest import run_ingest
    from coin_core.pipeline import run_cycle, run_train

    clock = SimClock()
    clock.set(T0_S)
    symbols = [f"C{i:02d}/USDT" for i in range(n)]
    with SimExchange(symbols, clock=clock) as sim:
        settings = _settings(n, workdir, sim.base_url)
        if phase == "setup":
            report = run_ingest(settings, now_ms=clock.now_ms())
            return {"candles": report.new_candles}
        if phase == "train":
            t0 = time.perf_counter()
            run_train(settings)
            return {"train_seconds": round(time.perf_counter() - t0, 2), "train_peak_rss_mib": _rss_mib()}
        latencies = []
        for _ in range(cycles):
            clock.advance(3600)
            t0 = time.perf_counter()
            report = run_cycle(settings, now_ms=clock.now_ms())
            latencies.append(time.perf_counter() - t0)
            assert report.ingest.new_candles == n and report.ingest.ok, report
        site = workdir / "public"
        return {"cycles": cycles, "latency_p50_s": round(statistics.median(latencies), 3),
                "latency_p95_s": round(sorted(latencies)[max(0, int(round(0.95 * len(latencies))) - 1)], 3),
                "latency_max_s": round(max(latencies), 3), "cycle_peak_rss_mib": _rss_mib(),
                "site_bytes": sum(p.stat().st_size for p in site.rglob("*") if p.is_file())}


def run_size(n: int, cycles: int) -> dict:
    result: dict = {"symbols": n}
    with tempfile.TemporaryDirectory(prefix="coin-bench-cycle-") as workdir:
        for phase in ("setup", "train", "cycle"):
            out = subprocess.run([sys.executable, __file__, "--child", phase, str(n), workdir, str(cycles)],
                                 capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            if out.returncode:
                raise RuntimeError(f"{phase} failed: {out.stderr[-2000:]}")
            result.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", default="1,10,50")
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        phase, n, workdir, cycles = args.child
        print(json.dumps(child(phase, int(n), Path(workdir), int(cycles))))
        return 0
    sizes = [run_size(int(n), args.cycles) for n in args.symbols.split(",")]
    print(json.dumps({"bench": "cycle", "timeframe": "1h", "cpus": os.cpu_count(), "results": sizes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
