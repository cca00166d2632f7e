"""Candle stores: one contract (:class:`CandleStore`), a backend per file, a factory by name."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..workers import kept_open
from .base import CandleStore, Forecast

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["CandleStore", "Forecast", "open_store", "kept_store", "BACKENDS"]

BACKENDS = ("sqlite", "influxdb")


def open_store(settings: "Settings") -> CandleStore:
    """The store ``settings.store`` names, with the storage budget guard applied."""
    budget = settings.storage_budget_bytes
    if settings.store == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(settings.data_dir / "candles.sqlite3", budget_bytes=budget)
    if settings.store == "influxdb":
        from .influx import InfluxStore

        return InfluxStore.from_settings(settings)
    raise ConfigError(f"unknown store {settings.store!r}: expected one of {', '.join(BACKENDS)}")


def kept_store(settings: "Settings") -> AbstractContextManager[CandleStore]:
    """:func:`open_store` for one call; a worker process keeps it open across its calls."""
    return kept_open(f"store {settings.model_dump_json()}", lambda: open_store(settings))
