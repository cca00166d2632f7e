"""Where CPU-bound per-series tasks (fits, forecasts, evaluations) run: in-process or on Dask.

* default: in the flow's process, one series after another (a small VM stays responsive and
  holds one model in memory at a time);
* ``DASK_WORKERS=N`` (no address): a local Dask cluster of N process workers that the run
  starts and stops itself: N series fitted at once on one machine's N cores;
* ``DASK_ADDRESS=tcp://host:8786``: an existing Dask scheduler (``dask scheduler`` plus any
  number of ``dask worker`` processes on any machines). The workers must import this project
  (same checkout and venv on their PYTHONPATH) and reach the same store and ``DATA_DIR``
  (InfluxDB plus a shared filesystem for the model registry across machines).

Dask comes from the optional extra ``coin-predict[dask]`` (``prefect-dask`` 0.2.x, the
Prefect 2 line, and ``distributed``). Tasks that run there take :class:`Settings` and open
their own store: a store holds connections, which do not travel between processes.

Dask's stock settings suit an interactive cluster with a dashboard. A run's cluster is a batch of
CPU-bound fits with none, so :func:`batch_dask_config` turns off what only the dashboard reads:
the workers' statistical profiler (a stack sample every 10 ms) and the 20 ms event-loop health
tick (every 1 s instead; a loop blocked past ``distributed.admin.tick.limit`` is still logged).
An idle 2-worker cluster then costs 2.5 times less CPU (docs/benchmarks.md), and the fits
get that share of the cores back. A value the operator set in Dask's own config (YAML or a
``DASK_*`` variable) wins; external scheduler and workers take the same values from
:data:`BATCH_DASK_ENV` (docs/deployment.md).

A scheduler that disappears mid-run fails the run with the Dask error; every model artifact
and pointer is written atomically (``coin_core.fsutil``), so nothing is half-written and the
next run refits what is missing.
"""

from __future__ import annotations

import functools
from typing import Any

from prefect.task_runners import BaseTaskRunner, SequentialTaskRunner

from coin_core.config import Settings
from coin_core.errors import ConfigError

__all__ = ["BATCH_DASK_CONFIG", "BATCH_DASK_ENV", "batch_dask_config", "task_runner", "describe_runner", "on_dask"]

#: Dask settings of a run's cluster (see the module docstring), as dotted keys.
BATCH_DASK_CONFIG: dict[str, Any] = {"distributed.admin.tick.interval": "1s", "distributed.worker.profile.enabled": False}
#: The same as environment variables, for ``dask scheduler`` and ``dask worker`` processes.
BATCH_DASK_ENV: dict[str, str] = {"DASK_" + key.upper().replace(".", "__"): str(value)
                                  for key, value in BATCH_DASK_CONFIG.items()}


@functools.cache
def batch_dask_config() -> dict[str, Any]:
    """Apply :data:`BATCH_DASK_CONFIG` to this process's Dask config (inherited by the worker
    processes of a cluster started here), except keys the operator set; what was applied."""
    import dask.config

    user = dask.config.collect()  # the operator's YAML files and DASK_* variables, without defaults
    missing = object()
    chosen = {k: v for k, v in BATCH_DASK_CONFIG.items() if dask.config.get(k, missing, config=user) is missing}
    dask.config.set(chosen)  # not as a context: for the life of this (flow run's) process
    return chosen


def _dask_runner(**kwargs: Any) -> BaseTaskRunner:
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:
        raise ConfigError("DASK_ADDRESS/DASK_WORKERS need the optional extra: pip install 'coin-predict[dask]'") from exc
    batch_dask_config()
    return DaskTaskRunner(**kwargs)


def task_runner(settings: Settings) -> BaseTaskRunner:
    """The task runner the settings ask for (see the module docstring)."""
    if settings.dask_address:
        return _dask_runner(address=settings.dask_address)
    if settings.dask_workers > 0:
        return _dask_runner(cluster_kwargs={"n_workers": settings.dask_workers, "threads_per_worker": 1,
                                            "processes": True, "dashboard_address": None})
    return SequentialTaskRunner()


def on_dask(settings: Settings) -> bool:
    """Whether per-series tasks go to Dask (then each runs in a worker process, not this one)."""
    return bool(settings.dask_address) or settings.dask_workers > 0


def describe_runner(settings: Settings) -> str:
    """One line for the run log (no credentials: a scheduler address carries none)."""
    if settings.dask_address:
        return f"Dask scheduler {settings.dask_address}"
    if settings.dask_workers > 0:
        return f"local Dask cluster of {settings.dask_workers} process worker(s)"
    return "in-process, one series at a time"
