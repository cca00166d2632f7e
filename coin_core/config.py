"""Typed configuration, loaded once at the edge (CLI, flow entry) and passed down.

Sources, highest first: explicit keyword arguments, environment variables, ``.env``. Every
variable and its bounds are documented in ``docs/configuration.md`` (a test keeps the two in
step). Everything is validated at load time, so a bad value stops a run before it touches the
exchange or the store, with one line naming the variable. Secrets are ``SecretStr`` so they
never print; :meth:`Settings.redacted` is what logs may show and :meth:`Settings.secret_values`
feeds :func:`coin_core.redaction.redact`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

from .errors import ConfigError
from .policy import DEFAULT_POLICIES, TimeframePolicy, merge_policy
from .symbols import parse_symbols, printable_ascii
from .timeframes import Timeframe, parse_timeframe

__all__ = ["Settings", "load_settings", "redact_url", "MAX_SYMBOLS", "MAX_LOOKBACK"]

StoreKind = Literal["sqlite", "influxdb"]
MAX_SYMBOLS = 1000  # issue 8 scales a cycle to 500 symbols; beyond 1,000 split the configuration
MAX_LOOKBACK = 5_000_000  # candles; ~570 years of 1h, more than any exchange holds
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")  # printable ASCII, no whitespace: it goes in a header
_EXCHANGE_ID = re.compile(r"[a-z][a-z0-9_]{1,31}")
_SECRET_FIELDS = ("exchange_api_key", "exchange_secret", "influxdb_token", "influxdb_password")


def _named(name: str, error: ConfigError) -> ConfigError:
    """The error of one entry, prefixed with the setting or selection it came from."""
    return ConfigError(f"{name}: {error}")


def _timeframes(value: Any, name: str) -> list[Timeframe]:
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        parsed = list(dict.fromkeys(parse_timeframe(i) for i in items if not isinstance(i, str) or i.strip(" \t")))
    except ConfigError as exc:
        raise _named(name, exc) from None
    if not parsed:
        raise ConfigError(f"{name} is empty: name at least one timeframe, e.g. 1h")
    return parsed


def _symbols(value: Any, name: str) -> list[str]:
    try:
        return parse_symbols(value, name=name)
    except ConfigError as exc:
        raise exc if "is empty" in str(exc) else _named(name, exc) from None


def _http_url(name: str, value: str) -> str:
    """An http(s) base URL with a host and nothing a base URL cannot carry (query, fragment)."""
    text = value.strip()
    # Shown without query or fragment: either may carry a credential (1.x reads ?u=..&p=..).
    shown = redact_url(re.split(r"[?#]", text)[0]) if printable_ascii(text) else "(non-printable text)"
    if not printable_ascii(text) or " " in text:
        raise ConfigError(f"invalid {name} {shown}: only printable ASCII without spaces")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a port that is not a number in 0-65535
    except ValueError as exc:
        raise ConfigError(f"invalid {name} {shown}: {exc}") from None
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.port == 0:
        raise ConfigError(f"invalid {name} {shown}: expected http(s)://host[:port][/path]")
    if "?" in text or "#" in text:
        raise ConfigError(f"invalid {name} {shown}: a base URL takes no query (?...) or fragment (#...)")
    return text


def _directory(name: str, value: Any) -> Path:
    """A directory path that exists as a directory or can be created (no file in the way)."""
    text = str(value)
    if not text.strip() or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ConfigError(f"invalid {name} {text!r}: empty or with control characters")
    path = Path(text)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"invalid {name} {text!r}: {probe} exists and is not a directory")
    return path


class Settings(BaseSettings):
    """Every setting of the product. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False,
        validate_default=True,
    )

    # What to collect
    target_symbols: Annotated[list[str], NoDecode] = Field(default=["BTC/USDT", "ETH/USDT"], max_length=MAX_SYMBOLS)
    ingest_timeframes: Annotated[list[Timeframe], NoDecode] = Field(default=["1h"])
    enable_multi_timeframes: bool = False
    timeframe_policy: Annotated[dict[Timeframe, dict[str, Any]], NoDecode] = Field(
        default_factory=dict, description="JSON overrides of the policy matrix, per timeframe"
    )

    # Exchange
    exchange_id: str = "binance"
    exchange_api_url: str | None = Field(
        default=None, description="override of the exchange's REST base (the simulated exchange)"
    )
    exchange_timeout_s: float = Field(default=10.0, ge=0.1, le=600, allow_inf_nan=False)
    exchange_max_retries: int = Field(default=5, ge=0, le=20)
    # Little's law: to keep the throttle's ~48 requests/s busy, about 48/s x (100 ms round trip
    # + ~30 ms of answer and parsing) = ~6-10 requests must be in flight; 12 leaves headroom
    # without the GIL contention that 16 threads already showed (docs/benchmarks.md).
    exchange_concurrency: int = Field(
        default=12, ge=1, le=64,
        description="series fetched at once (threads), all under the exchange's one request throttle",
    )
    # A cycle's forecasts and pages are pure CPU; in one process they share one core (the GIL).
    cpu_workers: int = Field(
        default=0, ge=0, le=64,
        description="worker processes for a cycle's forecasts and pages (0: one per core; 1: none, all in-process)",
    )
    exchange_max_clock_skew_s: float = Field(
        default=300.0, ge=1, le=86_400, allow_inf_nan=False,
        description="beyond this lead over the local clock, the exchange's is not used",
    )
    exchange_api_key: SecretStr | None = None
    exchange_secret: SecretStr | None = None

    # Storage
    store: StoreKind = "sqlite"
    data_dir: Path = Path("data")
    storage_budget_gb: float = Field(default=50.0, ge=0.001, le=1_000_000, allow_inf_nan=False)
    influxdb_url: str = "http://127.0.0.1:8086"
    influxdb_bucket: str = Field(default="coin_predict", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    influxdb_token: SecretStr | None = None
    influxdb_username: str | None = Field(default=None, max_length=256)
    influxdb_password: SecretStr | None = None
    influxdb_timeout_s: float = Field(default=30.0, ge=0.1, le=600, allow_inf_nan=False)

    forecast_retention_days: int = Field(default=90, ge=1, le=3650, description="stored forecast runs kept")

    # Scale-out (optional extra "dask"): where train/evaluate/forecast tasks run
    dask_address: str | None = Field(
        default=None, pattern=r"^(tcp|tls|ucx|inproc)://[^\s?#]+$",
        description="an existing Dask scheduler, e.g. tcp://10.0.0.5:8786 (None: no Dask)",
    )
    dask_workers: int = Field(
        default=0, ge=0, le=64,
        description="without DASK_ADDRESS: start a local Dask cluster of N process workers (0: in-process)",
    )
    # Model lifecycle: promotion gate, live track record, demotion, retrain triggers
    gate_max_mase: float = Field(default=1.0, gt=0, le=10, allow_inf_nan=False,
                                 description="a candidate must tie or beat naive")
    gate_coverage80_min: float = Field(default=0.75, ge=0, le=1, allow_inf_nan=False)
    gate_coverage80_max: float = Field(default=0.85, ge=0, le=1, allow_inf_nan=False)
    gate_min_live_points: int = Field(default=48, ge=1, le=100_000,
                                      description="live points on common origins before they count")
    demote_window_points: int = Field(default=168, ge=1, le=100_000, description="champion's latest live points judged")
    demote_max_mase: float = Field(default=1.0, gt=0, le=10, allow_inf_nan=False,
                                   description="live MASE above this over the window demotes")
    retrain_max_age_days: float = Field(default=7.0, gt=0, le=3_650, allow_inf_nan=False,
                                        description="champion age that triggers a retrain")
    retrain_new_candles: int = Field(default=168, ge=1, le=1_000_000, description="new candles since the fit that trigger one")
    retrain_drift_delta: float = Field(default=0.002, gt=0, lt=1, allow_inf_nan=False,
                                       description="ADWIN confidence on band misses")

    # Publishing
    public_dir: Path = Path("public")
    site_title: str = Field(default="Coin Predict", min_length=1, max_length=100)

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
        return _symbols(value, "TARGET_SYMBOLS")

    @field_validator("ingest_timeframes", mode="before")
    @classmethod
    def _timeframes(cls, value: Any) -> list[str]:
        return _timeframes(value, "INGEST_TIMEFRAMES")

    @field_validator("alert_block", mode="before")
    @classmethod
    def _alert_block(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("timeframe_policy", mode="before")
    @classmethod
    def _policy_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value.strip() else {}
            except ValueError as exc:
                raise ConfigError(f"TIMEFRAME_POLICY is not valid JSON: {exc}") from None
        if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
            raise ConfigError('TIMEFRAME_POLICY must be a JSON object of objects, e.g. {"1h": {"horizon": 48}}')
        try:
            return {parse_timeframe(str(k)): v for k, v in value.items()}
        except ConfigError as exc:
            raise _named("TIMEFRAME_POLICY", exc) from None

    @field_validator("exchange_id", mode="before")
    @classmethod
    def _exchange_id(cls, value: Any) -> str:
        if not isinstance(value, str) or not _EXCHANGE_ID.fullmatch(value):
            raise ConfigError(f"invalid EXCHANGE_ID {str(value)[:40]!r}: expected a ccxt id such as binance")
        return value

    @field_validator("exchange_api_url", mode="before")
    @classmethod
    def _exchange_url(cls, value: Any) -> str | None:
        return None if value is None or not str(value).strip() else _http_url("EXCHANGE_API_URL", str(value))

    @field_validator("influxdb_url", mode="before")
    @classmethod
    def _influx_url(cls, value: Any) -> str:
        return _http_url("INFLUXDB_URL", str(value))

    @field_validator("exchange_api_key", "exchange_secret", "influxdb_token", mode="before")
    @classmethod
    def _token(cls, value: Any, info: Any) -> str | None:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is None or not str(text).strip():
            return None
        text = str(text).strip()  # a trailing newline from a file or .env is never part of a token
        if not _TOKEN.fullmatch(text):
            raise ConfigError(f"invalid {str(info.field_name).upper()}: a token is printable ASCII without "
                              "spaces inside, at most 4096 characters (the value is not shown)")
        return text

    @field_validator("influxdb_password", "influxdb_username", mode="before")
    @classmethod
    def _credential(cls, value: Any, info: Any) -> str | None:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is None or not str(text).strip():
            return None
        text = str(text).strip()
        name = str(info.field_name).upper()
        if len(text) > 1024 or any(ord(c) < 32 or ord(c) == 127 for c in text) or (name.endswith("NAME") and ":" in text):
            raise ConfigError(f"invalid {name}: control characters, ':' in a user name or over 1024 characters")
        return text

    @field_validator("data_dir", "public_dir", mode="before")
    @classmethod
    def _dirs(cls, value: Any, info: Any) -> Path:
        return _directory(str(info.field_name).upper(), value)

    @field_validator("site_title")
    @classmethod
    def _title(cls, value: str) -> str:
        if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
            raise ConfigError("invalid SITE_TITLE: control characters")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if self.ingest_timeframes != ["1h"] and not self.enable_multi_timeframes:
            raise ConfigError(
                f"INGEST_TIMEFRAMES={','.join(self.ingest_timeframes)} needs "
                "ENABLE_MULTI_TIMEFRAMES=true (the default operating set is 1h only)"
            )
        data, public = self.data_dir.resolve(), self.public_dir.resolve()
        if data == public or public in data.parents:
            raise ConfigError(f"DATA_DIR ({self.data_dir}) must not be PUBLIC_DIR ({self.public_dir}) or inside "
                              "it: the store and the models would be published")
        self.policies  # validates overrides now, not at first use
        if self.gate_coverage80_min > self.gate_coverage80_max:
            raise ConfigError("GATE_COVERAGE80_MIN is above GATE_COVERAGE80_MAX")
        return self

    @property
    def policies(self) -> dict[Timeframe, TimeframePolicy]:
        return {tf: merge_policy(tf, base, self.timeframe_policy.get(tf, {})) for tf, base in DEFAULT_POLICIES.items()}

    def policy(self, tf: Timeframe) -> TimeframePolicy:
        return self.policies[tf]

    def series(self, predicted_only: bool = False) -> list[tuple[str, Timeframe]]:
        """Every configured (symbol, timeframe), symbols outermost (the site's order)."""
        return [(s, tf) for s in self.target_symbols for tf in self.ingest_timeframes
                if not predicted_only or self.policy(tf).predicted]

    def predicted_series(self) -> list[tuple[str, Timeframe]]:
        """:meth:`series` that get a model; ConfigError when there is none (e.g. only ``1m``)."""
        found = self.series(predicted_only=True)
        if not found:
            raise ConfigError(f"nothing to train or forecast: {', '.join(self.ingest_timeframes)} is never "
                              "predicted (see the policy matrix); choose 1h, 1d, 1w or 1M")
        return found

    def narrowed(self, symbols: Iterable[str] | None = None, timeframes: Iterable[str] | None = None) -> "Settings":
        """A copy limited to ``symbols``/``timeframes`` (a CLI flag or flow parameter), re-validated.

        ``None`` keeps the configured set; an empty selection, or one naming a symbol or timeframe
        that is not configured, is an error: a flag narrows the configuration, it never widens it.
        """
        update: dict[str, Any] = {}
        if symbols is not None:
            update["target_symbols"] = _subset(_symbols(symbols, "the symbols selection"),
                                               self.target_symbols, "TARGET_SYMBOLS")
        if timeframes is not None:
            update["ingest_timeframes"] = _subset(_timeframes(timeframes, "the timeframes selection"),
                                                  self.ingest_timeframes, "INGEST_TIMEFRAMES")
        return self.with_updates(**update)

    def with_updates(self, **update: Any) -> "Settings":
        """A copy with ``update`` applied and validated like a fresh load (``model_copy`` is not)."""
        try:
            return type(self).model_validate({**self.model_dump(), **update})
        except ValidationError as exc:
            raise _translate(exc) from exc

    def check_lookback(self, lookback: Any) -> int | None:
        """``None`` (each timeframe's default window) or a candle count every predicted series can use."""
        if lookback is None:
            return None
        if isinstance(lookback, bool) or not isinstance(lookback, int):
            raise ConfigError(f"invalid lookback {lookback!r}: expected a whole number of candles")
        need = max([2] + [self.policy(tf).min_samples for _, tf in self.predicted_series()])
        if not need <= lookback <= MAX_LOOKBACK:
            raise ConfigError(f"invalid lookback {lookback}: training needs at least {need} candles (the "
                              f"timeframes' min samples) and at most {MAX_LOOKBACK:,}")
        return lookback

    @property
    def storage_budget_bytes(self) -> int:
        return int(self.storage_budget_gb * 1024**3)

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds, for :func:`coin_core.redaction.redact`."""
        found = [s.get_secret_value() for s in (getattr(self, f) for f in _SECRET_FIELDS) if s is not None]
        for url in (self.exchange_api_url, self.influxdb_url):
            parts = urlsplit(url or "")
            found += [v for v in (parts.username, parts.password) if v]
        return found

    def __repr_args__(self) -> Any:
        """repr() (a log line, a traceback, a task parameter) never shows URL credentials."""
        for key, value in super().__repr_args__():
            yield key, redact_url(value) if str(key).endswith("_url") and isinstance(value, str) else value

    def redacted(self) -> dict[str, Any]:
        """Settings safe to log: secrets masked, URLs stripped of credentials."""
        data = self.model_dump(mode="json")
        for key, value in data.items():
            if isinstance(getattr(self, key), SecretStr) and value:
                data[key] = "**********"
            elif key.endswith("_url") and isinstance(value, str):
                data[key] = redact_url(value)
        return data


def _subset(wanted: list[Any], configured: list[Any], name: str) -> list[Any]:
    extra = [w for w in wanted if w not in configured]
    if extra:
        raise ConfigError(f"{', '.join(extra)} not in {name} ({','.join(configured)}): a selection narrows "
                          f"the configured set, it never adds to it; add it to {name} first")
    return wanted


def redact_url(url: str) -> str:
    """``http://user:pass@host/x`` -> ``http://***@host/x``: credentials never reach output."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[-1]))


def _translate(exc: ValidationError) -> ConfigError:
    """The first error of a ValidationError as one line naming the variable (never a secret)."""
    first = exc.errors()[0]
    loc = [str(p) for p in first.get("loc", ())]
    where = ".".join(loc).upper() or "SETTINGS"
    cause = first.get("ctx", {}).get("error")
    message = str(cause) if isinstance(cause, ConfigError) else first["msg"]
    shown = "" if not loc or loc[0] in (*_SECRET_FIELDS, "influxdb_username") else f" (got {str(first.get('input'))[:60]!r})"
    return ConfigError(f"invalid configuration ({where}): {message}{shown}")


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the environment, ``.env`` and overrides; every error becomes ConfigError."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise _translate(exc) from exc
    except (SettingsError, UnicodeDecodeError, OSError) as exc:  # a .env that cannot be read
        raise ConfigError(f"invalid configuration: {type(exc).__name__}: {str(exc)[:200]}") from exc
