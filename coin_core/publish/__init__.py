"""Publish: the static site in ``settings.public_dir`` (JSON data files, schemas, prebuilt HTML).

Entry point: :func:`publish_site`. File formats: :mod:`coin_core.publish.models`.
"""

from __future__ import annotations

from .collect import SeriesState, check_forecast, collect_one, collect_series, series_files
from .models import HistoryFile, ManifestFile, PredictionFile, StatusFile, SCHEMA_VERSION, schema_name
from .site import PublishReport, SeriesSummary, publish_site

__all__ = [
    "publish_site",
    "PublishReport",
    "SeriesSummary",
    "SeriesState",
    "collect_one",
    "collect_series",
    "check_forecast",
    "series_files",
    "HistoryFile",
    "PredictionFile",
    "ManifestFile",
    "StatusFile",
    "SCHEMA_VERSION",
    "schema_name",
]
