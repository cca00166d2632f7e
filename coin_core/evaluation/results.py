"""What an evaluation produces, and where it is kept (``DATA_DIR/evaluation/<SLUG>/<tf>.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import Settings
from ..errors import DataValidationError
from ..forecast.bands import BandState
from ..forecast.base import ModelSpec
from ..fsutil import atomic_write_text
from ..symbols import parse_symbol, slug
from ..timeframes import Timeframe, parse_timeframe

__all__ = ["SCHEMA_VERSION", "StepScore", "ModelScore", "SeriesEvaluation", "evaluation_path",
           "save_evaluation", "load_evaluation"]

SCHEMA_VERSION = 1
EvaluationStatus = Literal["ok", "insufficient_data"]


class StepScore(BaseModel):
    """One horizon step's scores over every scored origin."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: int = Field(ge=1)
    mae: float
    mase: float
    coverage50: float
    coverage80: float
    wis: float
    width80: float


class ModelScore(BaseModel):
    """One model on one series: every figure is over the same scored points as the others'.

    ``mase`` is MAE over the naive forecast's MAE on the same points; ``wis`` and ``width80`` are
    fractions of the origin's price; coverages are shares (0..1) of realised closes in the band.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    spec: ModelSpec
    n_origins: int = Field(ge=0)
    n_points: int = Field(ge=0)
    mae: float
    mase: float
    wis: float
    coverage50: float
    coverage80: float
    width80: float
    per_step: list[StepScore]
    failed_origins: int = Field(default=0, ge=0)


class SeriesEvaluation(BaseModel):
    """A rolling-origin evaluation of several model specs on one stored series."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    symbol: str
    timeframe: Timeframe
    status: EvaluationStatus
    message: str = ""
    origins: list[int] = Field(default_factory=list)  # anchor candle of every scored origin
    scores: dict[str, ModelScore] = Field(default_factory=dict)
    evaluated_at: int
    horizon: int = 0
    stride: int = 0
    refit_every: int = 0
    calibration_origins: int = 0
    lookback: int | None = None
    wall_seconds: float = 0.0
    workers: int = 1
    #: The band state each model ends with (backtest errors up to the latest candle): what the
    #: serving path starts from. Not part of the evaluation file (see ``save_band_state``).
    bands: dict[str, BandState] = Field(default_factory=dict, exclude=True)


def evaluation_path(settings: Settings, symbol: str, tf: Timeframe) -> Path:
    return Path(settings.data_dir) / "evaluation" / slug(parse_symbol(symbol)) / f"{parse_timeframe(tf)}.json"


def save_evaluation(settings: Settings, ev: SeriesEvaluation) -> Path:
    """Write atomically: a reader sees the previous evaluation or this one, never half."""
    path = evaluation_path(settings, ev.symbol, ev.timeframe)
    atomic_write_text(path, ev.model_dump_json())
    return path


def load_evaluation(settings: Settings, symbol: str, tf: Timeframe) -> SeriesEvaluation | None:
    """The stored evaluation (None when there is none). A corrupt file raises, naming it."""
    path = evaluation_path(settings, symbol, tf)
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"evaluation file {path} is unreadable: {exc}") from exc
    try:
        data = json.loads(raw)
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema_version {data.get('schema_version') if isinstance(data, dict) else None!r}, expected {SCHEMA_VERSION}")
        return SeriesEvaluation.model_validate(data)
    except (ValueError, ValidationError) as exc:
        raise DataValidationError(f"evaluation file {path} is corrupt: {str(exc).splitlines()[0]}") from exc
