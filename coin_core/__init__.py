"""Coin Predict's domain library: ingest, storage, forecasting and publishing, with no Prefect.

The public surface is small; everything else lives in modules that are imported explicitly.
"""

from __future__ import annotations

from .config import Settings, load_settings
from .errors import CoinPredictError

__all__ = ["__version__", "Settings", "load_settings", "CoinPredictError"]

__version__ = "0.1.0"
