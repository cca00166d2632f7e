"""Band coverage before/after a change of the band method, on the same forecasts, as JSON.

    .venv/bin/python bench/bench_bands.py                                    # default set below
    .venv/bin/python bench/bench_bands.py --series ETH/USDT:1d,BTC/USDT:1d@2021-01-01 --origins 200

Each item is ``SYMBOL:TF`` or ``SYMBOL:TF@YYYY-MM-DD`` (a holdout: only candles before that
day are stored, so the origins fall in a period the method was never looked at on). For each,
every default candidate's point forecasts are computed once (``coin_core.evaluation``'s own fit
tasks, all cores), then the bands are calibrated twice on those same forecasts:

* ``ewma`` -- the previous layer: every step normalised by the recent EWMA sigma alone, one ACI
  step size ``gamma`` for every horizon step;
* ``term`` -- the volatility term structure alone (``bands.band_scale``: step h normalised by the
  path variance reverting from the recent EWMA toward the learned long-run sigma);
* ``term_aci`` -- the current layer: the term structure plus ACI step ``gamma * sqrt(h)``
  (``bands.aci_step``).

Per model: 80 % / 50 % coverage overall, at h=1 and at h=max, 80 % width, MASE; and the
gate's pick under each (the rule of ``bench_evaluate.gate_pick``) with its target checks.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import pandas as pd  # noqa: E402

from bench_evaluate import MARKET, gate_pick, model_table, settings_for  # noqa: E402
from coin_core.evaluation import default_workers, engine  # noqa: E402
from coin_core.evaluation.calibrate import run_calibration  # noqa: E402
from coin_core.evaluation.specs import candidate_specs  # noqa: E402
from coin_core.forecast import bands  # noqa: E402
from coin_core.storage.sqlite import SQLiteStore  # noqa: E402
from coin_core.symbols import slug  # noqa: E402

DEFAULT = ("BTC/USDT:1d", "ETH/USDT:1d", "BTC/USDT:1w", "ETH/USDT:1w",
           "BTC/USDT:1d@2021-01-01", "ETH/USDT:1d@2021-01-01", "BTC/USDT:1d@2020-01-01", "ETH/USDT:1d@2020-01-01",
           "BTC/USDT:1h@2021-01-01", "ETH/USDT:1h@2021-01-01")


def load(store: SQLiteStore, symbol: str, tf: str, before: str | None) -> int:
    frame = pd.read_csv(MARKET / f"binance_{slug(symbol)}_{tf}.csv").rename(columns={"timestamp_ms": "ts"})
    if before:
        frame = frame[frame["ts"] < int(pd.Timestamp(before, tz="UTC").timestamp() * 1000)]
    store.write_candles(symbol, tf, frame)
    return len(frame)


def old_scale(state: bands.BandState, step: int, sigma: float) -> float:
    return sigma


def flat_step(gamma: float, step: int) -> float:
    return gamma


VARIANTS = {"ewma": {"band_scale": old_scale, "aci_step": flat_step}, "term": {"aci_step": flat_step}, "term_aci": {}}


def compare(item: str, origins: int, workers: int, models: list[str] | None) -> dict[str, Any]:
    series, _, before = item.partition("@")
    symbol, tf = series.split(":")
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp))
        settings = settings.model_copy(update={"ingest_timeframes": ["1h", "1d", "1w"]})
        store = SQLiteStore(Path(tmp) / "c.db")
        rows = load(store, symbol, tf, before or None)
        specs = [s for s in candidate_specs(tf) if not models or s.name in models]
        job = engine._prepare(store, settings, symbol, tf, specs, origins, engine.CALIBRATION_ORIGINS, 0)
        store.close()
    out: dict[str, Any] = {"series": item, "candles": rows}
    if not isinstance(job, engine._Job):
        return {**out, "status": job.status, "message": job.message}
    started = time.perf_counter()
    if workers > 1:
        engine._run_pool([job], workers)
    else:
        engine._run_serial([job])
    out["fit_wall_s"] = round(time.perf_counter() - started, 1)
    for label, patches in VARIANTS.items():
        with mock.patch.multiple(bands, **patches) if patches else mock.patch.object(bands, "WINDOW", bands.WINDOW):
            job.done = {s.name: run_calibration(job.calibration(s.name)) for s in job.specs}
        ev = engine._result(job, 0, 0.0, workers)
        table = model_table(ev)
        out.update(origins=len(ev.origins), horizon=ev.horizon, first_scored=pd.Timestamp(ev.origins[0], unit="ms").isoformat())
        out[label] = {"gate": gate_pick(table) if "naive" in table else None, "models": {n: {k: r[k] for k in (
            "coverage80", "coverage80_h1", "coverage80_hmax", "coverage50", "coverage50_h1", "coverage50_hmax",
            "width80", "wis", "mase")} for n, r in table.items()}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", default=",".join(DEFAULT), help="SYMBOL:TF[@YYYY-MM-DD], comma-separated")
    parser.add_argument("--origins", type=int, default=200)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--models", default="", help="only these candidates, comma-separated (default: all)")
    args = parser.parse_args()
    results = []
    for item in args.series.split(","):
        results.append(compare(item, args.origins, args.workers, [m for m in args.models.split(",") if m] or None))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"bench": "bands", "loadavg_at_end": [round(x, 2) for x in os.getloadavg()], "series": results}, indent=1))


if __name__ == "__main__":
    main()
