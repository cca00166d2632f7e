"""The compact serving file beside a model artifact: what a cycle loads instead of the artifact.

A Prophet artifact is ~1.4 MB of JSON (prophet's own serialisation, the whole training
history included); rebuilding the model from it costs ~50 ms of CPU, every cycle, for every
series. What ``predict`` needs is a few hundred numbers (``prophet_fast.py``). So next to
``<version>.json`` sits ``<version>.serve.json``: the same envelope with the model's
``serving_state()`` instead of its state. It is written when the model is registered, and
rebuilt from the artifact by the first load that finds it missing, unreadable or stale.

The artifact stays the one source of truth: the serving file records the artifact's size and
modification time, and a mismatch (the artifact was replaced or restored) makes the loader
ignore it. A model with no compact state (the baselines, ETS: their artifacts are a few hundred
bytes) gets no serving file. Both writes are atomic; a crash leaves the old file or none.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ModelError
from ..fsutil import atomic_write_text
from .base import ARTIFACT_FORMAT, SCHEMA_VERSION, Model, ModelSpec, artifact_access, model_class, read_artifact

__all__ = ["SERVING_SUFFIX", "serving_path", "write_serving", "load_serving"]

log = logging.getLogger(__name__)

SERVING_SUFFIX = ".serve.json"
SERVING_FORMAT = f"{ARTIFACT_FORMAT}-serving"


def serving_path(artifact: Path) -> Path:
    """``<version>.serve.json`` beside ``<version>.json`` (its stem never parses as a version)."""
    return artifact.with_name(artifact.stem + SERVING_SUFFIX)


def _fingerprint(stat: os.stat_result) -> dict[str, int]:
    return {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def write_serving(artifact: Path, model: Model) -> bool:
    """Write the serving file of a loaded or freshly saved model; False when it has none."""
    state = model.serving_state()
    if state is None:
        return False
    envelope = {"format": SERVING_FORMAT, "schema_version": SCHEMA_VERSION, "model": model.name,
                "spec": model.spec.model_dump(mode="json"), "artifact": _fingerprint(artifact.stat()), "state": state}
    atomic_write_text(serving_path(artifact), json.dumps(envelope, separators=(",", ":"), allow_nan=False))
    return True


def _read(path: Path, artifact: os.stat_result) -> Model | None:
    """The model of a serving file that matches the artifact, else None (it is then rebuilt)."""
    try:
        envelope: Any = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("serving file %s unreadable (%s): rebuilding it from the artifact", path.name, exc)
        return None
    if (not isinstance(envelope, dict) or envelope.get("format") != SERVING_FORMAT
            or envelope.get("schema_version") != SCHEMA_VERSION or envelope.get("artifact") != _fingerprint(artifact)
            or not isinstance(envelope.get("state"), dict)):
        return None
    try:
        model = model_class(str(envelope.get("model")))(ModelSpec.model_validate(envelope.get("spec")))
        model.state_ = model._validate_state(envelope["state"])
    except (ModelError, ValidationError) as exc:
        log.warning("serving file %s invalid (%s): rebuilding it from the artifact", path.name, exc)
        return None
    return model


def load_serving(artifact: Path, version: str) -> Model:
    """The model to forecast with: from its serving file when it has a valid one, else from the
    artifact (whose serving file is then written for the next cycle). Errors as ``read_artifact``;
    an artifact whose metadata names another version is refused (as ``registry.load_version``)."""
    with artifact_access(artifact):
        stat = artifact.stat()
    model = _read(serving_path(artifact), stat)
    if model is not None:
        return model
    model, meta = read_artifact(artifact)
    if meta is None or meta.model_version != version:
        raise ModelError(f"artifact {artifact.name} carries no or mismatched metadata")
    try:
        write_serving(artifact, model)
    except (OSError, ModelError) as exc:  # a full disk: serve anyway, rebuild next time
        log.warning("serving file of %s not written: %s", artifact.name, exc)
    return model
