"""Soak: the scheduled chain over 7 simulated days with injected faults, as JSON.

    .venv/bin/python bench/bench_soak.py                 # 4 symbols, 7 days
    .venv/bin/python bench/bench_soak.py --days 2 --symbols 2
    .venv/bin/python bench/bench_soak.py --symbols 8      # the cycle's worker processes (CPU_WORKERS) at work

The simulated exchange runs in its own process on a frozen clock that the soak moves, so a
week passes in minutes. Every simulated hour: the clock moves to HH:01, a ``1h`` cycle runs
(``run_cycle``: the per-series unit, then publish — the chain of the Prefect cycle flow, whose
run is recorded for the heartbeat as the flow records it), a monitor pass runs at HH:02 and
another at HH:31 (``run_monitor``, alerts collected by an in-process sender standing in for the
webhook). A train runs once, on day 3. Faults, each 3 h (shorter than the escalation and repeat
intervals, longer than the 75 min stale threshold):

* ``exchange_down``: every klines request answers 503 (all series go stale);
* ``symbol_outage``: the exchange has no candles of one symbol for 3 h (a real-exchange gap);
* ``worker_down``: no cycle runs (all series stale, the cycle heartbeat late).

Checked: RSS growth from the end of day 1 to the end (<= 10 MiB), every series fresh after
every cycle outside a fault (and until the first cycle after it), and the alerts: exactly one
"alert" and one "resolved" per key a fault affects, and nothing else.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.simproc import SimProcess  # noqa: E402

H_MS = 3_600_000
T0_S = 1_735_689_600  # 2025-01-01 00:00 UTC
KLINES = "/api/v3/klines"
FAULTS = {"exchange_down": (30, 33), "symbol_outage": (80, 83), "worker_down": (130, 133)}  # hours after T0


def _rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return round(int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024**2, 1)


def _settings(symbols: list[str], workdir: Path, url: str):
    from coin_core.config import load_settings

    return load_settings(target_symbols=symbols, exchange_api_url=url, data_dir=workdir / "data",
                         public_dir=workdir / "public", exchange_max_retries=1, exchange_timeout_s=5,
                         timeframe_policy={"1h": {"lookback_days": 14}})


def _cycle(settings, now_ms: int) -> None:
    from coin_core.metrics import RunTimer
    from coin_core.pipeline import run_cycle

    timer = RunTimer("cycle 1h", started_at_ms=now_ms)
    report = run_cycle(settings, now_ms=now_ms)
    timer.record(settings.data_dir, "completed" if report.ingest.ok else "failed")


def _in_fault(hour: int, days: int) -> str | None:
    """The fault whose effect covers cycle ``hour`` (its span, and the hour it recovers in)."""
    return next((name for name, (a, b) in FAULTS.items() if a <= hour <= b and b < days * 24), None)


def _inject(sim: SimProcess, hour: int, symbol: str) -> None:
    if hour == FAULTS["exchange_down"][0]:
        sim.call("fault", kind="server_error", count=None, path=KLINES, status=503)
    if hour == FAULTS["exchange_down"][1]:
        sim.call("clear_faults")
    if hour == FAULTS["symbol_outage"][0]:
        start = (T0_S * 1000 + (hour - 1) * H_MS)
        sim.call("missing", symbol=symbol, tf="1h", start_ms=start, end_ms=start + 3 * H_MS - 1)


def soak(symbols: list[str], days: int, workdir: Path) -> dict:
    from coin_core.ingest import run_ingest
    from coin_core.monitor import run_monitor
    from coin_core.pipeline import run_train
    from coin_core.status import build_status

    sent: list = []
    stale_outside: list[str] = []
    rss: dict[str, float] = {}
    with SimProcess(symbols, start_s=T0_S) as sim:
        settings = _settings(symbols, workdir, sim.base_url)
        run_ingest(settings, now_ms=T0_S * 1000)
        run_train(settings)
        _cycle(settings, T0_S * 1000)
        began = time.perf_counter()
        for hour in range(1, days * 24 + 1):
            _inject(sim, hour, symbols[0])
            now = sim.call("advance", seconds=3600)  # HH:00 of the new hour
            down = FAULTS["worker_down"][0] <= hour < FAULTS["worker_down"][1]
            if not down:
                _cycle(settings, now + 60_000)
            if hour == 3 * 24 + 2:
                run_train(settings)
            for minute in (2, 31):
                run_monitor(settings, now_ms=now + minute * 60_000, send=sent.append, sleep=lambda s: None)
            status = build_status(settings, now_ms=now + 2 * 60_000)
            bad = [f"{s.name}={s.status}" for s in status.series if s.status != "fresh"]
            if bad and _in_fault(hour, days) is None:
                stale_outside.append(f"hour {hour}: {', '.join(bad)}")
            if hour == 24:
                rss["after_day_1_mib"] = _rss_mib()
            if hour % 6 == 0:
                print(f"hour {hour}: rss {_rss_mib()} MiB, {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
        rss["end_mib"] = _rss_mib()
    return {"sent": sent, "stale_outside": stale_outside, "rss": rss, "seconds": time.perf_counter() - began}


def _expected(symbols: list[str], days: int) -> Counter:
    keys: Counter = Counter()
    for name, (a, b) in FAULTS.items():
        if b >= days * 24:
            continue
        affected = [symbols[0]] if name == "symbol_outage" else symbols
        for s in affected:
            keys[(f"freshness:{s} 1h", "alert")] += 1
            keys[(f"freshness:{s} 1h", "resolved")] += 1
        if name == "worker_down":
            keys[("heartbeat:cycle 1h", "alert")] += 1
            keys[("heartbeat:cycle 1h", "resolved")] += 1
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=4)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    named = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "ADA/USDT"]  # 8 or more: worker processes
    symbols = (named + [f"S{i:02d}/USDT" for i in range(len(named), args.symbols)])[:args.symbols]
    with tempfile.TemporaryDirectory(prefix="coin-bench-soak-") as workdir:
        out = soak(symbols, args.days, Path(workdir))
    got = Counter((m.key, m.kind) for m in out["sent"])
    expected = _expected(symbols, args.days)
    growth = round(out["rss"]["end_mib"] - out["rss"].get("after_day_1_mib", out["rss"]["end_mib"]), 1)
    result = {
        "bench": "soak", "days": args.days, "symbols": len(symbols), "cycles": args.days * 24 - 2,
        "wall_seconds": round(out["seconds"], 1), "rss": out["rss"], "rss_growth_mib": growth,
        "faults": {k: {"from_hour": a, "to_hour": b} for k, (a, b) in FAULTS.items()},
        "stale_outside_faults": out["stale_outside"][:10],
        "alerts_sent": sorted(f"{kind} {key}" for key, kind in got.elements()),
        "alerts_unexpected": sorted(f"{k[1]} {k[0]} x{n}" for k, n in (got - expected).items()),
        "alerts_missing": sorted(f"{k[1]} {k[0]} x{n}" for k, n in (expected - got).items()),
    }
    result["ok"] = growth <= 10 and not result["stale_outside_faults"] and not result["alerts_unexpected"] \
        and not result["alerts_missing"]
    print(json.dumps(result, indent=1))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
