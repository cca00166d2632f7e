"""End-to-end backfill throughput beside the raw write throughput of the same store, as JSON.

    .venv/bin/python bench/bench_backfill.py                      # sqlite and influxdb, 100k 1h candles
    .venv/bin/python bench/bench_backfill.py --stores sqlite --candles 50000
    .venv/bin/python bench/bench_backfill.py --memory-candles 500000   # + peak RSS of a 1m backfill
    .venv/bin/python bench/bench_backfill.py --multi 20 --days 365 --stores sqlite,influxdb   # vs ccxt's throttle
    .venv/bin/python bench/bench_backfill.py --small-page 20 --baseline-root /work/main    # a cycle's one-candle page

``--small-page N``: the client CPU (this thread's CPU time, not waits) of ``ingest_series`` for
one new closed candle of each of N series already stored (SQLite), as a cycle does it; each
round runs in a fresh process, alternating with the same measurement of another checkout's code
(``--baseline-root``, e.g. the main branch) so both figures share the machine's load.

End to end = the simulated exchange on loopback -> the real ccxt.binance client -> validation ->
the store, through ``ingest_series``. The raw figure writes the same number of candles straight
into the same kind of store in the same run, so the ratio (the figure to quote) says how much
of the store's own speed the pipeline keeps, whatever the machine's load. ccxt's request
throttle is set to 1 ms here to measure the pipeline; in production Binance's throttle (~50 ms a
request, 1,000 candles a page) caps a backfill near 20,000 candles/s per process.
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
import uuid
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.bench_store_write import raw_write_throughput  # noqa: E402
from coin_core.config import load_settings  # noqa: E402
from coin_core.exchange import ExchangeClient  # noqa: E402
from coin_core.ingest import ingest_series  # noqa: E402
from coin_core.storage import CandleStore  # noqa: E402

NOW_S = datetime(2025, 7, 1, 0, 30, tzinfo=timezone.utc).timestamp()


def _store(kind: str, workdir: Path, stack: ExitStack, name: str) -> CandleStore:
    if kind == "sqlite":
        from coin_core.storage.sqlite import SQLiteStore

        return stack.enter_context(SQLiteStore(workdir / f"{name}.sqlite3"))
    from coin_core.storage.influx import InfluxStore
    from tests.fixtures.influx import InfluxdServer, find_influxd

    if not hasattr(_store, "influx_url"):
        binary = find_influxd() or sys.exit("influxd not found: install Debian's influxdb")
        server = stack.enter_context(InfluxdServer(binary, workdir / "influxd"))
        _store.influx_url, _store.influx_pid = server.url, server.pid  # type: ignore[attr-defined]
    return stack.enter_context(InfluxStore(_store.influx_url, f"{name}_{uuid.uuid4().hex[:8]}", timeout_s=120))  # type: ignore[attr-defined]


def end_to_end(kind: str, candles: int, sim: "_SimProcess", workdir: Path, stack: ExitStack) -> dict:
    days = candles // 24
    settings = load_settings(exchange_api_url=sim.base_url, data_dir=workdir / "data",
                             timeframe_policy={"1h": {"lookback_days": days}})
    store = _store(kind, workdir, stack, "e2e")
    with ExchangeClient(settings, rate_limit_ms=1) as client:
        t0 = time.perf_counter()
        report = ingest_series(store, client, settings, "BTC/USDT", "1h")
        seconds = time.perf_counter() - t0
    if report.new_candles != days * 24 or report.error:
        raise RuntimeError(f"backfill incomplete: {report}")
    return {"candles": report.new_candles, "seconds": round(seconds, 3),
            "candles_per_s": round(report.new_candles / seconds, 1)}


def compare(kind: str, candles: int, sim: "_SimProcess") -> dict:
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coin-bench-")))
        e2e = end_to_end(kind, candles, sim, workdir, stack)
        raw = raw_write_throughput(_store(kind, workdir, stack, "raw"), e2e["candles"], page=1000)
        if hasattr(_store, "influx_url"):
            del _store.influx_url, _store.influx_pid  # type: ignore[attr-defined]
    return {"store": kind, "end_to_end": e2e, "raw_write": raw,
            "ratio_e2e_over_raw": round(e2e["candles_per_s"] / raw["candles_per_s"], 3)}


def _memory_child(url: str, candles: int, workdir: str) -> None:
    """Runs in a fresh process: backfill ``candles`` 1m candles into SQLite, print peak RSS."""
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    settings = load_settings(exchange_api_url=url, data_dir=Path(workdir),
                             timeframe_policy={"1m": {"lookback_days": candles // 1440 + 1, "retention_days": 3650}})
    from coin_core.storage.sqlite import SQLiteStore

    with SQLiteStore(Path(workdir) / "m.sqlite3") as store, ExchangeClient(settings, rate_limit_ms=1) as client:
        t0 = time.perf_counter()
        report = ingest_series(store, client, settings, "BTC/USDT", "1m")
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"candles": report.new_candles, "seconds": round(seconds, 1),
                      "rss_after_imports_mib": round(baseline / 1024, 1), "peak_rss_mib": round(peak / 1024, 1),
                      "growth_mib": round((peak - baseline) / 1024, 1)}))


def peak_memory(candles: int, sim: "_SimProcess") -> dict:
    with tempfile.TemporaryDirectory(prefix="coin-bench-mem-") as workdir:
        out = subprocess.run([sys.executable, __file__, "--memory-child", sim.base_url, str(candles), workdir],
                             capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    return json.loads(out.stdout.strip().splitlines()[-1])


_SIM_PROCESS = """
import sys, time
from coin_core.exchange_sim import SimClock, SimExchange
now_s, latency_s, symbols, prebuild_days = float(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(","), int(sys.argv[4])
clock = SimClock(); clock.set(now_s)
with SimExchange(symbols, clock=clock, listing_ms=0, latency_s=latency_s) as sim:
    end = int(now_s * 1000)
    for symbol in symbols if prebuild_days else ():
        sim.prebuild(symbol, "1h", end - prebuild_days * 86_400_000 - 3_600_000, end)
    print(sim.base_url, flush=True)
    sys.stdin.read()
"""


class _SimProcess:
    """The simulated exchange in its own process, so it does not share the benchmark's GIL.

    ``prebuild_days`` serialises that much 1h history of every symbol before the URL is
    printed (the exchange then answers from cached rows: never the bottleneck).
    """

    def __init__(self, symbols: tuple[str, ...] = ("BTC/USDT",), latency_s: float = 0.0, prebuild_days: int = 0) -> None:
        self.args = [str(NOW_S), str(latency_s), ",".join(symbols), str(prebuild_days)]

    def __enter__(self) -> "_SimProcess":
        self.proc = subprocess.Popen([sys.executable, "-c", _SIM_PROCESS, *self.args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        self.base_url = self.proc.stdout.readline().strip()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def multi_series(kind: str, n: int, days: int, latency_s: float) -> dict:
    """``n`` series x ``days`` of 1h, backfilled concurrently under ccxt's own Binance throttle."""
    from coin_core.cycle import run_series

    symbols = tuple(f"S{i:02d}/USDT" for i in range(n))
    with _SimProcess(symbols, latency_s, days) as sim, ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="coin-bench-multi-")))
        settings = load_settings(exchange_api_url=sim.base_url, data_dir=workdir / "data", target_symbols=list(symbols),
                                 timeframe_policy={"1h": {"lookback_days": days}})
        store = _store(kind, workdir, stack, "multi")
        influxd = getattr(_store, "influx_pid", None)  # its CPU is part of the store's cost
        t0, cpu0, sim0, srv0 = time.perf_counter(), _cpu_s(), _proc_cpu_s(sim.proc.pid), _proc_cpu_s(influxd)
        run = run_series(store, settings, now_ms=int(NOW_S * 1000), forecast=False)
        seconds, cpu, sim_cpu = time.perf_counter() - t0, _cpu_s() - cpu0, _proc_cpu_s(sim.proc.pid) - sim0
        server_cpu = _proc_cpu_s(influxd) - srv0
        # The store's own speed in the same run: the same number of candles written straight
        # into it (1,000 a call, one thread), so a store slower than the ceiling shows as such.
        raw = raw_write_throughput(_store(kind, workdir, stack, "raw"), n * days * 24, page=1000)
        load = os.getloadavg()
        if hasattr(_store, "influx_url"):
            del _store.influx_url, _store.influx_pid  # type: ignore[attr-defined]
    report = run.ingest
    if not report.ok or report.new_candles != n * days * 24:
        raise RuntimeError(f"multi-series backfill incomplete: {report.new_candles} candles, {[s.error for s in report.series if s.error][:3]}")
    interval_ms = run.throttle_interval_ms  # ccxt's rateLimit x the mean cost of the requests it made
    ceiling_rps = 1000.0 / interval_ms
    per_request = report.new_candles / run.requests
    return {"store": kind, "series": n, "days": days, "latency_ms": round(latency_s * 1000), "workers": settings.exchange_concurrency,
            "candles": report.new_candles, "requests": run.requests, "seconds": round(seconds, 3),
            "requests_per_s": round(run.requests / seconds, 2), "candles_per_s": round(report.new_candles / seconds, 1),
            "throttle_interval_ms": round(interval_ms, 3), "ceiling_requests_per_s": round(ceiling_rps, 2),
            "ceiling_candles_per_s_full_pages": round(ceiling_rps * 1000, 1),
            "ceiling_candles_per_s_these_pages": round(ceiling_rps * per_request, 1),
            "ratio_of_ceiling": round(run.requests / seconds / ceiling_rps, 3),
            "client_cpu_s": round(cpu, 2), "client_cpu_ms_per_request": round(1000 * cpu / run.requests, 2),
            "exchange_cpu_ms_per_request": round(1000 * sim_cpu / run.requests, 2),
            "store_server_cpu_ms_per_request": round(1000 * server_cpu / run.requests, 2) if influxd else None,
            "machine_cores_busy": round((cpu + sim_cpu + server_cpu) / seconds, 2),
            "raw_write_candles_per_s": raw["candles_per_s"],
            "raw_write_over_ceiling": round(raw["candles_per_s"] / (ceiling_rps * per_request), 3),
            "load_average": [round(x, 2) for x in load]}


def _proc_cpu_s(pid: int | None) -> float:
    """CPU seconds of another process so far (Linux /proc; the simulated exchange, influxd)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_s() -> float:
    """CPU seconds of this process (every thread; the exchange and influxd run in others)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_SMALL_PAGE = """
import importlib.util, json, statistics, sys, tempfile, time
from pathlib import Path
spec = importlib.util.spec_from_file_location("bench_simproc", sys.argv[1])
simproc = importlib.util.module_from_spec(spec); spec.loader.exec_module(simproc)
from coin_core.clients import ClientPool
from coin_core.config import load_settings
from coin_core.ingest import ingest_series
from coin_core.storage.sqlite import SQLiteStore
n, rounds, start_s = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
symbols = [f"C{i:03d}/USDT" for i in range(n)]
with tempfile.TemporaryDirectory() as wd, simproc.SimProcess(symbols, start_s=start_s) as sim:
    settings = load_settings(target_symbols=symbols, exchange_api_url=sim.base_url, data_dir=Path(wd) / "data",
                             timeframe_policy={"1h": {"lookback_days": 10}})
    with SQLiteStore(Path(wd) / "s.sqlite3", budget_bytes=settings.storage_budget_bytes) as store, \\
            ClientPool(settings, rate_limit_ms=1) as pool:
        client = pool.client()
        for symbol in symbols:
            ingest_series(store, client, settings, symbol, "1h", now_ms=int(start_s * 1000))
        cpu, wall = [], []
        for _ in range(rounds):
            now = sim.call("advance", seconds=3600)
            for symbol in symbols:
                t, c = time.perf_counter(), time.thread_time()
                report = ingest_series(store, client, settings, symbol, "1h", now_ms=now)
                cpu.append(time.thread_time() - c); wall.append(time.perf_counter() - t)
                assert report.new_candles == 1 and report.error is None, report
print(json.dumps({"cpu": cpu, "wall": wall}))
"""


def _small_page_child(root: Path, n: int, rounds: int) -> dict:
    start_s = 1_735_689_600 + 300  # five minutes after a 1h boundary
    out = subprocess.run([sys.executable, "-c", _SMALL_PAGE, str(REPO / "bench" / "simproc.py"), str(n), str(rounds),
                          str(start_s)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(root)}, cwd=root)  # cwd: `-c` imports from it first
    return json.loads(out.stdout.strip().splitlines()[-1])


def small_page(n: int, rounds: int, repeats: int, baseline: Path | None) -> dict:
    """Client CPU per series of a one-candle ingest, this checkout vs ``baseline``, interleaved."""
    roots = {"this": REPO, **({"baseline": baseline} if baseline else {})}
    samples: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "wall": []} for k in roots}
    for _ in range(repeats):
        for name, root in roots.items():
            got = _small_page_child(root, n, rounds)
            samples[name]["cpu"] += got["cpu"]
            samples[name]["wall"] += got["wall"]
    result: dict = {"series": n, "ingests_per_checkout": n * rounds * repeats, "load_average": os.getloadavg()}
    for name, got in samples.items():
        cpu = sorted(got["cpu"])
        result[name] = {"root": str(roots[name]), "cpu_ms_median": round(1000 * statistics.median(cpu), 2),
                        "cpu_ms_p90": round(1000 * cpu[int(0.9 * (len(cpu) - 1))], 2),
                        "wall_ms_median": round(1000 * statistics.median(got["wall"]), 2)}
    if baseline:
        result["cpu_ratio_this_over_baseline"] = round(result["this"]["cpu_ms_median"] / result["baseline"]["cpu_ms_median"], 3)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", default="sqlite,influxdb")
    parser.add_argument("--candles", type=int, default=100_000, help="1h candles per end-to-end backfill")
    parser.add_argument("--memory-candles", type=int, default=0, help="also measure peak RSS of a 1m backfill")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--multi", type=int, default=0, help="N series backfilled concurrently under ccxt's throttle")
    parser.add_argument("--days", type=int, default=365, help="1h history per series in --multi")
    parser.add_argument("--latency-ms", type=int, default=100, help="round trip the exchange adds in --multi")
    parser.add_argument("--small-page", type=int, default=0, help="N series: client CPU of a one-candle ingest")
    parser.add_argument("--rounds", type=int, default=3, help="new candles per series in --small-page")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per checkout in --small-page")
    parser.add_argument("--baseline-root", type=Path, help="another checkout measured interleaved in --small-page")
    args = parser.parse_args(argv)
    if args.small_page:
        result = small_page(args.small_page, args.rounds, args.repeats, args.baseline_root)
        print(json.dumps({"bench": "ingest-small-page", "cpus": os.cpu_count(), **result}, indent=1))
        return 0
    if args.multi:
        results = [multi_series(kind, args.multi, args.days, args.latency_ms / 1000) for kind in args.stores.split(",")]
        print(json.dumps({"bench": "backfill-multi", "cpus": os.cpu_count(), "results": results}, indent=1))
        return 0
    if args.memory_child:
        _memory_child(args.memory_child[0], int(args.memory_child[1]), args.memory_child[2])
        return 0
    result: dict = {"bench": "backfill", "cpus": os.cpu_count(), "results": []}
    # Pre-serialised rows: the exchange answers from a cache and is not what is measured.
    with _SimProcess(prebuild_days=args.candles // 24 + 1) as sim:
        for kind in args.stores.split(","):
            result["results"].append(compare(kind, args.candles, sim))
        if args.memory_candles:
            result["memory_1m_backfill"] = peak_memory(args.memory_candles, sim)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
