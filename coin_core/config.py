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

    # Model lifecycle: promotion gate, live track record, demotion, retrain triggers
    gate_max_mase: float = Field(default=1.0, gt=0, description="a candidate must tie or beat naive")
    gate_coverage80_min: float = Field(default=0.75, ge=0, le=1)
    gate_coverage80_max: float = Field(default=0.85, ge=0, le=1)
    gate_min_live_points: int = Field(default=48, ge=1, description="live points on common origins before they count")
    demote_window_points: int = Field(default=168, ge=1, description="champion's latest live points judged")
    demote_max_mase: float = Field(default=1.0, gt=0, description="live MASE above this over the window demotes")
    retrain_max_age_days: float = Field(default=7.0, gt=0, description="champion age that triggers a retrain")
    retrain_new_candles: int = Field(default=168, ge=1, description="new candles since the fit that trigger one")
    retrain_drift_delta: float = Field(default=0.002, gt=0, lt=1, description="ADWIN confidence on band misses")

    # Publishing
    public_dir: Path = Path("public")
    site_title: str = "Coin Predict"

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
        if self.gate_coverage80_min > self.gate_coverage80_max:
            raise ConfigError("GATE_COVERAGE80_MIN is above GATE_COVERAGE80_MAX")
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
