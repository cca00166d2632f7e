"""The model contract every forecaster follows, its spec and its artifact format.

Modelled on statsforecast: every model has the same shape (``fit`` / ``predict`` / ``save`` /
``load``), the maths lives in small pure functions next to each model, and everything a fit
learns sits in ONE attribute, ``state_``, a JSON-able dict. Artifacts are JSON envelopes, never
pickle: loading a model file must not be able to run code.

Time is integer UTC milliseconds (candle open times) everywhere, as in the rest of coin_core.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from abc import ABC, abstractmethod
from contextlib import contextmanager
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence, TypeVar

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ModelError
from ..fsutil import atomic_write_text
from ..timeframes import Timeframe
from .checks import (
    BAND_TOLERANCE, PREDICTION_COLUMNS, check_history, check_points, check_prediction, check_recent, check_targets,
    points_to_frame, step_ms_of, steps_ahead, z_score,
)

__all__ = [
    "ARTIFACT_FORMAT",
    "artifact_access",
    "SCHEMA_VERSION",
    "DEFAULT_INTERVAL_WIDTH",
    "PREDICTION_COLUMNS",
    "BAND_TOLERANCE",
    "Model",
    "ModelSpec",
    "ModelMetadata",
    "library_versions",
    "check_history",
    "check_targets",
    "check_prediction",
    "check_points",
    "check_recent",
    "points_to_frame",
    "model_class",
    "read_artifact",
    "read_metadata",
    "z_score",
    "step_ms_of",
    "steps_ahead",
]

ARTIFACT_FORMAT = "coin-predict-model"
SCHEMA_VERSION = 1
DEFAULT_INTERVAL_WIDTH = 0.8  # Prophet's default: all models publish comparable 80% bands

M = TypeVar("M", bound="Model")
JsonScalar = str | int | float | bool | None

_CLASSES: dict[str, type["Model"]] = {}


class ModelSpec(BaseModel):
    """What to fit: a model name and its parameters. Its hash names versions and cache keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    params: dict[str, JsonScalar] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _finite(cls, value: dict[str, JsonScalar]) -> dict[str, JsonScalar]:
        bad = [k for k, v in value.items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise ValueError(f"non-finite parameter(s): {', '.join(bad)}")
        return value

    @property
    def spec_hash(self) -> str:
        """Stable over processes and dict order: sha256 of the canonical JSON."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def hash8(self) -> str:
        return self.spec_hash[:8]


class ModelMetadata(BaseModel):
    """Who, what and from which data: travels inside every artifact."""

    model_config = ConfigDict(extra="ignore")

    schema_version: int = SCHEMA_VERSION
    model_version: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}-[0-9a-f]{8}-\d{14}(-\d{1,3})?$")
    spec: ModelSpec
    trained_at: int
    symbol: str
    timeframe: Timeframe
    first_ts: int
    last_ts: int
    row_count: int = Field(ge=0)
    libraries: dict[str, str] = Field(default_factory=dict)


def library_versions() -> dict[str, str]:
    """Versions that decide whether an artifact can be read back identically."""
    found = {"python": platform.python_version(), "pandas": pd.__version__, "numpy": np.__version__}
    for dist, key in (("prophet", "prophet"), ("coin-predict", "coin_core")):
        try:
            found[key] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            found[key] = "unknown"
    return found


# ---- the contract ---------------------------------------------------------------------------
class Model(ABC):
    """One forecaster. Subclasses set ``name`` and implement the four ``_`` methods."""

    name: ClassVar[str] = "abstract"

    def __init__(self, spec: ModelSpec | None = None) -> None:
        self.spec = spec or ModelSpec(name=self.name)
        if self.spec.name != self.name:
            raise ModelError(f"spec names model {self.spec.name!r}, not {self.name!r}")
        self._check_params(dict(self.spec.params))
        self.state_: dict[str, Any] | None = None
        self.metadata_: ModelMetadata | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _CLASSES[cls.name] = cls

    # -- public API --
    def fit(self: M, history: pd.DataFrame) -> M:
        frame = check_history(history)
        with self._translated("fit"):
            self.state_ = self._fit(frame)
        return self

    @contextmanager
    def _translated(self, step: str) -> Iterator[None]:
        """Library internals (stan, numpy, statsmodels) fail as the one project error type."""
        try:
            yield
        except ModelError:
            raise
        except Exception as exc:
            raise ModelError(f"{self.name} {step} failed: {type(exc).__name__}: {exc}") from exc

    def predict(self, target_ts: Sequence[int], recent: pd.DataFrame | None = None) -> pd.DataFrame:
        """Forecast at ``target_ts`` (ascending candle open times).

        ``recent`` is an optional ``ts``/``y`` tail of the latest observations, so a champion
        trained earlier still forecasts from the latest stored candle: naive and drift re-anchor
        on its last value when it is newer than their fit; Prophet keeps its fitted trend and
        seasonality but shifts the level by its residual at the last observation.
        """
        if self.state_ is None:
            raise ModelError(f"{self.name} model is not fitted: call fit() or load() first")
        targets = check_targets(target_ts)
        tail = check_history(recent, min_rows=1) if recent is not None and len(recent) else None
        with self._translated("predict"):
            frame = self._predict(self.state_, targets, tail)
        return check_prediction(frame, targets)

    def predict_points(self, target_ts: Sequence[int] | np.ndarray, recent_ts: np.ndarray | None = None,
                       recent_y: np.ndarray | None = None) -> np.ndarray:
        """:meth:`predict` as a checked ``(n, 3)`` array of yhat, lower, upper, the ``recent`` tail
        given as two arrays: the serving path, with no pandas frame built on the way.

        The same numbers as ``predict`` (both go through ``_predict_arrays`` and the same checks).
        """
        if self.state_ is None:
            raise ModelError(f"{self.name} model is not fitted: call fit() or load() first")
        targets = check_targets(target_ts)
        tail = check_recent(recent_ts, recent_y) if recent_ts is not None and len(recent_ts) else None
        with self._translated("predict"):
            values = self._predict_arrays(self.state_, targets, tail)
        return check_points(values, targets)

    def predict_many(self, requests: Sequence[tuple[Sequence[int], pd.DataFrame | None]]) -> list[pd.DataFrame]:
        """``predict`` for several (targets, recent) pairs from one fit (a backtest's origins).

        Same results as calling ``predict`` for each; a model whose predict has a large fixed
        cost (Prophet) overrides it to pay that cost once.
        """
        return [self.predict(targets, recent=recent) for targets, recent in requests]

    def save(self, path: Path, metadata: ModelMetadata | None = None) -> None:
        """Write the artifact atomically as one JSON document."""
        if self.state_ is None:
            raise ModelError(f"cannot save an unfitted {self.name} model")
        meta = metadata or self.metadata_
        envelope = {
            "format": ARTIFACT_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "model": self.name,
            "spec": self.spec.model_dump(mode="json"),
            "metadata": meta.model_dump(mode="json") if meta else None,
            "state": self.state_,
        }
        try:
            atomic_write_text(Path(path), json.dumps(envelope, separators=(",", ":"), allow_nan=False))
        except OSError as exc:  # a full disk fails this series' training, not the whole run
            raise ModelError(f"cannot write model artifact {Path(path).name}: {exc.strerror or exc}") from exc

    @classmethod
    def load(cls: type[M], path: Path) -> M:
        """Read an artifact; ``Model.load`` dispatches on the name inside it."""
        model, _ = read_artifact(Path(path), expect=None if cls is Model else cls.name)
        return model  # type: ignore[return-value]

    def serving_state(self) -> dict[str, Any] | None:
        """A smaller state that predicts the same (``serving.py``); None: the artifact is small."""
        return None

    @property
    def is_fitted(self) -> bool:
        return self.state_ is not None

    # -- what a model implements --
    def _check_params(self, params: dict[str, Any]) -> None:
        """Reject unknown or invalid spec parameters early (ModelError)."""

    @abstractmethod
    def _fit(self, history: pd.DataFrame) -> dict[str, Any]:
        """Return the fitted state: a JSON-able dict."""

    def _predict(self, state: dict[str, Any], target_ts: np.ndarray, recent: pd.DataFrame | None) -> pd.DataFrame:
        """Return PREDICTION_COLUMNS for ``target_ts``. A model implements this or
        :meth:`_predict_arrays` (the built-in models: no frame on the serving path)."""
        if type(self)._predict_arrays is Model._predict_arrays:
            raise NotImplementedError(f"{type(self).__name__} implements neither _predict nor _predict_arrays")
        tail = None if recent is None else (recent["ts"].to_numpy(dtype="int64"), recent["y"].to_numpy(dtype="float64"))
        return points_to_frame(target_ts, self._predict_arrays(state, target_ts, tail))

    def _predict_arrays(self, state: dict[str, Any], target_ts: np.ndarray,
                        recent: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        """``(n, 3)`` yhat, lower, upper for ``target_ts``; ``recent`` is a checked (ts, y) tail."""
        if type(self)._predict is Model._predict:
            raise NotImplementedError(f"{type(self).__name__} implements neither _predict nor _predict_arrays")
        frame = self._predict(state, target_ts, None if recent is None else pd.DataFrame({"ts": recent[0], "y": recent[1]}))
        return check_prediction(frame, target_ts)[list(PREDICTION_COLUMNS[1:])].to_numpy()

    def _validate_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Check a loaded state before trusting it (ModelError on anything wrong)."""
        return state


def model_class(name: str) -> type[Model]:
    from . import models  # noqa: F401  (registers every model class)

    try:
        return _CLASSES[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}: expected one of {', '.join(sorted(_CLASSES))}") from None


@contextmanager
def artifact_access(path: Path) -> Iterator[None]:
    """File-system errors on a model artifact as a ModelError naming it (missing, unreadable)."""
    try:
        yield
    except FileNotFoundError:
        raise ModelError(f"model artifact {path.name} is missing") from None
    except OSError as exc:
        raise ModelError(f"cannot read model artifact {path.name}: {exc.strerror}") from exc


def _read_envelope(path: Path) -> dict[str, Any]:
    with artifact_access(path):
        raw = path.read_bytes()
    try:
        envelope = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"model artifact {path.name} is not valid JSON (corrupt?)") from exc
    if not isinstance(envelope, dict) or envelope.get("format") != ARTIFACT_FORMAT:
        raise ModelError(f"{path.name} is not a coin-predict model artifact")
    if envelope.get("schema_version") != SCHEMA_VERSION:
        raise ModelError(f"{path.name} has schema_version {envelope.get('schema_version')!r}; expected {SCHEMA_VERSION}")
    return envelope


def read_metadata(path: Path) -> ModelMetadata | None:
    """Only the metadata of an artifact (no model is built): cheap checks such as fit skipping."""
    raw = _read_envelope(Path(path)).get("metadata")
    try:
        return ModelMetadata.model_validate(raw) if raw is not None else None
    except ValidationError as exc:
        raise ModelError(f"{Path(path).name} has invalid metadata: {exc.errors()[0]['msg']}") from exc


def read_artifact(path: Path, expect: str | None = None) -> tuple[Model, ModelMetadata | None]:
    """Load a model and its metadata; any problem is a ModelError naming the file."""
    envelope = _read_envelope(path)
    name = envelope.get("model")
    if expect is not None and name != expect:
        raise ModelError(f"{path.name} holds a {name!r} model, not {expect!r}")
    try:
        spec = ModelSpec.model_validate(envelope.get("spec"))
        meta_raw = envelope.get("metadata")
        meta = ModelMetadata.model_validate(meta_raw) if meta_raw is not None else None
    except ValidationError as exc:
        raise ModelError(f"{path.name} has an invalid spec or metadata: {exc.errors()[0]['msg']}") from exc
    model = model_class(str(name))(spec)
    state = envelope.get("state")
    if not isinstance(state, dict):
        raise ModelError(f"{path.name} has no fitted state")
    try:
        model.state_ = model._validate_state(state)
    except ModelError as exc:
        raise ModelError(f"{path.name}: {exc}") from exc
    except Exception as exc:
        raise ModelError(f"{path.name} has an unreadable {name} state: {type(exc).__name__}") from exc
    model.metadata_ = meta
    return model, meta
