"""The one exception tree of coin_core.

Every error the library raises on purpose derives from :class:`CoinPredictError`; lower-level
errors (ccxt, sqlite3, HTTP, pydantic) are translated at the boundary with ``raise ... from exc``
so callers (CLI, flows) only need to know this tree::

    CoinPredictError
    ├── ConfigError                 bad settings, symbols or timeframes (names the bad entry)
    ├── ExchangeError               anything from the exchange side
    │   ├── TransientExchangeError  network, timeout, 429/418, 5xx, maintenance: retry with backoff
    │   └── PermanentExchangeError  unknown symbol, bad credentials, bad request: fail the series
    ├── StorageError                the candle store
    │   ├── StorageUnavailableError the store cannot be reached (server down): retryable
    │   └── StorageBudgetExceeded   the storage budget guard refuses to grow the store
    ├── DataValidationError         a payload or file on disk that does not hold what it must
    ├── ModelError                  fitting, predicting, saving or loading a model
    │   └── InsufficientDataError   fewer samples than the timeframe's minimum
    ├── PublishError                rendering or writing the static site
    └── LockError                   a run that must not overlap found another one running

Messages never contain secrets: credentials are redacted before they reach an exception.
"""

from __future__ import annotations

__all__ = [
    "CoinPredictError",
    "ConfigError",
    "ExchangeError",
    "TransientExchangeError",
    "PermanentExchangeError",
    "StorageError",
    "StorageUnavailableError",
    "StorageBudgetExceeded",
    "DataValidationError",
    "ModelError",
    "InsufficientDataError",
    "PublishError",
    "LockError",
]


class CoinPredictError(Exception):
    """Base class of every error coin_core raises on purpose."""


class ConfigError(CoinPredictError):
    """Invalid configuration: settings, symbols, timeframes."""


class ExchangeError(CoinPredictError):
    """An error talking to the exchange."""


class TransientExchangeError(ExchangeError):
    """Worth retrying: network, timeouts, rate limits, 5xx, maintenance."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentExchangeError(ExchangeError):
    """Not worth retrying: unknown symbol, bad credentials, bad request."""


class StorageError(CoinPredictError):
    """An error of the candle store."""


class StorageUnavailableError(StorageError):
    """The store cannot be reached right now; retrying later may succeed."""


class StorageBudgetExceeded(StorageError):
    """The store is at or over its size budget and refuses to grow."""


class DataValidationError(CoinPredictError):
    """A payload or file that does not hold what it must."""


class ModelError(CoinPredictError):
    """Fitting, predicting, saving or loading a model failed."""


class InsufficientDataError(ModelError):
    """Fewer samples than the minimum the timeframe requires."""


class PublishError(CoinPredictError):
    """Rendering or writing the static site failed."""


class LockError(CoinPredictError):
    """Another run holds a lock this run needs."""
