"""Prefect orchestration of Coin Predict: flows wire ``coin_core`` steps, tasks wrap them.

Nothing here holds domain logic; ``coin_core`` never imports this package (nor prefect).
Deployments: ``prefect.yaml``; operations: ``docs/deployment.md``. The flows are imported
lazily, so ``python -m flows.setup`` does not load every flow first.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["cycle_flow", "ingest_flow", "train_flow", "monitor_flow", "rollback_flow", "evaluate_flow", "forecast_flow"]

_WHERE = {"cycle_flow": "flows.cycle", "ingest_flow": "flows.ingest", "train_flow": "flows.train",
          "monitor_flow": "flows.monitor", "rollback_flow": "flows.rollback", "evaluate_flow": "flows.evaluate",
          "forecast_flow": "flows.forecast"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'flows' has no attribute {name!r}")
