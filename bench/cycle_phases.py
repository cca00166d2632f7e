"""Where a cycle's time goes: each phase's start, end, calls and summed seconds, per cycle, as JSON.

    # a prepared world (the same children bench_cycle.py runs: backfill, then train)
    .venv/bin/python bench/bench_cycle.py --child setup 500 /tmp/p500 0 100 10 0
    .venv/bin/python bench/bench_cycle.py --child train 500 /tmp/p500 0 100 10 0
    .venv/bin/python bench/cycle_phases.py 500 /tmp/p500 --cycles 3 --lookback-days 10

Each cycle is ``run_cycle`` as ``bench_cycle.py`` runs it (simulated exchange in its own process,
100 ms on every answer, the market list loaded once, worker processes booted first). Phases are
timed in this (the parent) process by wrapping the functions named in :data:`PHASES`: what runs
in the worker processes (scores, forecasts, early pages) shows only as the time the parent's
phases wait for it. ``[start, end]`` are seconds from the cycle's start; ``sum`` adds every
call's own time (threads overlap, so it can exceed ``end - start``).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.bench_cycle import T0_S, _boot_workers, _markets, _settings  # noqa: E402

#: (module, attribute path, label) of each timed phase.
PHASES = [
    ("coin_core.cycle", "run_series", "units"),
    ("coin_core.publish.site", "build_status", "status_picture"),
    ("coin_core.publish.collect", "collect_one", "publish_reads_series"),
    ("coin_core.publish.staging", "Generation.seal", "seal"),
    ("coin_core.publish.staging", "Generation.flip", "flip"),
]

_SPANS: dict[str, list[tuple[float, float]]] = {}


def _timed(fn: Any, label: str) -> Any:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _SPANS.setdefault(label, []).append((began, time.perf_counter()))
    return call


def _wrap_phases() -> None:
    import importlib

    for module_name, path, label in PHASES:
        owner: Any = importlib.import_module(module_name)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        setattr(owner, name, _timed(getattr(owner, name), label))


def _cycle_row(t0: float, total: float, early: int) -> dict[str, Any]:
    row: dict[str, Any] = {"total_s": round(total, 3), "early_series": early}
    for label, spans in _SPANS.items():
        row[label] = {"start": round(min(a for a, _ in spans) - t0, 3), "end": round(max(b for _, b in spans) - t0, 3),
                      "calls": len(spans), "sum": round(sum(b - a for a, b in spans), 3)}
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("symbols", type=int)
    parser.add_argument("workdir", type=Path, help="a world prepared by bench_cycle.py --child setup/train")
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--lookback-days", type=int, default=30)
    parser.add_argument("--latency-ms", type=int, default=100)
    args = parser.parse_args(argv)
    _wrap_phases()
    from bench.simproc import SimProcess
    from coin_core.pipeline import run_cycle

    symbols = [f"C{i:03d}/USDT" for i in range(args.symbols)]
    with SimProcess(symbols, start_s=T0_S, latency_s=args.latency_ms / 1000) as sim:
        settings = _settings(args.symbols, args.workdir, sim.base_url, args.lookback_days)
        _boot_workers(settings)
        markets = _markets(settings)
        for _ in range(args.cycles):
            now_ms = sim.call("advance", seconds=3600)
            _SPANS.clear()
            t0 = time.perf_counter()
            report = run_cycle(settings, now_ms=now_ms, markets=markets)
            print(json.dumps(_cycle_row(t0, time.perf_counter() - t0, report.early_series)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
