"""Scale-out on Dask, for real: a ``dask scheduler`` and two ``dask worker`` processes started by
the test, a real ``prefect server`` (Dask workers report their task runs to it), the train flow
in its own process, real Prophet fits on the simulated exchange's candles.

1. the fits run on the cluster's workers and every series gets its champion;
2. the scheduler is SIGKILLed while fits are running: the run ends Failed with a clear reason,
   and every model the registry holds is whole (artifacts and pointers are written atomically);
   the next run, in-process, completes the rest;
3. a run's local cluster, and an external one started as docs/deployment.md says, run on the
   project's batch settings (no worker profiler, a 1 s event-loop tick) unless the operator set
   Dask's own config.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest

from coin_core.config import load_settings
from coin_core.exchange_sim import SimClock, SimExchange
from coin_core.forecast import registry
from coin_core.lifecycle.retrain import training_specs
from coin_core.ingest import run_ingest
from flows.runners import BATCH_DASK_ENV
from tests.fixtures.common import REPO, free_port, require
from tests.test_deployment import Server, _stop, prefect_server  # noqa: F401 - the module's server fixture

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow]

BIN = Path(sys.executable).parent
NOW = datetime(2025, 3, 10, 12, 30, tzinfo=timezone.utc).timestamp()
SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT"]
RUN_TRAIN = "from flows.train import train_flow; s = train_flow(return_state=True); print('STATE', s.type.value, s.message)"


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Four series of 14 days of 1h candles in a SQLite store, and the env a flow process needs."""
    root = tmp_path_factory.mktemp("dask-market")
    clock = SimClock(NOW)
    with SimExchange(SYMBOLS, clock=clock) as sim:
        env = {"DATA_DIR": str(root / "data"), "PUBLIC_DIR": str(root / "public"), "STORE": "sqlite",
               "EXCHANGE_API_URL": sim.base_url, "TARGET_SYMBOLS": ",".join(SYMBOLS),
               "TIMEFRAME_POLICY": json.dumps({"1h": {"lookback_days": 14}})}
        report = run_ingest(load_settings(**{k.lower(): v for k, v in env.items() if k != "TIMEFRAME_POLICY"},
                                          timeframe_policy={"1h": {"lookback_days": 14}}), now_ms=int(NOW * 1000))
        assert report.ok
        yield {"env": env, "root": root}


class Cluster:
    """``dask scheduler`` + two ``dask worker`` processes on loopback."""

    def __init__(self, server: Server, name: str) -> None:
        self.port, self.server, self.name = free_port(), server, name
        self.address = f"tcp://127.0.0.1:{self.port}"
        env = {**server.env, "PYTHONPATH": str(REPO), **BATCH_DASK_ENV}  # as docs/deployment.md starts them
        self.scheduler = server.spawn([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                       "--no-dashboard"], f"{name}-scheduler.log", env)
        self.workers = [server.spawn([str(BIN / "dask"), "worker", self.address, "--nthreads", "1", "--no-dashboard",
                                      "--death-timeout", "30", "--name", f"{name}-w{i}"], f"{name}-w{i}.log", env)
                        for i in range(2)]
        self.client = self._connect()

    def _connect(self) -> Any:
        from distributed import Client

        deadline = time.monotonic() + 120
        while True:
            try:
                client = Client(self.address, timeout=10)
                client.wait_for_workers(2, timeout=120)
                return client
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)

    def kill_scheduler_mid_run(self, proc: subprocess.Popen) -> str:
        """SIGKILL the scheduler once a job of ``proc``'s run is on a worker; the run's output."""
        deadline = time.monotonic() + 600
        while not any(self.client.processing().values()):
            assert proc.poll() is None and time.monotonic() < deadline, "no fit ever started"
            time.sleep(0.2)
        os.killpg(self.scheduler.pid, signal.SIGKILL)  # mid-run: fits are on the workers
        out, _ = proc.communicate(timeout=600)
        return out

    def tick_ms(self) -> list[float]:
        """The event-loop tick of the scheduler and of every worker, in ms."""
        def tick(dask_worker: Any = None, dask_scheduler: Any = None) -> float:
            return float((dask_worker or dask_scheduler).periodic_callbacks["tick"].callback_time)
        return [self.client.run_on_scheduler(tick), *self.client.run(tick).values()]

    def stop(self) -> None:
        self.client.close()
        for proc in [self.scheduler, *self.workers]:
            _stop(proc)


def _flow(server: Server, market: dict[str, Any], extra: dict[str, str]) -> subprocess.Popen:
    env = {**server.env, **market["env"], "PYTHONPATH": str(REPO), **extra}
    return subprocess.Popen([sys.executable, "-c", RUN_TRAIN], cwd=market["root"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _all_models_whole(data_dir: Path) -> int:
    """Every stored artifact parses and every champion pointer names a loadable artifact."""
    settings = load_settings(data_dir=data_dir)
    whole = 0
    for symbol in SYMBOLS:
        for version in registry.list_versions(settings, symbol, "1h"):
            registry.load_version(settings, symbol, "1h", version)  # parses and rebuilds the model
            whole += 1
        if registry.read_pointer(settings, symbol, "1h") is not None:
            assert registry.load_champion(settings, symbol, "1h") is not None, symbol
    return whole


def _worker_runs(server: Server, cluster: str, verb: str) -> list[set[str]]:
    """Per Dask worker of ``cluster``, the ``{verb} <symbol> 1h`` task runs it completed: each
    worker process logs the task runs it executed (Prefect's engine runs there)."""
    pattern = rf"Task run '({verb} \S+ 1h)' - Finished in state Completed"
    return [set(re.findall(pattern, (server.home / f"{cluster}-w{i}.log").read_text(errors="replace"))) for i in range(2)]


def test_fits_run_on_the_dask_workers(prefect_server: Server, market: dict[str, Any]) -> None:  # noqa: F811
    require((BIN / "dask").is_file(), "the dask CLI (extra coin-predict[dask])")
    cluster = Cluster(prefect_server, "ok")
    try:
        proc = _flow(prefect_server, market, {"DASK_ADDRESS": cluster.address})
        out, _ = proc.communicate(timeout=900)
        assert "STATE COMPLETED" in out, out[-4000:]
        ticks = cluster.tick_ms()
    finally:
        cluster.stop()
    assert ticks == [1000.0] * 3, f"the documented DASK_* settings reach scheduler and workers: {ticks}"
    assert f"fits run Dask scheduler {cluster.address}" in out
    ran = _worker_runs(prefect_server, "ok", "train")
    # Every series is one fit task on a worker, fitting all its candidates there.
    assert ran[0] | ran[1] == {f"train {s} 1h" for s in SYMBOLS}, ran
    assert ran[0] and ran[1], f"both workers fitted: {ran}"
    for symbol in SYMBOLS:
        kinds = {spec.name for spec in training_specs("1h")}
        assert {m.metadata.spec.name for m in registry.registered(load_settings(data_dir=market["root"] / "data"),
                                                                   symbol, "1h", intact=True)} >= kinds, symbol
    assert _all_models_whole(market["root"] / "data") >= len(SYMBOLS)


def test_scheduler_lost_mid_run_fails_clearly_and_half_writes_nothing(
    prefect_server: Server, market: dict[str, Any]  # noqa: F811
) -> None:
    require((BIN / "dask").is_file(), "the dask CLI (extra coin-predict[dask])")
    data = market["root"] / "data"
    for path in (data / "models").rglob("*"):  # force real fits: no champion to reuse
        if path.is_file():
            path.unlink()
    cluster = Cluster(prefect_server, "lost")
    try:
        out = cluster.kill_scheduler_mid_run(_flow(prefect_server, market, {"DASK_ADDRESS": cluster.address}))
    finally:
        cluster.stop()
    assert "STATE FAILED" in out, out[-4000:]
    reason = out.split("STATE FAILED", 1)[1]
    assert "step(s) failed" in reason and "train BTC/USDT" not in reason, reason[:2000]
    _all_models_whole(data)
    # The next run (in-process, no Dask) completes what the lost one did not.
    again = _flow(prefect_server, market, {})
    out, _ = again.communicate(timeout=900)
    assert "STATE COMPLETED" in out, out[-4000:]
    assert _all_models_whole(data) >= len(SYMBOLS)


RUN_FORECAST = "from flows.forecast import forecast_flow; s = forecast_flow(return_state=True); print('STATE', s.type.value, s.message)"


def test_forecasts_fan_out_over_the_dask_workers(prefect_server: Server, market: dict[str, Any]) -> None:  # noqa: F811
    require((BIN / "dask").is_file(), "the dask CLI (extra coin-predict[dask])")
    assert _all_models_whole(market["root"] / "data") >= len(SYMBOLS)  # the fits of the tests above
    cluster = Cluster(prefect_server, "fc")
    try:
        env = {**prefect_server.env, **market["env"], "PYTHONPATH": str(REPO), "DASK_ADDRESS": cluster.address}
        out = subprocess.run([sys.executable, "-c", RUN_FORECAST], cwd=market["root"], env=env, capture_output=True,
                             text=True, timeout=900)
    finally:
        cluster.stop()
    text = out.stdout + out.stderr
    assert "STATE COMPLETED" in text, text[-4000:]
    assert f"forecasts run Dask scheduler {cluster.address}" in text
    ran = _worker_runs(prefect_server, "fc", "forecast")
    assert ran[0] | ran[1] == {f"forecast {s} 1h" for s in SYMBOLS}, ran
    assert ran[0] and ran[1], f"both workers forecast: {ran}"
    settings = load_settings(data_dir=market["root"] / "data")
    from coin_core.storage import open_store

    with open_store(settings) as store:
        for symbol in SYMBOLS:
            forecast = store.latest_forecast(symbol, "1h")
            assert forecast is not None and forecast.input_last_ts == store.latest_ts(symbol, "1h"), symbol


RUN_EVALUATE = ("from flows.evaluate import evaluate_flow; s = evaluate_flow(origins=50, return_state=True); "
                "print('STATE', s.type.value, s.message)")


@pytest.fixture(scope="module")
def long_market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The same four series over 40 days: enough 1h candles for 50 scored origins each."""
    root = tmp_path_factory.mktemp("dask-eval-market")
    policy = {"1h": {"lookback_days": 40}}
    with SimExchange(SYMBOLS, clock=SimClock(NOW)) as sim:
        env = {"DATA_DIR": str(root / "data"), "PUBLIC_DIR": str(root / "public"), "STORE": "sqlite",
               "EXCHANGE_API_URL": sim.base_url, "TARGET_SYMBOLS": ",".join(SYMBOLS), "TIMEFRAME_POLICY": json.dumps(policy)}
        report = run_ingest(load_settings(**{k.lower(): v for k, v in env.items() if k != "TIMEFRAME_POLICY"},
                                          timeframe_policy=policy), now_ms=int(NOW * 1000))
        assert report.ok
        yield {"env": env, "root": root}


def _executed(client: Any, prefix: str) -> list[int]:
    """Per worker of the cluster, how many distinct tasks named ``prefix-...`` it executed."""
    def count(dask_worker: Any) -> int:
        return len({entry[0] for entry in dask_worker.state.log
                    if isinstance(entry[0], str) and entry[0].startswith(prefix + "-") and "executing" in entry})
    return list(client.run(count).values())


def test_evaluation_fans_out_over_the_dask_workers(prefect_server: Server, long_market: dict[str, Any]) -> None:  # noqa: F811
    """Every fit of every series goes to the cluster (not one series per worker), both workers
    take some, and the persisted results are those an in-process evaluation gives."""
    require((BIN / "dask").is_file(), "the dask CLI (extra coin-predict[dask])")
    from coin_core.evaluation import load_evaluation
    from coin_core.evaluation.engine import evaluate_many
    from coin_core.evaluation.specs import candidate_specs
    from coin_core.storage import open_store

    cluster = Cluster(prefect_server, "eval")
    try:
        env = {**prefect_server.env, **long_market["env"], "PYTHONPATH": str(REPO), "DASK_ADDRESS": cluster.address}
        proc = subprocess.run([sys.executable, "-c", RUN_EVALUATE], cwd=long_market["root"], env=env,
                              capture_output=True, text=True, timeout=1200)
        out = proc.stdout + proc.stderr
        assert "STATE COMPLETED" in out, out[-4000:]
        fits, calibrations = _executed(cluster.client, "run_task"), _executed(cluster.client, "run_calibration")
    finally:
        cluster.stop()
    assert f"series run Dask scheduler {cluster.address}" in out
    assert "evaluate every series on the Dask cluster' - Finished in state Completed" in out, out[-4000:]
    assert all(n > 0 for n in fits), f"both workers fitted: {fits}"
    settings = load_settings(data_dir=long_market["root"] / "data", target_symbols=SYMBOLS,
                             timeframe_policy={"1h": {"lookback_days": 40}})
    stored = {s: load_evaluation(settings, s, "1h") for s in SYMBOLS}
    assert sum(calibrations) == 4 * len(stored["BTC/USDT"].scores), calibrations  # one per series x model
    assert sum(fits) > 4 * len(fits), fits  # many fits per series, not one task per series
    with open_store(settings) as store:  # the same evaluation in this process, one worker
        here = evaluate_many(store, settings, [(s, "1h") for s in SYMBOLS], candidate_specs, n_origins=50, workers=1,
                             now_ms=stored["BTC/USDT"].evaluated_at)
    for ev in here:
        got = stored[ev.symbol]
        assert got is not None and got.status == "ok" and got.workers == 2 and len(got.origins) == 50, ev.symbol
        assert got.origins == ev.origins and set(got.scores) == set(ev.scores), ev.symbol
        for name, score in ev.scores.items():
            assert (got.scores[name].mase, got.scores[name].wis) == pytest.approx((score.mase, score.wis), rel=1e-9), name
        assert got.scores["naive"].mase == 1.0


def test_evaluation_scheduler_lost_mid_run_fails_clearly_and_keeps_stored_results(
    prefect_server: Server, long_market: dict[str, Any]  # noqa: F811
) -> None:
    """The scheduler SIGKILLed while fits run: the evaluate run ends Failed saying why, and the
    evaluations stored before (by the test above, or none) are byte for byte as they were."""
    require((BIN / "dask").is_file(), "the dask CLI (extra coin-predict[dask])")
    stored = long_market["root"] / "data" / "evaluation"
    before = {p: p.read_bytes() for p in stored.rglob("*") if p.is_file()}
    cluster = Cluster(prefect_server, "eval-lost")
    try:
        env = {**prefect_server.env, **long_market["env"], "PYTHONPATH": str(REPO), "DASK_ADDRESS": cluster.address}
        out = cluster.kill_scheduler_mid_run(subprocess.Popen(
            [sys.executable, "-c", RUN_EVALUATE], cwd=long_market["root"], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    finally:
        cluster.stop()
    assert "STATE FAILED" in out, out[-4000:]
    assert "evaluation stopped: its executor cancelled a job" in out, out[-4000:]
    assert {p: p.read_bytes() for p in stored.rglob("*") if p.is_file()} == before


LOCAL_CLUSTER = """
import json, time
from distributed import Client, LocalCluster
from coin_core.config import load_settings
from flows.runners import task_runner

def busy():
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        pass

def tick(dask_worker=None, dask_scheduler=None):
    return (dask_worker or dask_scheduler).periodic_callbacks["tick"].callback_time

runner = task_runner(load_settings(dask_workers=1))  # the runner a DASK_WORKERS=1 run builds
with LocalCluster(**runner.cluster_kwargs) as cluster, Client(cluster) as client:
    client.submit(busy).result()
    time.sleep(2.5)  # a worker's profile is readable once its 1 s cycle has run
    print(json.dumps({"profiled": client.profile()["count"], "ticks": [client.run_on_scheduler(tick), *client.run(tick).values()]}))
"""


@pytest.mark.parametrize("operator", [{}, {"DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "True"}], ids=["ours", "operator's"])
def test_local_cluster_runs_batch_settings_unless_the_operator_set_them(operator: dict[str, str]) -> None:
    """A ``DASK_WORKERS`` run's cluster: workers that take no profile samples and a 1 s tick in
    every process; a Dask setting the operator gave (here: the profiler on) is kept."""
    require((BIN / "dask").is_file(), "the dask CLI (extra coin-predict[dask])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    proc = subprocess.run([sys.executable, "-c", LOCAL_CLUSTER], env={**env, "PYTHONPATH": str(REPO), **operator},
                          capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["ticks"] == [1000.0, 1000.0], got
    if operator:
        assert got["profiled"] > 0, got  # the operator's profiler samples the busy task
    else:
        assert got["profiled"] == 0, got


def test_deployment_doc_gives_external_clusters_the_batch_settings() -> None:
    """The variables docs/deployment.md exports for ``dask scheduler``/``dask worker`` are the
    project's batch settings, so an external cluster runs as the tests' clusters do."""
    doc = (REPO / "docs" / "deployment.md").read_text()
    assert all(f"{key}={value}" in doc for key, value in BATCH_DASK_ENV.items()), BATCH_DASK_ENV
