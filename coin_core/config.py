"""Typed configuration, loaded once at the edge (CLI, flow entry) and passed down.

Sources, highest first: explicit keyword arguments, environment variables, ``.env``. Every
variable is documented in ``docs/configuration.md``. Secrets are ``SecretStr`` so they never
print; :meth:`Settings.redacted` is what logs and errors may show.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Iterable, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .errors import ConfigError
from .policy import DEFAULT_POLICIES, TimeframePolicy
from .symbols import parse_symbols
from .timeframes import Timeframe, parse_timeframe

__all__ = ["Settings", "load_settings", "redact_url"]

StoreKind = Literal["sqlite", "influxdb"]


class Settings(BaseSettings):
    """Every setting of the product. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False,
        validate_default=True,
    )

    # What to collect
    target_symbols: Annotated[list[str], NoDecode] = Field(default=["BTC/USDT", "ETH/USDT"])
    ingest_timeframes: Annotated[list[Timeframe], NoDecode] = Field(default=["1h"])
    enable_multi_timeframes: bool = False
    timeframe_policy: dict[Timeframe, dict[str, Any]] = Field(
        default_factory=dict, description="JSON overrides of the policy matrix, per timeframe"
    )

    # Exchange
    exchange_id: str = "binance"
    exchange_api_url: str | None = Field(
        default=None, description="override of the exchange's REST base (the simulated exchange)"
    )
    exchange_timeout_s: float = Field(default=10.0, gt=0)
    exchange_max_retries: int = Field(default=5, ge=0)
    exchange_concurrency: int = Field(
        default=8, ge=1, le=64,
        description="series fetched at once (threads), all under the exchange's one request throttle",
    )
    exchange_max_clock_skew_s: float = Field(
        default=300.0, ge=1, le=86_400, description="beyond this lead over the local clock, the exchange's is not used"
    )
    exchange_api_key: SecretStr | None = None
    exchange_secret: SecretStr | None = None

    # Storage
    store: StoreKind = "sqlite"
    data_dir: Path = Path("data")
    storage_budget_gb: float = Field(default=50.0, gt=0)
    influxdb_url: str = "http://127.0.0.1:8086"
    influxdb_bucket: str = Field(default="coin_predict", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    influxdb_token: SecretStr | None = None
    influxdb_username: str | None = None
    influxdb_password: SecretStr | None = None
    influxdb_timeout_s: float = Field(default=30.0, gt=0)

    forecast_retention_days: int = Field(default=90, ge=1, description="stored forecast runs kept")

    # Scale-out (optional extra "dask"): where train/evaluate/forecast tasks run
    dask_address: str | None = Field(
        default=None, pattern=r"^(tcp|tls|ucx|inproc)://[^\s?#]+$",
        description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (None: no Dask)",
    )
    dask_workers: int = Field(
        default=0, ge=0, le=64,
        description="without DASK_ADDRESS: start a local Dask cluster of N process workers (0: in-process)",
    )

    # Publishing
    public_dir: Path = Path("public")
    site_title: str = "Coin Predict"

    # Operations: runtime metrics, monitor and alerts (docs/configuration.md, docs/runbooks.md)
    cycle_budget_s: float = Field(default=45.0, gt=0, le=86_400, description="a cycle longer than this is an overrun")
    train_budget_s: float = Field(default=4 * 3600.0, gt=0, le=7 * 86_400)
    monitor_budget_s: float = Field(default=60.0, gt=0, le=86_400)
    metrics_retention_days: int = Field(default=8, ge=7, le=366, description="run records kept")
    storage_warn_ratio: float = Field(default=0.9, gt=0, le=1, description="storage alert at this share of the budget")
    alert_block: str | None = Field(
        default=None, pattern=r"^[a-z0-9-]{1,64}/[a-z0-9-]{1,64}$",
        description="Prefect notification block 'type-slug/name' the monitor sends alerts through",
    )
    alert_repeat_s: int = Field(default=6 * 3600, ge=60, le=30 * 86_400, description="re-send a firing alert after")
    alert_escalate_s: int = Field(default=3 * 3600, ge=60, le=30 * 86_400, description="escalate a bad state older than")
    alert_send_attempts: int = Field(default=3, ge=1, le=10, description="webhook tries per alert and monitor pass")
    alert_retry_delay_s: float = Field(default=2.0, ge=0, le=60)

    @field_validator("target_symbols", mode="before")
    @classmethod
    def _symbols(cls, value: Any) -> list[str]:
        return parse_symbols(value)

    @field_validator("ingest_timeframes", mode="before")
    @classmethod
    def _timeframes(cls, value: Any) -> list[str]:
        items = value.split(",") if isinstance(value, str) else list(value)
        parsed = list(dict.fromkeys(parse_timeframe(str(i)) for i in items if str(i).strip()))
        if not parsed:
            raise ConfigError("INGEST_TIMEFRAMES is empty: name at least one, e.g. 1h")
        return parsed

    @field_validator("alert_block", mode="before")
    @classmethod
    def _alert_block(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("exchange_id")
    @classmethod
    def _exchange_id(cls, value: str) -> str:
        if not value.isidentifier() or not value.islower():
            raise ConfigError(f"invalid EXCHANGE_ID {value!r}: expected a ccxt id such as binance")
        return value

    @model_validator(mode="after")
    def _multi_timeframe_guard(self) -> "Settings":
        if self.ingest_timeframes != ["1h"] and not self.enable_multi_timeframes:
            raise ConfigError(
                f"INGEST_TIMEFRAMES={','.join(self.ingest_timeframes)} needs "
                "ENABLE_MULTI_TIMEFRAMES=true (the default operating set is 1h only)"
            )
        self.policies  # validates overrides now, not at first use
        return self

    @property
    def policies(self) -> dict[Timeframe, TimeframePolicy]:
        merged: dict[Timeframe, TimeframePolicy] = {}
        for tf, base in DEFAULT_POLICIES.items():
            override = self.timeframe_policy.get(tf, {})
            try:
                merged[tf] = TimeframePolicy(**{**base.model_dump(), **override})
            except ValidationError as exc:
                raise ConfigError(f"invalid TIMEFRAME_POLICY for {tf}: {exc.errors()[0]['msg']}") from exc
        return merged

    def policy(self, tf: Timeframe) -> TimeframePolicy:
        return self.policies[tf]

    def series(self, predicted_only: bool = False) -> list[tuple[str, Timeframe]]:
        """Every configured (symbol, timeframe), symbols outermost (the site's order)."""
        return [(s, tf) for s in self.target_symbols for tf in self.ingest_timeframes
                if not predicted_only or self.policy(tf).predicted]

    def narrowed(self, symbols: Iterable[str] | None = None, timeframes: Iterable[str] | None = None) -> "Settings":
        """A copy limited to ``symbols``/``timeframes`` (a CLI flag or flow parameter), validated."""
        update: dict[str, Any] = {}
        if symbols:
            update["target_symbols"] = parse_symbols(list(symbols))
        if timeframes:
            update["ingest_timeframes"] = self._timeframes(list(timeframes))
        return self.model_copy(update=update)

    @property
    def storage_budget_bytes(self) -> int:
        return int(self.storage_budget_gb * 1024**3)

    def redacted(self) -> dict[str, Any]:
        """Settings safe to log: secrets masked, URLs stripped of credentials."""
        data = self.model_dump(mode="json")
        for key, value in data.items():
            if isinstance(getattr(self, key), SecretStr) and value:
                data[key] = "**********"
            elif key.endswith("_url") and isinstance(value, str):
                data[key] = redact_url(value)
        return data


def redact_url(url: str) -> str:
    """``http://user:pass@host/x`` -> ``http://***@host/x``: credentials never reach output."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[-1]))


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, ``.env`` and overrides; errors become ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "settings"
        cause = first.get("ctx", {}).get("error")
        message = str(cause) if isinstance(cause, ConfigError) else first["msg"]
        raise ConfigError(f"invalid configuration ({where.upper()}): {message}") from exc
