"""Every model class by name, and the factory that builds one from a spec."""

from __future__ import annotations

from .base import Model, ModelSpec, model_class
from .drift import DriftModel
from .ets_model import EtsModel
from .naive import NaiveModel
from .prophet_model import ProphetModel

__all__ = ["MODELS", "make_model"]

MODELS: dict[str, type[Model]] = {m.name: m for m in (NaiveModel, DriftModel, ProphetModel, EtsModel)}


def make_model(spec: ModelSpec | str) -> Model:
    """An unfitted model for ``spec`` (a name alone means default parameters)."""
    spec = ModelSpec(name=spec) if isinstance(spec, str) else spec
    return model_class(spec.name)(spec)
