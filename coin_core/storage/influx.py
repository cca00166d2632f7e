"""InfluxDB backend over the v1-compatible HTTP API: the production source of truth.

Only ``POST /write?db=..&precision=ms`` (line protocol) and ``/query?db=..&epoch=ms`` (InfluxQL)
are used, because that is the one API InfluxDB 1.x, 2.4+ (DBRP mapping, bucket = database) and
3.x all serve. ``rp`` is never sent (3.x would read it as part of the database name).

Schema, one database:

- ``candles``: tags ``symbol``, ``timeframe``; float fields ``open high low close volume``;
  time = candle open time. One point per (series, open time), so a rewrite overwrites: upserts
  are idempotent. Lines are built column-wise from validated candles, sent in batches.
- ``exchange_gaps``: same tags; time = gap start, integer field ``end_ts``.
- ``forecast_runs``: same tags plus ``role`` (champion/challenger/baseline) and ``model`` (the
  model's name); time = ``issued_at``; fields ``model_version`` (string), ``input_last_ts``
  (integer) and ``points`` (the whole forecast, both bands, as compact JSON). One point per run
  and model rather than one per forecast step, because a run must read back exactly and
  atomically: the latest champion run is ``ORDER BY time DESC LIMIT 1``, never a mix of two
  runs' steps. Runs written before roles existed have no ``role``/``model`` tags: they read back
  as champion runs (an absent tag compares equal to ``''`` in InfluxQL).

The database is created on first use (``CREATE DATABASE`` is idempotent on 1.x; on 2.x/3.x the
operator creates the bucket and the failure is tolerated). On 1.x it gets 52-week shard groups:
candle series are few and long, and 1.x's default 7-day shards would mean hundreds of shards for a
full-history backfill. ``size_bytes`` sums the 1.x ``SHOW STATS`` shard ``diskBytes`` (TSM + WAL)
of the database; where SHOW STATS is not served (2.x/3.x, or no admin rights) it falls back to
``count(candles) * 48`` bytes, a deliberately generous estimate of a compressed candle (cached
one minute, since the guard runs on every write, and grown by our own writes meanwhile).
``delete_range`` uses InfluxQL ``DELETE`` (1.x); 2.x/3.x refuse it, so retention there is the
bucket's own retention period.

Transport failures, timeouts, 429 and 5xx raise :class:`StorageUnavailableError` (retryable:
every write is an idempotent upsert, so retrying after an ambiguous timeout is safe); anything
else raises :class:`StorageError`. Credentials go in headers only (never the URL) and are
redacted from every message.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import httpx
import pandas as pd
from influxdb_client import Point, WritePrecision
from pydantic import SecretStr

from ..candles import COLUMNS, CheckedCandles
from ..errors import ConfigError, DataValidationError, StorageError, StorageUnavailableError
from ..redaction import redact
from ..symbols import parse_symbol
from ..timeframes import Timeframe, parse_timeframe
from .base import CandleStore, Forecast, ForecastRow, Role, points_payload, rows_frame

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["InfluxStore", "quote_ident", "quote_literal"]

log = logging.getLogger(__name__)

CANDLES, GAPS, FORECASTS = "candles", "exchange_gaps", "forecast_runs"
FIELDS = COLUMNS[1:]
_PAGE_ROWS = 10_000  # at or under 1.x's historical max-row-limit: a page is never truncated
_FORECAST_PAGE = 1_000  # a run is a few KiB of JSON: keep one response to a few MiB
_EST_BYTES_PER_CANDLE = 48
_MAX_STRING_FIELD = 64 * 1024 - 1  # 1.x refuses longer string fields
_DROPPED = re.compile(r"dropped=(\d+)")
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")


def quote_ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_literal(text: str) -> str:
    """An InfluxQL single-quoted string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def _tag(value: str) -> str:
    """A line-protocol tag value (symbols and timeframes are validated; escaped all the same)."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _checked_token(token: str | None) -> str | None:
    """A token goes in a header: surrounding whitespace (a file's newline) is dropped, the rest checked."""
    token = (token or "").strip() or None
    if token is not None and not _TOKEN.fullmatch(token):
        raise ConfigError("invalid InfluxDB token: printable ASCII without spaces inside (the value is not shown)")
    return token


class InfluxStore(CandleStore):
    name = "influxdb"

    def __init__(
        self, url: str, database: str, *, token: str | None = None, username: str | None = None,
        password: str | None = None, timeout_s: float = 30.0, budget_bytes: int | None = None,
        batch_size: int = 5_000,
    ) -> None:
        super().__init__(budget_bytes)
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", database):
            raise StorageError(f"invalid InfluxDB database/bucket name {database!r}")
        token = _checked_token(token)
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ConfigError(f"invalid InfluxDB URL {redact(str(url))!r}: {redact(str(exc))}") from None
        if parsed.scheme not in ("http", "https") or not parsed.host or parsed.query or parsed.fragment:
            raise ConfigError(f"invalid InfluxDB URL {redact(str(url).split('?')[0].split('#')[0])!r}: "
                              "expected http(s)://host[:port][/path], no query or fragment")
        username = username or parsed.username or None
        password = password or parsed.password or None
        self.url = str(parsed.copy_with(username=None, password=None)).rstrip("/")
        self.database = database
        self.batch_size = max(1, batch_size)
        self._secrets = [s for s in (token, password) if s]
        headers = {"Authorization": f"Token {token}"} if token else {}
        auth = httpx.BasicAuth(username, password or "") if username and not token else None
        self._client = httpx.Client(base_url=self.url, headers=headers, auth=auth, timeout=timeout_s)
        self._db_ready = False
        self._stats_supported = True
        self._estimate: tuple[float, int] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: "Settings") -> "InfluxStore":
        return cls(
            settings.influxdb_url, settings.influxdb_bucket, token=_reveal(settings.influxdb_token),
            username=settings.influxdb_username, password=_reveal(settings.influxdb_password),
            timeout_s=settings.influxdb_timeout_s, budget_bytes=settings.storage_budget_bytes,
        )

    def __repr__(self) -> str:
        return f"InfluxStore({self.url!r}, {self.database!r})"

    # ---- transport ----------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _send(self, method: str, path: str, params: dict[str, str], body: bytes | None = None) -> httpx.Response:
        for attempt in (1, 2):
            try:
                response = self._client.request(method, path, params=params, content=body)
                break
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                # A pooled keep-alive connection the server closed (restart): retry once, fresh.
                if attempt == 2:
                    raise self._unavailable(exc) from exc
            except httpx.TransportError as exc:
                raise self._unavailable(exc) from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise StorageUnavailableError(
                f"InfluxDB at {self.url} answered {response.status_code}: {self._error_text(response)}"
            )
        if response.status_code in (401, 403):
            raise StorageError(
                f"InfluxDB at {self.url} refused the credentials ({response.status_code}: "
                f"{self._error_text(response)}): check INFLUXDB_TOKEN or "
                "INFLUXDB_USERNAME/INFLUXDB_PASSWORD and their privileges"
            )
        return response

    def _unavailable(self, exc: Exception) -> StorageUnavailableError:
        detail = self._redact(f"{type(exc).__name__}: {exc}")
        return StorageUnavailableError(f"InfluxDB at {self.url} is unreachable ({detail})")

    def _error_text(self, response: httpx.Response) -> str:
        try:
            body = response.json()
            text = body.get("error") or body.get("message") or response.text
        except (ValueError, AttributeError):
            text = response.text
        return self._redact(str(text).strip()[:300]) or "(no detail)"

    def _missing_db(self) -> StorageError:
        self._db_ready = False  # someone dropped it: try to create it again next time
        return StorageError(
            f"InfluxDB database {self.database!r} not found at {self.url}: on 2.x/3.x create the "
            "bucket (and on 2.x a DBRP mapping to it) before running"
        )

    def _ensure_database(self) -> None:
        if self._db_ready:
            return
        q = f"CREATE DATABASE {quote_ident(self.database)} WITH SHARD DURATION 52w"
        try:
            response = self._send("POST", "/query", {"q": q})
            refused = self._error_text(response) if response.status_code != 200 or "error" in response.text else ""
        except StorageUnavailableError:
            raise
        except StorageError as exc:  # no admin right: the operator made the database/bucket
            refused = str(exc)
        if refused:
            log.info("CREATE DATABASE not accepted (expected on InfluxDB 2.x/3.x or without admin "
                     "rights; the database must already exist): %s", refused)
        self._db_ready = True

    def _query(self, q: str, scoped: bool = True) -> list[dict[str, Any]]:
        """Series of one InfluxQL statement; reads use GET, changes POST (1.x requires that)."""
        if scoped:
            self._ensure_database()
        method = "GET" if q.lstrip().upper().startswith(("SELECT", "SHOW")) else "POST"
        params = {"q": q, "epoch": "ms", **({"db": self.database} if scoped else {})}
        response = self._send(method, "/query", params)
        if response.status_code == 404 and scoped:
            raise self._missing_db()
        if response.status_code != 200:
            raise StorageError(f"InfluxQL query failed ({response.status_code}): {self._error_text(response)}")
        result = (response.json().get("results") or [{}])[0]
        error = result.get("error")
        if error and "database not found" in error:
            raise self._missing_db()
        if error:
            raise StorageError(f"InfluxQL error: {self._redact(error)[:300]}")
        if result.get("partial") or any(s.get("partial") for s in result.get("series", [])):
            raise StorageError("InfluxDB truncated a result: raise [http] max-row-limit to 10000 or more (or 0)")
        return result.get("series", [])

    def _write_lines(self, lines: list[str], what: str) -> None:
        self._ensure_database()
        for done in range(0, len(lines), self.batch_size):
            batch = lines[done:done + self.batch_size]
            params = {"db": self.database, "precision": "ms"}
            response = self._send("POST", "/write", params, "\n".join(batch).encode("utf-8"))
            if response.status_code in (200, 204):
                continue
            error = self._error_text(response)
            if response.status_code == 404 or "database not found" in error:
                raise self._missing_db()
            if response.status_code in (400, 422) and "partial" in error:
                dropped = _DROPPED.search(error)
                count = dropped.group(1) if dropped else "an unknown number"
                raise StorageError(
                    f"InfluxDB dropped {count} of {len(batch)} point(s) of {what} (partial write; "
                    f"{done} earlier point(s) were stored, rewriting is safe): {error}"
                )
            raise StorageError(f"InfluxDB refused a write of {what} ({response.status_code}): {error}")

    # ---- InfluxQL helpers ---------------------------------------------------------------
    @staticmethod
    def _where(symbol: str, tf: Timeframe, start: int | None = None, end: int | None = None) -> str:
        clause = (f"{quote_ident('symbol')} = {quote_literal(symbol)} "
                  f"AND {quote_ident('timeframe')} = {quote_literal(tf)}")
        if start is not None:
            clause += f" AND time >= {int(start)}ms"
        if end is not None:
            clause += f" AND time <= {int(end)}ms"
        return clause

    def _select_candles(self, symbol: str, tf: Timeframe, start: int | None, end: int | None,
                        limit: int, descending: bool = False) -> pd.DataFrame:
        """Up to ``limit`` candles, fetched in sub-pages of at most _PAGE_ROWS rows."""
        fields = ",".join(quote_ident(f) for f in FIELDS)
        order = "DESC" if descending else "ASC"
        rows: list[list[Any]] = []
        while len(rows) < limit:
            n = min(limit - len(rows), _PAGE_ROWS)
            q = (f"SELECT {fields} FROM {quote_ident(CANDLES)} WHERE {self._where(symbol, tf, start, end)} "
                 f"ORDER BY time {order} LIMIT {n}")
            series = self._query(q)
            page = series[0]["values"] if series else []
            rows += page
            if len(page) < n:
                break
            if descending:
                end = int(page[-1][0]) - 1
            else:
                start = int(page[-1][0]) + 1
        return rows_frame(rows[::-1] if descending else rows)  # ascending either way: no sort after

    # ---- candles ------------------------------------------------------------------------
    def _write_candles(self, symbol: str, tf: Timeframe, candles: CheckedCandles) -> None:
        # Line protocol built directly: a validated float is finite, and repr() is its shortest
        # exact decimal form, which InfluxDB reads back bit for bit.
        head = f"{CANDLES},symbol={_tag(symbol)},timeframe={_tag(tf)} "
        columns = (c.tolist() for c in candles.values.T)  # column lists: no list per row for the GC to chase
        lines = [f"{head}open={o!r},high={h!r},low={l!r},close={c!r},volume={v!r} {ts}"
                 for ts, o, h, l, c, v in zip(candles.ts.tolist(), *columns)]
        self._write_lines(lines, f"{symbol} {tf}")
        with self._lock:  # keep a cached size estimate growing with our own writes
            if self._estimate:
                self._estimate = (self._estimate[0], self._estimate[1] + len(lines) * _EST_BYTES_PER_CANDLE)

    def _read_page(self, symbol: str, tf: Timeframe, start: int | None, end: int | None, limit: int) -> pd.DataFrame:
        return self._select_candles(symbol, tf, start, end, limit)

    def _read_tail(self, symbol: str, tf: Timeframe, n: int) -> pd.DataFrame:
        return self._select_candles(symbol, tf, None, None, n, descending=True)

    def _bounds(self, symbol: str, tf: Timeframe) -> tuple[int, int] | None:
        found: list[int] = []
        for order in ("ASC", "DESC"):
            q = (f"SELECT {quote_ident('close')} FROM {quote_ident(CANDLES)} "
                 f"WHERE {self._where(symbol, tf)} ORDER BY time {order} LIMIT 1")
            series = self._query(q)
            if not series:
                return None
            found.append(int(series[0]["values"][0][0]))
        return found[0], found[1]

    def _count(self, symbol: str, tf: Timeframe, start: int | None, end: int | None) -> int:
        q = (f"SELECT count({quote_ident('close')}) FROM {quote_ident(CANDLES)} "
             f"WHERE {self._where(symbol, tf, start, end)}")
        series = self._query(q)
        return int(series[0]["values"][0][1]) if series else 0

    def _delete(self, symbol: str, tf: Timeframe, start: int | None, end: int) -> None:
        self._query(f"DELETE FROM {quote_ident(CANDLES)} WHERE {self._where(symbol, tf, start, end)}")
        self._estimate = None

    # ---- gaps and forecasts -------------------------------------------------------------
    def _point(self, measurement: str, symbol: str, tf: Timeframe, ts: int) -> Point:
        return Point(measurement).tag("symbol", symbol).tag("timeframe", tf).time(int(ts), WritePrecision.MS)

    def _write_gap(self, symbol: str, tf: Timeframe, start: int, end: int) -> None:
        point = self._point(GAPS, symbol, tf, start).field("end_ts", int(end))
        self._write_lines([point.to_line_protocol()], f"known gap of {symbol} {tf}")

    def _read_gaps(self, symbol: str, tf: Timeframe) -> list[tuple[int, int]]:
        q = f"SELECT {quote_ident('end_ts')} FROM {quote_ident(GAPS)} WHERE {self._where(symbol, tf)}"
        series = self._query(q)
        return [(int(t), int(e)) for t, e in (series[0]["values"] if series else [])]

    def _write_forecast(self, forecast: Forecast) -> None:
        payload = json.dumps(points_payload(forecast.points), separators=(",", ":"), allow_nan=False)
        if len(payload.encode("utf-8")) > _MAX_STRING_FIELD:
            raise DataValidationError(
                f"forecast of {forecast.symbol} {forecast.timeframe} is too large for InfluxDB (>64 KiB)"
            )
        point = (self._point(FORECASTS, forecast.symbol, forecast.timeframe, forecast.issued_at)
                 .tag("role", forecast.role).tag("model", forecast.model)
                 .field("model_version", str(forecast.model_version))
                 .field("input_last_ts", int(forecast.input_last_ts)).field("points", payload))
        self._write_lines([point.to_line_protocol()], f"forecast of {forecast.symbol} {forecast.timeframe}")

    def _delete_forecasts(self, symbol: str, tf: Timeframe, issued_before: int) -> None:
        self._query(f"DELETE FROM {quote_ident(FORECASTS)} WHERE {self._where(symbol, tf, None, issued_before - 1)}")

    @staticmethod
    def _role_clause(role: Role | None) -> str:
        if role is None:
            return ""
        clause = f"{quote_ident('role')} = {quote_literal(role)}"
        if role == "champion":  # runs stored before roles existed carry no role tag
            clause = f"({clause} OR {quote_ident('role')} = '')"
        return f" AND {clause}"

    def _select_forecasts(self, symbol: str, tf: Timeframe, where: str, tail: str = "") -> list[ForecastRow]:
        fields = ",".join(quote_ident(f) for f in ("model_version", "input_last_ts", "points", "role", "model"))
        q = f"SELECT {fields} FROM {quote_ident(FORECASTS)} WHERE {where}"
        rows: list[list[Any]] = []
        if tail:
            series = self._query(q + tail)
            rows = series[0]["values"] if series else []
        while not tail:  # pages by offset: runs of one snapshot share a timestamp
            series = self._query(f"{q} ORDER BY time ASC LIMIT {_FORECAST_PAGE} OFFSET {len(rows)}")
            page = series[0]["values"] if series else []
            rows += page
            if len(page) < _FORECAST_PAGE:
                break
        return [(int(issued_at), role or "champion", model or "", str(version), int(last_ts), points)
                for issued_at, version, last_ts, points, role, model in rows]

    def _read_latest_forecast(self, symbol: str, tf: Timeframe, role: Role) -> ForecastRow | None:
        found = self._select_forecasts(symbol, tf, self._where(symbol, tf) + self._role_clause(role),
                                       " ORDER BY time DESC LIMIT 1")
        return found[0] if found else None

    def _read_forecasts(self, symbol: str, tf: Timeframe, start: int | None, end: int | None,
                        role: Role | None) -> list[ForecastRow]:
        return self._select_forecasts(symbol, tf, self._where(symbol, tf, start, end) + self._role_clause(role))

    # ---- housekeeping -------------------------------------------------------------------
    def _series(self) -> list[tuple[str, Timeframe]]:
        # Raw query with LIMIT per group: reads one point per series, and lists only series
        # that still hold a candle (1.x keeps fully deleted series in its index).
        q = (f"SELECT {quote_ident('close')} FROM {quote_ident(CANDLES)} "
             f"GROUP BY {quote_ident('symbol')},{quote_ident('timeframe')} ORDER BY time DESC LIMIT 1")
        found: list[tuple[str, Timeframe]] = []
        for item in self._query(q):
            tags = item.get("tags", {})
            try:
                found.append((parse_symbol(tags.get("symbol", "")), parse_timeframe(tags.get("timeframe", ""))))
            except ConfigError:  # a foreign series in the bucket is not ours to list
                log.warning("ignoring candle series with unexpected tags %s", tags)
        return found

    def _size_bytes(self) -> int:
        if self._stats_supported:
            try:
                shards = self._query("SHOW STATS FOR 'shard'", scoped=False)
                return sum(int(s["values"][0][s["columns"].index("diskBytes")])
                           for s in shards if s.get("tags", {}).get("database") == self.database)
            except StorageUnavailableError:
                raise
            except (StorageError, KeyError, ValueError, IndexError) as exc:
                log.info("SHOW STATS unavailable (%s): estimating the store size from its candle count", exc)
                self._stats_supported = False
        return self._estimated_size()

    def _estimated_size(self) -> int:
        with self._lock:
            if self._estimate and time.monotonic() - self._estimate[0] < 60:
                return self._estimate[1]
        series = self._query(f"SELECT count({quote_ident('close')}) FROM {quote_ident(CANDLES)}")
        size = int(series[0]["values"][0][1]) * _EST_BYTES_PER_CANDLE if series else 0
        with self._lock:
            self._estimate = (time.monotonic(), size)
        return size

    def ping(self) -> None:
        response = self._send("GET", "/ping", {})
        if response.status_code >= 300:
            raise StorageError(f"InfluxDB at {self.url} answered /ping with {response.status_code}")

    def close(self) -> None:
        self._client.close()
