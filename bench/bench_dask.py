"""Train fits and evaluations through the Dask task runner: 1 process worker vs 2, side by side
in one run, as JSON.

    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python bench/bench_dask.py --series 8
    PREFECT_API_URL=http://127.0.0.1:4200/api .venv/bin/python bench/bench_dask.py --flow evaluate --series 4 --days 40

Needs a running Prefect server (Dask worker processes report their task runs to it; the
in-process test API cannot be shared between processes) and the extra ``coin-predict[dask]``.
Setup (not measured): the simulated exchange in this process, 30 days of 1h candles per series
in a SQLite store. Then, alternately (1, 2, 1, 2 workers, so machine load drifts evenly):
wipe the model registry and run the ``train`` flow in a fresh process with ``DASK_WORKERS=N``
(a local cluster of N single-threaded process workers). Reported: the wall time of the
``fit-series`` subflow (the fan-out) and of the whole run (with the cluster's start-up).

``--flow fit``: only the training fan-out (the ``fit-series`` flow: one task per series fitting
every candidate), timed as the flow run's own duration as the server records it (``flow_s``:
Running -> end; Prefect 2.20 starts the task runner, here the local cluster, before the run turns
Running) and as the whole call with the cluster's start-up and shutdown (``run_s``).

Every run also reports the CPU seconds of its process tree (flow process, Dask scheduler and
workers, CmdStan) and of the local Prefect server, which shares the machine's cores.

``--warm``: the deployment shape of docs/deployment.md's external scheduler: a long-lived cluster of
1 or 2 process workers reached with ``DASK_ADDRESS``. Each timed run gets a cluster of its own,
started before it and warmed by one untimed run (its workers import Prophet and statsmodels once, as
a long-lived worker does), and closed after it, so the other size's idle cluster (its heartbeats,
memory monitor and profiler: ~1.7 CPU-s per 30 s, measured 2026-11-29) does not share the cores
with the measured one. ``cpu_s_cluster`` is the CPU of that cluster's processes during the run.

Clusters run with the settings the project gives a run's cluster (``flows.runners.BATCH_DASK_CONFIG``:
no worker profiler, a 1 s event-loop tick); ``--stock-dask`` runs every cluster and flow process on
Dask's stock settings instead, for a side-by-side figure. ``--flow idle`` measures what an idle
2-worker cluster costs under both, alternating, ``--rounds`` times (30 s each, no Prefect needed).

``--flow evaluate``: the same alternation over the ``evaluate`` flow (``--origins`` scored origins
per series, naive, drift, Prophet, ETS), whose ``evaluate-series`` subflow sends every fit and
calibration of every series to the cluster; its fan-out is timed the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

T0_S = 1_735_689_600 + 1800
RUN = """
import time
from flows.{flow} import {flow}_flow
if __name__ == "__main__":
    t0 = time.perf_counter()
    state = {flow}_flow({args}return_state=True)
    print("WALL", time.perf_counter() - t0, state.type.value)
    print("RUNID", state.state_details.flow_run_id)
"""
# ``--flow fit``: the training fan-out alone (every candidate of every series through the
# ``fit-series`` flow on the configured runner), without the gate that follows it in a train run
# (the gate is an evaluation, measured by ``--flow evaluate``).
RUN_FIT = """
import time
from coin_core.lifecycle.retrain import training_specs
from flows.common import flow_settings
from flows.runners import task_runner
from flows.train import fit_series_flow
if __name__ == "__main__":
    settings = flow_settings()
    jobs = [(s, tf, spec) for s, tf in settings.predicted_series() for spec in training_specs(tf)]
    t0 = time.perf_counter()
    state = fit_series_flow.with_options(task_runner=task_runner(settings))(jobs, None, "cli", return_state=True)
    print("WALL", time.perf_counter() - t0, state.type.value)
    print("RUNID", state.state_details.flow_run_id)
"""


def _server_cpu_s() -> float:
    """CPU seconds used so far by the local Prefect server's processes (it records every task run)."""
    import psutil

    total = 0.0
    for proc in psutil.process_iter(["cmdline"]):
        line = " ".join(proc.info["cmdline"] or [])
        if "prefect.server" in line or "prefect server" in line:
            with contextlib.suppress(psutil.Error):
                total += sum(proc.cpu_times()[:2])
    return total


def _flow_s(run_id: str) -> tuple[float | None, float | None]:
    """(the run, its subflows) from Running to end as the server recorded them. A subflow that
    carries the Dask runner is its fan-out on a cluster that is already up: Prefect 2.20 starts a
    flow's task runner before the flow turns Running."""
    import httpx

    api = os.environ["PREFECT_API_URL"]
    run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=30).json()
    subs = httpx.post(f"{api}/flow_runs/filter", timeout=30,
                      json={"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}}).json()
    sub_s = sum(float(r["total_run_time"] or 0) for r in subs) if subs else None
    return (round(float(run["total_run_time"]), 2) if run.get("total_run_time") else None,
            round(sub_s, 2) if sub_s else None)


def _run(env: dict[str, str], workdir: Path, flow: str, origins: int) -> dict:
    script = workdir / f"run_{flow}.py"
    script.write_text(RUN_FIT if flow == "fit" else RUN.format(flow=flow, args=f"origins={origins}, " if flow == "evaluate" else ""))
    cpu0, server0 = resource.getrusage(resource.RUSAGE_CHILDREN), _server_cpu_s()
    out = subprocess.run([sys.executable, str(script)], env=env, cwd=workdir, capture_output=True, text=True, timeout=3600)
    cpu1, server1 = resource.getrusage(resource.RUSAGE_CHILDREN), _server_cpu_s()
    text = out.stdout + out.stderr
    wall = re.search(r"WALL ([0-9.]+) (\w+)", text)
    if not wall or wall[2] != "COMPLETED":
        raise RuntimeError(text[-3000:])
    run_id = re.search(r"RUNID (\S+)", text)
    flow_s, fan_out = _flow_s(run_id[1]) if run_id else (None, None)
    return {"run_s": round(float(wall[1]), 2), "fan_out_s": fan_out, "flow_s": flow_s,
            "cpu_s_run": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
            "cpu_s_prefect_server": round(server1 - server0, 1)}


def _cluster_cpu_s(clusters: dict) -> float:
    """CPU seconds used so far by the warm clusters' processes (scheduler threads live here;
    the nannies and workers are this process's children)."""
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "dask" in " ".join(child.cmdline()) or "multiprocessing" in " ".join(child.cmdline()):
                total += sum(child.cpu_times()[:2])
    return total


def _stock_env() -> dict[str, str]:
    """Dask's stock values of the keys the project sets, as ``DASK_*`` variables (they win over
    ``flows.runners.batch_dask_config`` in a flow process)."""
    import dask.config
    import distributed  # noqa: F401 - registers distributed's defaults

    from flows.runners import BATCH_DASK_CONFIG, BATCH_DASK_ENV

    return {env: str(dask.config.get(key)) for key, env in zip(BATCH_DASK_CONFIG, BATCH_DASK_ENV)}


def _cluster(workers: int, stock: bool):
    """A local cluster of single-threaded process workers on the project's batch settings (the
    scheduler reads them here, the nannies pass them to their workers) or Dask's stock ones."""
    import dask.config
    from distributed import LocalCluster

    from flows.runners import BATCH_DASK_CONFIG

    with contextlib.nullcontext() if stock else dask.config.set(BATCH_DASK_CONFIG):
        return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)


def _idle(rounds: int) -> int:
    """CPU seconds an idle 2-worker cluster uses in 30 s: scheduler (this process) and workers."""
    import psutil

    out: dict[str, list[dict[str, float]]] = {"stock": [], "batch": []}
    for _ in range(rounds):
        for mode in out:
            with _cluster(2, mode == "stock"):
                time.sleep(5)  # past start-up
                me, kids = psutil.Process(), psutil.Process().children(recursive=True)
                before = [sum(p.cpu_times()[:2]) for p in (me, *kids)]
                time.sleep(30)
                after = [sum(p.cpu_times()[:2]) for p in (me, *kids)]
                out[mode].append({"scheduler_cpu_s": round(after[0] - before[0], 2),
                                  "workers_cpu_s": round(sum(after[1:]) - sum(before[1:]), 2)})
    total = {m: min(r["scheduler_cpu_s"] + r["workers_cpu_s"] for r in rs) for m, rs in out.items()}
    print(json.dumps({"bench": "dask-idle-cluster", "cpus": os.cpu_count(), "workers": 2, "seconds": 30,
                      "runs": out, "best_total_cpu_s": total,
                      "ratio_stock_over_batch": round(total["stock"] / total["batch"], 2)}, indent=1))
    return 0


@contextlib.contextmanager
def _warm_cluster(env: dict[str, str], workers: int, stock: bool):
    """A local cluster of ``workers`` single-threaded process workers, reached by address
    (``DASK_ADDRESS``) as a deployment's long-lived cluster is; closed on exit."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("PREFECT_")})  # the workers report task runs
    cluster = _cluster(workers, stock)
    try:
        yield {workers: cluster}
    finally:
        cluster.close()


def _worker_env(env: dict[str, str], workers: int, clusters: dict | None) -> dict[str, str]:
    if clusters is None:
        return {**env, "DASK_WORKERS": str(workers)}
    return {**env, "DASK_ADDRESS": clusters[workers].scheduler_address}


def _timed_run(env: dict[str, str], workdir: Path, workers: int, clusters: dict | None, args) -> dict:
    """One flow run with every series refitted (registry and result cache wiped first)."""
    shutil.rmtree(workdir / "data" / "models", ignore_errors=True)
    shutil.rmtree(workdir / "results", ignore_errors=True)  # no cached fit: every series fits
    cluster0 = _cluster_cpu_s(clusters) if clusters else 0.0
    run = _run(_worker_env(env, workers, clusters), workdir, args.flow, args.origins)
    if clusters:
        run["cpu_s_cluster"] = round(_cluster_cpu_s(clusters) - cluster0, 1)
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--flow", choices=("train", "fit", "evaluate", "idle"), default="train")
    parser.add_argument("--days", type=int, default=30, help="days of 1h candles per series")
    parser.add_argument("--origins", type=int, default=50, help="scored origins per series (--flow evaluate)")
    parser.add_argument("--warm", action="store_true",
                        help="a long-lived cluster reached by DASK_ADDRESS for each timed run (one warm-up run "
                             "each, not reported; the other size's cluster closed) instead of DASK_WORKERS")
    parser.add_argument("--stock-dask", action="store_true",
                        help="Dask's stock settings for every cluster and flow process, not the project's batch ones")
    args = parser.parse_args(argv)
    if args.flow == "idle":
        return _idle(args.rounds)
    if not os.environ.get("PREFECT_API_URL"):
        sys.exit("set PREFECT_API_URL to a running prefect server (see the docstring)")
    from coin_core.config import load_settings
    from coin_core.exchange_sim import SimClock, SimExchange
    from coin_core.ingest import run_ingest

    symbols = [f"D{i:02d}/USDT" for i in range(args.series)]
    results: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="coin-bench-dask-") as tmp, SimExchange(symbols, clock=SimClock(T0_S)) as sim:
        workdir = Path(tmp)
        env = {**os.environ, "PYTHONPATH": str(REPO), "DATA_DIR": str(workdir / "data"), "STORE": "sqlite",
               "EXCHANGE_API_URL": sim.base_url, "TARGET_SYMBOLS": ",".join(symbols),
               "TIMEFRAME_POLICY": json.dumps({"1h": {"lookback_days": args.days}}),
               "PREFECT_LOCAL_STORAGE_PATH": str(workdir / "results"), **(_stock_env() if args.stock_dask else {})}
        run_ingest(load_settings(data_dir=workdir / "data", exchange_api_url=sim.base_url, target_symbols=symbols,
                                 timeframe_policy={"1h": {"lookback_days": args.days}}), now_ms=T0_S * 1000)
        for _ in range(args.rounds):
            for workers in (1, 2):
                with (_warm_cluster(env, workers, args.stock_dask) if args.warm else contextlib.nullcontext()) as clusters:
                    for timed in ([False, True] if args.warm else [True]):  # warm: one untimed run first
                        run = _timed_run(env, workdir, workers, clusters, args)
                        if timed:
                            results[workers].append(run)
    best = {n: min(r["fan_out_s"] or r["flow_s"] or r["run_s"] for r in runs) for n, runs in results.items()}
    whole = {n: min(r["run_s"] for r in runs) for n, runs in results.items()}
    print(json.dumps({"bench": f"dask-{args.flow}", "cpus": os.cpu_count(), "series": args.series,
                      "cluster": "warm, by address" if args.warm else "started by each run",
                      "dask_settings": "stock" if args.stock_dask else "batch (flows.runners.BATCH_DASK_CONFIG)",
                      "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
                      "runs": {f"{n}_worker": runs for n, runs in results.items()},
                      "best_fan_out_s": best, "speedup_2_over_1": round(best[1] / best[2], 2),
                      "best_run_s": whole, "speedup_whole_run_2_over_1": round(whole[1] / whole[2], 2)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
