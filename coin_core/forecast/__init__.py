"""Forecasting: one model contract, baselines beside Prophet, a registry, training, prediction.

Importing this package does not import prophet; the Prophet model imports it on first use.
"""

from __future__ import annotations

from .base import Model, ModelMetadata, ModelSpec, read_artifact
from .drift import DriftModel
from .models import MODELS, make_model
from .naive import NaiveModel
from .predict import PredictOutcome, forecast_series, target_times
from .prophet_model import ProphetModel
from .registry import ChampionPointer, champion_metadata, list_versions, load_champion, promote, register, rollback
from .specs import DEFAULT_SPECS, default_lookback, shared_spec
from .training import TrainResult, fit_cache_key, train_series

__all__ = [
    "Model", "ModelMetadata", "ModelSpec", "read_artifact",
    "NaiveModel", "DriftModel", "ProphetModel", "MODELS", "make_model",
    "DEFAULT_SPECS", "shared_spec", "default_lookback",
    "ChampionPointer", "register", "promote", "rollback", "load_champion", "champion_metadata", "list_versions",
    "TrainResult", "train_series", "fit_cache_key",
    "PredictOutcome", "forecast_series", "target_times",
]
