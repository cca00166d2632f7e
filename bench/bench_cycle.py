"""Cycle latency (boundary -> published site) for 1, 10, 50 and 500 symbols on 1h, as JSON.

    .venv/bin/python bench/bench_cycle.py                    # 1, 10, 50, 500 symbols, 6 cycles each, 100 ms RTT
    .venv/bin/python bench/bench_cycle.py --symbols 10 --cycles 12 --latency-ms 0

Each size runs in fresh processes against the simulated exchange (in its own process, so it
shares neither the GIL nor the RSS of the measured one; frozen clock, so every cycle has
exactly one new closed candle per series; ``--latency-ms`` added to every answer):

1. setup: backfill 30 days of 1h candles per symbol (not measured);
2. train: fit the champion (Prophet) of every series — seconds and peak RSS of the process;
3. cycle: move the clock to the next boundary, then ingest -> forecast -> publish
   (``run_cycle``, the same chain as the Prefect cycle flow, with the exchange's market list
   loaded once per process as the flow's cached ``exchange-markets`` task serves it) — latency
   p50/p95 over the cycles, peak RSS of the process, of its largest worker process and of both
   together, and per cycle how many series publish took as rendered while the units ran.

``--flow`` measures the operator's path instead: each cycle is the Prefect ``cycle`` flow run
against a real ``prefect server`` (``PREFECT_API_URL`` must point at one), the same chain plus
the orchestration (task runs, the ``cycle`` concurrency slot, artifacts, the run record).
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


def _settings(n: int, workdir: Path, url: str, lookback_days: int):
    from coin_core.config import load_settings

    symbols = [f"C{i:03d}/USDT" for i in range(n)]
    return load_settings(target_symbols=symbols, exchange_api_url=url, data_dir=workdir / "data",
                         public_dir=workdir / "public", timeframe_policy={"1h": {"lookback_days": lookback_days}})


def _flow_cycle(n: int, workdir: Path, url: str, lookback_days: int):
    """A callable running one Prefect ``cycle`` flow with this size's environment."""
    symbols = [f"C{i:03d}/USDT" for i in range(n)]
    os.environ.update({"DATA_DIR": str(workdir / "data"), "PUBLIC_DIR": str(workdir / "public"), "STORE": "sqlite",
                       "EXCHANGE_API_URL": url, "TARGET_SYMBOLS": ",".join(symbols),
                       "TIMEFRAME_POLICY": json.dumps({"1h": {"lookback_days": lookback_days}})})
    from flows.cycle import cycle_flow

    def run(now_ms: int) -> tuple[float, int]:
        state = cycle_flow(return_state=True)
        assert state.is_completed(), state.message
        # the flow's step times are in its run record, not measured here; series rendered early
        return 0.0, state.result()["publish"].early
    return run


def _children(pid: int) -> list[int]:
    """Child pids from /proc (psutil's children() scans every process: the sampler's own CPU
    counted against the measured cycle)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _rss_of(pid: int) -> float:
    """Resident MiB of ``pid`` (0 once it has exited)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


class _WorkerRss:
    """Peak RSS of the worker processes (children of the fork server), sampled every 0.1 s, and
    the peak of parent + workers together (PSS would split their shared pages; RSS counts them
    in each, so the sum is an upper bound)."""

    def __init__(self) -> None:
        import threading

        self.worker_peak_mib = self.total_peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from multiprocessing import forkserver

        while not self._stop.wait(0.1):
            pid = getattr(forkserver._forkserver, "_forkserver_pid", None)
            rss = [_rss_of(kid) for kid in _children(pid)] if pid else []
            self.worker_peak_mib = max(self.worker_peak_mib, max(rss, default=0.0))
            self.total_peak_mib = max(self.total_peak_mib, _rss_of(os.getpid()) + sum(rss))

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"workers_peak_rss_mib": round(self.worker_peak_mib, 1),
                "parent_plus_workers_peak_rss_mib": round(self.total_peak_mib, 1)}


def _boot_workers(settings) -> float | None:
    """Start the worker processes' fork server as the process starts (like its imports, this is
    not part of a cycle here; a flow run starts it first thing): seconds until a worker answered."""
    from coin_core.workers import Workers, pool_size

    if pool_size(settings.cpu_workers, len(settings.series())) < 2:
        return None
    t0 = time.perf_counter()
    with Workers(2) as workers:
        workers.call(os.getpid)
    return round(time.perf_counter() - t0, 3)


def _markets(settings) -> dict:
    """The market snapshot, loaded once per process: the flow's cycles take it from their cached
    ``exchange-markets`` task (``MARKETS_TTL``), not from a request per cycle."""
    from coin_core.exchange import ExchangeClient

    with ExchangeClient(settings) as client:
        return client.market_snapshot(settings.target_symbols)


def child(phase: str, n: int, workdir: Path, cycles: int, latency_s: float, lookback_days: int, flow: bool = False) -> dict:
    from bench.simproc import SimProcess
    from coin_core.ingest import run_ingest
    from coin_core.pipeline import run_cycle, run_train

    symbols = [f"C{i:03d}/USDT" for i in range(n)]
    with SimProcess(symbols, start_s=T0_S, latency_s=latency_s if phase == "cycle" else 0.0) as sim:
        settings = _settings(n, workdir, sim.base_url, lookback_days)
        if phase == "setup":
            report = run_ingest(settings, now_ms=T0_S * 1000)
            return {"candles": report.new_candles}
        if phase == "train":
            t0 = time.perf_counter()
            run_train(settings)
            return {"train_seconds": round(time.perf_counter() - t0, 2), "train_peak_rss_mib": _rss_mib()}
        latencies, units, early = [], [], []
        flow_cycle = _flow_cycle(n, workdir, sim.base_url, lookback_days) if flow else None
        boot_s = _boot_workers(settings)
        markets = _markets(settings)
        sampler = _WorkerRss()
        for _ in range(cycles):
            now_ms = sim.call("advance", seconds=3600)
            t0 = time.perf_counter()
            if flow_cycle is not None:
                _, rendered = flow_cycle(now_ms)
                latencies.append(time.perf_counter() - t0)
                early.append(rendered)
                continue
            report = run_cycle(settings, now_ms=now_ms, markets=markets)
            latencies.append(time.perf_counter() - t0)
            units.append(report.units_seconds)
            early.append(report.early_series)
            assert report.ingest.new_candles == n and report.ingest.ok, report
            assert sum(1 for v in report.forecasts.values() if v == "ok") == n, report.forecasts
        site = workdir / "public"
        return {"cycles": cycles, "path": "prefect cycle flow" if flow else "run_cycle", "latency_ms": round(latency_s * 1000), "latency_p50_s": round(statistics.median(latencies), 3),
                "latency_p95_s": round(sorted(latencies)[max(0, int(round(0.95 * len(latencies))) - 1)], 3),
                "latency_max_s": round(max(latencies), 3),
                **({} if flow else {"ingest_forecast_p50_s": round(statistics.median(units), 3),
                                    "publish_p50_s": round(statistics.median(lat - u for lat, u in zip(latencies, units)), 3)}),
                "worker_server_boot_s": boot_s,
                "cycle_peak_rss_mib": _rss_mib(),
                **sampler.stop(),
                "first_cycle_s": round(latencies[0], 3),
                "early_series": early,
                "site_bytes": sum(p.stat().st_size for p in site.rglob("*") if p.is_file())}


def run_size(n: int, cycles: int, latency_ms: int, lookback_days: int, flow: bool = False) -> dict:
    result: dict = {"symbols": n}
    with tempfile.TemporaryDirectory(prefix="coin-bench-cycle-") as workdir:
        for phase in ("setup", "train", "cycle"):
            out = subprocess.run([sys.executable, __file__, "--child", phase, str(n), workdir, str(cycles),
                                  str(latency_ms), str(lookback_days), str(int(flow and phase == "cycle"))],
                                 capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            if out.returncode:
                raise RuntimeError(f"{phase} failed: {out.stderr[-2000:]}")
            result.update(json.loads(out.stdout.strip().splitlines()[-1]))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", default="1,10,50,500")
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--latency-ms", type=int, default=100, help="round trip the exchange adds to every answer")
    parser.add_argument("--lookback-days", type=int, default=30, help="1h history backfilled per symbol")
    parser.add_argument("--flow", action="store_true", help="run the Prefect cycle flow (needs PREFECT_API_URL)")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        phase, n, workdir, cycles, latency_ms, days, flow = args.child
        print(json.dumps(child(phase, int(n), Path(workdir), int(cycles), int(latency_ms) / 1000, int(days), flow == "1")))
        return 0
    if args.flow and not os.environ.get("PREFECT_API_URL"):
        sys.exit("--flow needs PREFECT_API_URL pointing at a running prefect server")
    sizes = [run_size(int(n), args.cycles, args.latency_ms, args.lookback_days, args.flow) for n in args.symbols.split(",")]
    print(json.dumps({"bench": "cycle", "timeframe": "1h", "cpus": os.cpu_count(), "results": sizes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
