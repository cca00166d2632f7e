"""One unit of evaluation work, picklable for a process pool: fit once, forecast its origins.

A task carries only the arrays it needs (the fit window and each origin's recent tail), so a
worker never touches the store and never sees a candle after its origins.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import CoinPredictError
from ..forecast.base import ModelSpec
from ..forecast.models import make_model

__all__ = ["Task", "run_task"]


@dataclass(frozen=True)
class Task:
    spec: dict[str, Any]
    members: tuple[int, ...]  # indices of the origins this fit serves
    fit_ts: np.ndarray
    fit_y: np.ndarray
    recents: tuple[tuple[np.ndarray, np.ndarray], ...]  # per origin: ts/y of the latest closes
    targets: tuple[tuple[int, ...], ...]  # per origin: the candle open times to forecast


def run_task(task: Task) -> np.ndarray | str:
    """Point forecasts (origins x horizon), or a one-line error when the model failed."""
    try:
        model = make_model(ModelSpec.model_validate(task.spec))
        model.fit(pd.DataFrame({"ts": task.fit_ts, "y": task.fit_y}))
        requests = [(list(targets), pd.DataFrame({"ts": ts, "y": y})) for (ts, y), targets in zip(task.recents, task.targets)]
        return np.vstack([out["yhat"].to_numpy(dtype="float64") for out in model.predict_many(requests)])
    except CoinPredictError as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
