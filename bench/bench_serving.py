"""Per-series forecast CPU of a cycle: champion + every shadow, banded and stored, as JSON.

    .venv/bin/python bench/bench_serving.py [--symbols 10] [--rounds 5] [--repeats 3]
    mkdir /tmp/coin-old && git archive <commit> | tar -x -C /tmp/coin-old && .venv/bin/python bench/bench_serving.py --baseline /tmp/coin-old

Setup (not measured, this checkout's code): ``--symbols`` 1h series of real Binance candles
(BTC/USDT and ETH/USDT from ``shared/data/market``, each series a different 30-day window
re-timed to end at the same candle), each with the four models a series has after ``train``:
naive serving, drift, Prophet (the shared 1h spec) and ETS in the shadow, each with a calibrated
band state of full 200-error windows (what scoring builds up in production).

Measured: ``forecast_series`` (the cycle's forecast step: load every model, predict, band,
store every forecast, health, pruning) per series, CPU time of the process
(``time.process_time``), ``--rounds`` rounds over every series after one warm-up round, in a
fresh process on a fresh copy of the data. With ``--baseline`` the same child runs on that
checkout too, alternating with this one ``--repeats`` times, so machine load hits both alike;
the ratio is of the medians. This checkout's child also splits its CPU by step (wrapped calls).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
MARKET = Path(os.environ.get("COIN_PREDICT_SHARED") or next(
    (p for p in (REPO.parent / "shared", REPO.parents[1] / "shared") if p.is_dir()), REPO.parent / "shared")) / "data" / "market"
ROWS = 720
LATEST = 1_735_689_600_000  # 2025-01-01 00:00 UTC: every series' newest candle
HOUR = 3_600_000


def _settings(workdir: Path, n: int) -> Any:
    from coin_core.config import load_settings

    return load_settings(target_symbols=[f"C{i:03d}/USDT" for i in range(n)], data_dir=workdir / "data",
                         public_dir=workdir / "public", timeframe_policy={"1h": {"lookback_days": 30}})


def _candles(i: int) -> Any:
    import numpy as np
    import pandas as pd

    frame = pd.read_csv(MARKET / f"binance_{('BTC', 'ETH')[i % 2]}-USDT_1h.csv")
    window = frame.iloc[len(frame) - ROWS * (i // 2 + 1): len(frame) - ROWS * (i // 2)].reset_index(drop=True)
    window = window.rename(columns={"timestamp_ms": "ts"})[["ts", "open", "high", "low", "close", "volume"]]
    return window.assign(ts=LATEST - HOUR * np.arange(len(window) - 1, -1, -1, dtype="int64"))


def prepare(workdir: Path, n: int, issues: int) -> None:
    """Candles, the four models, full band states and ``issues`` hourly cycles of forecasts and
    scores of every series (this checkout's code); the newest candle is held back for the score
    measurement (``held.json``)."""
    import numpy as np

    from coin_core.forecast import ModelSpec, shared_spec, train_series
    from coin_core.forecast.bands import BandOutcome, fit_bands, save_band_state
    from coin_core.forecast.predict import ensure_champion, forecast_series
    from coin_core.lifecycle import open_scorebook, score_series
    from coin_core.storage import open_store

    settings = _settings(workdir, n)
    rng = np.random.default_rng(0)
    horizon = settings.policy("1h").horizon
    held = {}
    with open_store(settings) as store, open_scorebook(settings) as book:
        for i, (symbol, tf) in enumerate(settings.series(predicted_only=True)):
            candles = _candles(i)
            store.write_candles(symbol, tf, candles.iloc[: -issues - 1])
            ensure_champion(store, settings, symbol, tf, LATEST + 1)
            for spec in (shared_spec(tf), ModelSpec(name="ets")):
                train_series(store, settings, symbol, tf, spec=spec, now_ms=LATEST + 1)
            for model in ("naive", "drift", "prophet", "ets"):
                outcomes = [BandOutcome(s, 100.0, 100.0 * float(np.exp(rng.normal(0, 0.01 * s ** 0.5))), 0.01)
                            for _ in range(200) for s in range(1, horizon + 1)]
                save_band_state(settings, symbol, tf, fit_bands(model, horizon, outcomes))
            for k in range(issues):  # the hourly cycles before the measured one: score, then forecast
                row = candles.iloc[len(candles) - issues - 1 + k: len(candles) - issues + k]
                store.write_candles(symbol, tf, row)
                now = int(row["ts"].iloc[0]) + HOUR + 60_000
                score_series(store, settings, book, symbol, tf, now_ms=now)
                forecast_series(store, settings, symbol, tf, now_ms=now)
            held[symbol] = candles.iloc[-1:].to_dict(orient="list")
    (workdir / "data" / "held.json").write_text(json.dumps(held))


def score_child(workdir: Path, n: int) -> dict[str, Any]:
    """The score step of the next cycle (``run_score``): one new candle per series, then score."""
    import pandas as pd

    from coin_core.pipeline import run_score
    from coin_core.storage import open_store

    settings = _settings(workdir, n)
    held = json.loads((workdir / "data" / "held.json").read_text())
    with open_store(settings) as store:
        for symbol, row in held.items():
            store.write_candles(symbol, "1h", pd.DataFrame(row))
    import coin_core.lifecycle  # noqa: F401  (imports are not the step's cost)

    cpu, wall = time.process_time(), time.perf_counter()
    results = run_score(settings, now_ms=LATEST + 2 * HOUR)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if not all(r.split()[0] != "0" for r in results.values()):
        raise RuntimeError(f"nothing scored: {results}")
    return {"score_cpu_ms_per_series": round(1000 * cpu / n, 2), "score_wall_ms_per_series": round(1000 * wall / n, 2),
            "scored_points_per_series": int(next(iter(results.values())).split()[0])}


def _split(acc: collections.Counter) -> list[tuple[str, Callable]]:
    """Wrap the steps worth naming (those this checkout has) to add up their CPU time."""
    import coin_core.forecast.bands as bands
    import coin_core.forecast.predict as predict
    import coin_core.storage.base as base
    import coin_core.storage.sqlite as sqlite

    targets: list[tuple[Any, str]] = [(base.CandleStore, "write_forecast"), (sqlite, "points_payload"),
                                      (base.CandleStore, "tail"), (bands, "apply_bands"), (bands, "load_band_state"),
                                      (predict, "_models"), (predict, "_health"), (predict, "ensure_champion")]
    import coin_core.forecast.base as fbase

    if hasattr(fbase.Model, "predict_points"):
        targets.append((fbase.Model, "predict_points"))
    wrapped = []
    for owner, name in targets:
        original = getattr(owner, name)

        def timed(*args: Any, _f: Callable = original, _n: str = name, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return _f(*args, **kwargs)
            finally:
                acc[_n] += time.process_time() - started

        setattr(owner, name, timed)
        wrapped.append((name, original))
    return wrapped


def child(workdir: Path, n: int, rounds: int, split: bool) -> dict[str, Any]:
    from coin_core.forecast.predict import forecast_series
    from coin_core.storage import open_store

    settings = _settings(workdir, n)
    acc: collections.Counter = collections.Counter()
    if split:
        _split(acc)
    cpu: list[float] = []
    now = LATEST + 2 * HOUR
    with open_store(settings) as store:
        for r in range(rounds + 1):
            if r == 1:
                acc.clear()
            for symbol, tf in settings.series(predicted_only=True):
                now += 1
                started = time.process_time()
                outcome = forecast_series(store, settings, symbol, tf, now_ms=now)
                if r:
                    cpu.append(time.process_time() - started)
                if outcome.status != "ok" or outcome.shadows != 3:
                    raise RuntimeError(f"{symbol}: {outcome}")
    out: dict[str, Any] = {"cpu_ms_median": round(1000 * statistics.median(cpu), 2),
                           "cpu_ms_p90": round(1000 * sorted(cpu)[int(0.9 * (len(cpu) - 1))], 2)}
    if split:
        out["split_ms_per_series"] = {k: round(1000 * v / len(cpu), 2) for k, v in acc.most_common()}
    return out


def _run_child(repo: Path, data: Path, n: int, rounds: int, split: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="coin-bench-serving-") as tmp:
        shutil.copytree(data, Path(tmp) / "data")
        cmd = [sys.executable, __file__, "--child", str(repo), tmp, str(n), str(rounds), "1" if split else "0"]
        if rounds == 0:
            cmd[-2:] = ["0", "score"]
        out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo)})
        if out.returncode:
            raise RuntimeError(f"child on {repo} failed: {out.stderr[-2000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--issues", type=int, default=30, help="hourly cycles of forecasts and scores before the measure")
    parser.add_argument("--baseline", type=Path, help="a checkout of the code to compare with (same data)")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        repo, workdir, n, rounds, split = args.child
        sys.path.insert(0, repo)
        if split == "score":
            print(json.dumps(score_child(Path(workdir), int(n))))
        else:
            print(json.dumps(child(Path(workdir), int(n), int(rounds), split == "1")))
        return 0
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory(prefix="coin-bench-serving-") as tmp:
        prepare(Path(tmp), args.symbols, args.issues)
        checkouts = {"this": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in checkouts}
        for _ in range(args.repeats):
            for label, repo in checkouts.items():
                found = _run_child(repo, Path(tmp) / "data", args.symbols, args.rounds, label == "this")
                runs[label].append({**found, **_run_child(repo, Path(tmp) / "data", args.symbols, 0, False)})
    result: dict[str, Any] = {"bench": "serving", "symbols": args.symbols, "rounds": args.rounds, "repeats": args.repeats,
                              "models_per_series": 4, "load_average": [round(v, 2) for v in os.getloadavg()]}
    for label, found in runs.items():
        result[f"{label}_cpu_ms_per_series_median"] = statistics.median(r["cpu_ms_median"] for r in found)
        result[f"{label}_cpu_ms_per_series_p90"] = statistics.median(r["cpu_ms_p90"] for r in found)
        for key in ("score_cpu_ms_per_series", "score_wall_ms_per_series", "scored_points_per_series"):
            result[f"{label}_{key}"] = statistics.median(r[key] for r in found)
    result["this_split_ms_per_series"] = runs["this"][len(runs["this"]) // 2]["split_ms_per_series"]
    if args.baseline:
        result["baseline"] = str(args.baseline)
        result["ratio_baseline_over_this"] = round(result["baseline_cpu_ms_per_series_median"]
                                                   / result["this_cpu_ms_per_series_median"], 2)
        result["score_cpu_ratio_baseline_over_this"] = round(result["baseline_score_cpu_ms_per_series"]
                                                             / result["this_score_cpu_ms_per_series"], 2)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
