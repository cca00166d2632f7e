"""Rolling-origin evaluation of every model on real Binance candles, as JSON.

    .venv/bin/python bench/bench_evaluate.py                          # BTC+ETH x 1h+1d, 200 origins
    .venv/bin/python bench/bench_evaluate.py --series BTC/USDT:1d --origins 60 --no-serial

For each series (CSV from ../shared/data/market loaded into a SQLite store, real gaps kept):

1. ``evaluate_many`` over every series at once with the default candidates (naive, drift, the
   Prophet champion spec, ETS) on all cores (one pool: every series' fits, then each model's
   band calibration as soon as its fits are in), then the same call with ``workers=1``: wall
   times side by side, and the scores and band states must be identical;
2. per model: MASE vs naive, WIS (fraction of price), 50 %/80 % coverage overall, at h=1 and at
   h=max, mean 80 % width;
3. the gate's pick: the best (lowest MASE) candidate with MASE <= 1.00 and 80 % coverage in
   75-85 %, else the best baseline; and whether the served model meets every target;
4. peak RSS of a child process evaluating the baselines + ETS on 1h at two history lengths.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from coin_core.config import Settings, load_settings  # noqa: E402
from coin_core.evaluation import SeriesEvaluation, default_workers, evaluate_many, evaluate_series  # noqa: E402
from coin_core.evaluation.specs import BASELINE_SPECS, CHALLENGER_SPECS, candidate_specs  # noqa: E402
from coin_core.storage.sqlite import SQLiteStore  # noqa: E402
from coin_core.symbols import slug  # noqa: E402

# $COIN_PREDICT_SHARED, else ../shared beside the checkout (a worktree under /work/wt/ finds it one level up)
MARKET = Path(os.environ.get("COIN_PREDICT_SHARED") or next(
    (p for p in (REPO.parent / "shared", REPO.parents[1] / "shared") if p.is_dir()), REPO.parent / "shared")) / "data" / "market"
DEFAULT_SERIES = ("BTC/USDT:1h", "ETH/USDT:1h", "BTC/USDT:1d", "ETH/USDT:1d")
BASELINES = {s.name for s in BASELINE_SPECS}
GATE_MASE, GATE_COV80 = 1.0, (0.75, 0.85)


def load_store(store: SQLiteStore, symbol: str, tf: str, last: int | None = None) -> int:
    frame = pd.read_csv(MARKET / f"binance_{slug(symbol)}_{tf}.csv").rename(columns={"timestamp_ms": "ts"})
    frame = frame.tail(last) if last else frame
    for start in range(0, len(frame), 20_000):
        store.write_candles(symbol, tf, frame.iloc[start:start + 20_000])
    return len(frame)


def settings_for(workdir: Path) -> Settings:
    return load_settings(data_dir=workdir / "data", public_dir=workdir / "public",
                         enable_multi_timeframes=True, ingest_timeframes=["1h", "1d"])


def model_table(ev: SeriesEvaluation) -> dict[str, dict[str, Any]]:
    return {name: {
        "mase": round(s.mase, 4), "wis": round(s.wis, 5), "coverage50": round(s.coverage50, 3),
        "coverage80": round(s.coverage80, 3), "coverage50_h1": round(s.per_step[0].coverage50, 3),
        "coverage80_h1": round(s.per_step[0].coverage80, 3), "coverage50_hmax": round(s.per_step[-1].coverage50, 3),
        "coverage80_hmax": round(s.per_step[-1].coverage80, 3), "mase_h1": round(s.per_step[0].mase, 4),
        "mase_hmax": round(s.per_step[-1].mase, 4), "width80": round(s.width80, 4), "points": s.n_points,
        "failed_origins": s.failed_origins,
    } for name, s in ev.scores.items()}


def gate_pick(table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The rule the promotion gate applies, on this evaluation alone."""
    passing = [n for n, r in table.items() if n not in BASELINES and r["mase"] <= GATE_MASE
               and GATE_COV80[0] <= r["coverage80"] <= GATE_COV80[1]]
    pool = passing or [n for n in table if n in BASELINES]
    served = min(pool, key=lambda n: (table[n]["mase"], table[n]["wis"]))
    r = table[served]
    checks = {
        "mase_le_1": r["mase"] <= GATE_MASE,
        "cov80_overall_75_85": GATE_COV80[0] <= r["coverage80"] <= GATE_COV80[1],
        "cov80_h1_75_85": GATE_COV80[0] <= r["coverage80_h1"] <= GATE_COV80[1],
        "cov80_hmax_75_85": GATE_COV80[0] <= r["coverage80_hmax"] <= GATE_COV80[1],
        "cov50_overall_45_55": 0.45 <= r["coverage50"] <= 0.55,
    }
    return {"served": served, "why": "best passing candidate" if passing else "no candidate passed: best baseline",
            "passing_candidates": passing, "checks": checks, "all_pass": all(checks.values())}


def evaluate_all(store: SQLiteStore, settings: Settings, series: list[tuple[str, str]], origins: int,
                 serial: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every series in one ``evaluate_many`` call on all cores, then (``serial``) the same call with
    ``workers=1``: the speed-up of the whole evaluation, and identical scores."""
    workers = default_workers()
    started = time.perf_counter()
    evs = evaluate_many(store, settings, series, candidate_specs, n_origins=origins, workers=workers)
    timing: dict[str, Any] = {"workers": workers, "wall_s_all_cores": round(time.perf_counter() - started, 1),
                              "loadavg_after_all_cores": [round(x, 2) for x in os.getloadavg()]}
    if serial:
        started = time.perf_counter()
        ones = evaluate_many(store, settings, series, candidate_specs, n_origins=origins, workers=1)
        timing["wall_s_one_core"] = round(time.perf_counter() - started, 1)
        timing["loadavg_after_one_core"] = [round(x, 2) for x in os.getloadavg()]
        timing["speedup"] = round(timing["wall_s_one_core"] / timing["wall_s_all_cores"], 2)
        timing["serial_identical"] = all(a.scores == b.scores and a.bands == b.bands for a, b in zip(evs, ones))
    results = []
    for ev in evs:
        out: dict[str, Any] = {"series": f"{ev.symbol} {ev.timeframe}", "status": ev.status, "message": ev.message,
                               "origins": len(ev.origins), "horizon": ev.horizon, "stride": ev.stride,
                               "refit_every": ev.refit_every, "calibration_origins": ev.calibration_origins}
        if ev.status == "ok":
            out["models"] = model_table(ev)
            out["gate"] = gate_pick(out["models"])
        results.append(out)
    return results, timing


def rss_probe(workdir: Path) -> dict[str, Any]:
    """Run in a fresh child on a store filled by the parent: peak RSS of evaluating BTC/USDT 1h.

    The parent loads the store, so the child's high-water mark is imports + evaluation only.
    """
    settings = settings_for(workdir)
    store = SQLiteStore(workdir / "c.db")
    stored = store.count("BTC/USDT", "1h")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ev = evaluate_series(store, settings, "BTC/USDT", "1h", [*BASELINE_SPECS, *CHALLENGER_SPECS], n_origins=50, workers=1)
    store.close()
    return {"stored_rows": stored, "origins": len(ev.origins), "maxrss_before_mib": round(before / 1024, 1),
            "maxrss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def rss_flatness(lengths: list[int]) -> list[dict[str, Any]]:
    results = []
    for rows in lengths:
        with tempfile.TemporaryDirectory() as tmp:
            store = SQLiteStore(Path(tmp) / "c.db")
            load_store(store, "BTC/USDT", "1h", rows)
            store.close()
            proc = subprocess.run([sys.executable, __file__, "--rss-probe", tmp], capture_output=True, text=True, check=True)
        results.append(json.loads(proc.stdout))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", default=",".join(DEFAULT_SERIES), help="SYMBOL:TF, comma-separated")
    parser.add_argument("--origins", type=int, default=200)
    parser.add_argument("--no-serial", action="store_true", help="skip the one-core rerun")
    parser.add_argument("--rss-lengths", default="15000,46981", help="1h history lengths for the RSS probe ('' = skip)")
    parser.add_argument("--rss-probe", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_probe:
        print(json.dumps(rss_probe(args.rss_probe)))
        return
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()
    series = [tuple(item.split(":")) for item in args.series.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp))
        store = SQLiteStore(Path(tmp) / "c.db")
        for symbol, tf in series:
            load_store(store, symbol, tf)
        results, timing = evaluate_all(store, settings, series, args.origins, not args.no_serial)  # type: ignore[arg-type]
        store.close()
    print(json.dumps({
        "bench": "evaluate", "data": "binance candles from ../shared/data/market (real gaps kept)",
        "machine": {"python": platform.python_version(), "cpus": default_workers(),
                    "loadavg_at_start": load_at_start, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "series": results,
        "total": {**timing, "every_served_model_passes": all(r.get("gate", {}).get("all_pass") for r in results)},
        "rss_flatness": rss_flatness([int(x) for x in args.rss_lengths.split(",") if x]),
        "bench_wall_s": round(time.perf_counter() - started, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
