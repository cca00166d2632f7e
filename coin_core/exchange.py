"""The one place that touches ccxt: markets, exchange time and OHLCV pages, with retries.

Error translation at this boundary (ccxt -> :mod:`coin_core.errors`):

* ``ccxt.OperationFailed`` and its subclasses — ``NetworkError``, ``RequestTimeout``,
  ``RateLimitExceeded``/``DDoSProtection`` (429/418), ``ExchangeNotAvailable``/``OnMaintenance``
  (5xx), Binance ``-1001`` — are *transient*: retried with exponential backoff and jitter,
  honouring ``Retry-After``, at most ``EXCHANGE_MAX_RETRIES`` times, then
  :class:`TransientExchangeError`. A ``Retry-After`` longer than the backoff cap (an IP ban)
  is not slept through: it fails at once with ``retry_after`` set, for the scheduler to retry.
* every other ccxt error — ``BadSymbol``, ``BadRequest``, ``AuthenticationError``,
  ``PermissionDenied``, ``NotSupported``, plain ``ExchangeError`` — is *permanent*:
  :class:`PermanentExchangeError` at once, no retry.
* an HTTP 200 answer that is not what the endpoint returns — an HTML page, truncated JSON, an
  empty body, for Binance klines anything but a JSON list — is *transient* too (a proxy or a cut
  connection, not the market): ccxt would read it as "no candles", which is never true here.

Each klines row is parsed by ccxt's own row parser but not filtered by it: ccxt drops rows whose
open time is missing, zero or before ``since``, and those would silently leave a hole that looks
like an exchange gap. Rows that are not lists of at least 6 values are passed on as they are,
for validation to count.

Ingest reads pages through :meth:`ExchangeClient.fetch_klines`: for a Binance spot market it
asks ccxt's implicit ``publicGetKlines`` endpoint (the same ccxt request path: throttle and
endpoint cost, signing, error mapping, rate-limit handling) and converts the answer column-wise
with numpy instead of row by row, which was a third of a page's client CPU. The conversion is
the one ccxt's row parser does (an integer open time, numbers as :func:`float` reads them); a
page holding any value of another type goes through ccxt's parser row by row, as before.

The exchange's clock decides which candles are closed, but only within
``EXCHANGE_MAX_CLOCK_SKEW_S`` of the local clock: an exchange clock further ahead would make the
in-progress candle look closed, so the local clock is used then (and the skew reported).

Messages never carry the API key or secret: both are redacted, and when a lower-level message
contained one, the ccxt exception is not chained either.
"""

from __future__ import annotations

import logging
import random
import time
from email.utils import parsedate_to_datetime
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit

import ccxt
import numpy as np

from . import timeframes as tfs
from .candles import rows_matrix
from .config import Settings
from .errors import ConfigError, PermanentExchangeError, TransientExchangeError
from .redaction import redact
from .symbols import check_listed, parse_symbol

__all__ = ["ExchangeClient", "KlinePage", "MAX_PAGE"]

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_PAGE = 1000  # Binance's spot klines maximum; ccxt clamps to it as well
_MAX_MESSAGE = 400


class MalformedAnswer(ccxt.OperationFailed):
    """An HTTP 200 answer that is not the endpoint's payload: retried like a network error."""


@dataclass(frozen=True)
class KlinePage:
    """One klines answer for validation: ``matrix`` holds the rows that are lists of at least 6
    values as ``[ts, o, h, l, c, v]`` float64 (NaN where a value is not a number); ``malformed``
    counts the other rows (answered, but not candles)."""

    matrix: np.ndarray
    malformed: int = 0

    def __len__(self) -> int:
        return len(self.matrix) + self.malformed


def _page_of(rows: Sequence[Any]) -> KlinePage:
    whole = [r for r in rows if isinstance(r, (list, tuple)) and len(r) >= 6]
    return KlinePage(rows_matrix(whole), len(rows) - len(whole))


def _wire_matrix(whole: list[list[Any]]) -> np.ndarray | None:
    """Binance's wire rows (integer open time, five numeric strings) as a matrix; None when any
    value has another type or does not read as a number (ccxt's row parser decides those)."""
    if not whole:
        return np.empty((0, 6))
    columns = list(zip(*whole))[:6]
    if set(map(type, columns[0])) != {int} or any(set(map(type, c)) != {str} for c in columns[1:]):
        return None
    try:
        return np.array(columns, dtype=np.float64).T
    except (ValueError, OverflowError):
        return None


def _describe(body: object) -> str:
    """A short, printable account of an unusable answer body."""
    if body is None or body == "":
        return "an empty body"
    if isinstance(body, (bytes, str)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        return f"{len(text)} characters starting {' '.join(text[:40].split())!r}"
    return f"a JSON {type(body).__name__}"


def _point_urls_at(exchange: ccxt.Exchange, base_url: str) -> None:
    """Keep each REST URL's path but send it to ``base_url`` (e.g. the simulated exchange)."""
    parts = urlsplit(base_url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ConfigError(f"invalid EXCHANGE_API_URL {base_url!r}: expected http(s)://host[:port]")
    root = base_url.rstrip("/")
    api = exchange.urls.get("api")
    if isinstance(api, str):
        exchange.urls["api"] = root + urlsplit(api).path
    elif isinstance(api, dict):
        exchange.urls["api"] = {k: root + urlsplit(v).path for k, v in api.items() if isinstance(v, str)}
    else:
        raise ConfigError(f"{exchange.id} has no REST URL table to override with EXCHANGE_API_URL")


def _build(settings: Settings, rate_limit_ms: int | None) -> ccxt.Exchange:
    cls = getattr(ccxt, settings.exchange_id, None)
    if not (isinstance(cls, type) and issubclass(cls, ccxt.Exchange)):
        raise ConfigError(f"unknown EXCHANGE_ID {settings.exchange_id!r}: not an exchange ccxt supports")
    config: dict[str, Any] = {"enableRateLimit": True, "timeout": int(settings.exchange_timeout_s * 1000),
                              "enableLastJsonResponse": True, "enableLastHttpResponse": True}
    if rate_limit_ms is not None:
        config["rateLimit"] = rate_limit_ms
    if settings.exchange_api_key is not None:
        config["apiKey"] = settings.exchange_api_key.get_secret_value()
    if settings.exchange_secret is not None:
        config["secret"] = settings.exchange_secret.get_secret_value()
    exchange: ccxt.Exchange = cls(config)
    if isinstance(exchange, ccxt.binance):
        # Spot only: no futures/options exchangeInfo, no margin pairs, no sapi currencies call
        # (private, and absent from the simulated exchange).
        exchange.options["fetchMarkets"] = {"types": ["spot"], "loadAllOptions": False}
        exchange.options["fetchCurrencies"] = False
        exchange.options["fetchMargins"] = False
    if settings.exchange_api_url:
        _point_urls_at(exchange, settings.exchange_api_url)
    return exchange


def _parse_retry_after(raw: str | None) -> float | None:
    """``Retry-After`` is seconds or an HTTP date; None when absent or unreadable."""
    if raw is None or not str(raw).strip():
        return None
    text = str(raw).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class ExchangeClient:
    """A ccxt exchange configured from :class:`Settings`, with retries and error translation.

    ``sleep``, ``backoff_base_s``/``backoff_cap_s``, ``rng`` and ``clock`` (the local clock, seconds
    like :func:`time.time`) are injectable so tests are fast and deterministic; ``rate_limit_ms``
    overrides ccxt's throttle interval (None keeps ccxt's).
    Like the ccxt instance it wraps, a client is not shared between threads: use one per thread.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        rate_limit_ms: int | None = None,
        rng: random.Random | None = None,
        markets: Mapping[str, dict[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.exchange_id = settings.exchange_id
        self._max_retries = settings.exchange_max_retries
        self._sleep = sleep
        self._base, self._cap = backoff_base_s, backoff_cap_s
        self._rng = rng or random.Random()
        self._clock = clock
        self._max_skew_ms = int(settings.exchange_max_clock_skew_s * 1000)
        self.clock_note: str | None = None
        """Set by :meth:`now_ms` when the exchange's clock was beyond the skew bound."""
        self._secrets = settings.secret_values()
        self._exchange = _build(settings, rate_limit_ms)
        self._markets: list[str] | None = None
        if markets:
            # A snapshot from market_snapshot() (e.g. cached by the flow): no exchangeInfo request.
            self._exchange.set_markets(list(markets.values()))
            self._markets = sorted(markets)

    def share_markets(self, lead: "ExchangeClient") -> None:
        """Use ``lead``'s parsed markets (read-only, so threads may share them) instead of parsing
        a snapshot again: ccxt's ``set_markets`` of 500 markets took 0.14 s under cProfile, paid by
        every ingest thread before its first request."""
        if lead._exchange.markets is None:
            lead.markets()
        self._exchange.set_markets_from_exchange(lead._exchange)
        self._markets = lead._markets

    # -- public API ------------------------------------------------------------------------

    def markets(self) -> list[str]:
        """Unified symbols of the active spot markets (loaded once per client)."""
        if self._markets is None:
            loaded = self._call("load_markets", self._answered, self._exchange.load_markets, True,
                                shape=lambda raw: isinstance(raw, dict) and isinstance(raw.get("symbols"), list),
                                expected="an exchangeInfo object with a symbols list")
            self._markets = sorted(
                s for s, m in loaded.items() if m.get("spot") and m.get("active") is not False
            )
        return list(self._markets)

    def market_snapshot(self, symbols: Iterable[str]) -> dict[str, dict[str, Any]]:
        """ccxt's market structures of the listed ones among ``symbols`` (small, picklable).

        Another client built with ``markets=`` this snapshot trades nothing and fetches candles
        of those symbols without loading the exchange's whole market list again.
        """
        listed = set(self.markets())
        return {s: self._exchange.markets[s] for s in (parse_symbol(x) for x in symbols) if s in listed}

    def check_symbols(self, symbols: Iterable[str]) -> None:
        """ConfigError naming every symbol the exchange does not list."""
        check_listed([parse_symbol(s) for s in symbols], self.markets(), self.exchange_id)

    def now_ms(self) -> int:
        """The exchange's clock when it has one and it is not ahead of the local one by more
        than the skew bound; otherwise the local clock (closed-candle decisions use this)."""
        local = int(self._clock() * 1000)
        self.clock_note = None
        if not self._exchange.has.get("fetchTime"):
            return local
        value = self._call("fetch_time", self._answered, self._exchange.fetch_time,
                           shape=lambda raw: isinstance(raw, dict) and isinstance(raw.get("serverTime"), int),
                           expected="an object with an integer serverTime")
        if not isinstance(value, int) or isinstance(value, bool):
            return local  # another exchange's shape ccxt could not read a time from
        skew = value - local
        if abs(skew) <= self._max_skew_ms:
            return value
        # Ahead: trusting it would take in-progress candles as closed. Behind is the safe side
        # (no candle is taken as closed before the exchange itself closes it), so it is kept.
        use = "the local clock is used" if skew > 0 else "its clock is kept (the safe side)"
        self.clock_note = (f"exchange clock {abs(skew) / 1000:,.0f} s {'ahead of' if skew > 0 else 'behind'} "
                           f"the local clock (bound {self._max_skew_ms / 1000:,.0f} s): {use}")
        log.warning("%s %s", self.exchange_id, self.clock_note)
        return local if skew > 0 else value

    def fetch_ohlcv(self, symbol: str, tf: str, since: int | None, limit: int = MAX_PAGE,
                    until: int | None = None) -> list[list[Any]]:
        """One page of raw ccxt OHLCV rows ``[ts, o, h, l, c, v]``, oldest first.

        Rows are returned as parsed by ccxt, unvalidated and unfiltered (a malformed value is
        ``None``; a row that is not a list of at least 6 values is passed on as it came):
        :func:`coin_core.candles.validate_candles` decides what is stored. An answer that is not
        a list of rows raises :class:`TransientExchangeError` after the retries.
        """
        symbol, timeframe = parse_symbol(symbol), tfs.parse_timeframe(tf)
        if limit < 1:
            raise ConfigError(f"fetch_ohlcv limit must be >= 1, got {limit}")
        self.markets()
        params = {} if until is None else {"until": int(until)}
        what = f"fetch_ohlcv {symbol} {timeframe}"
        return self._call(what, self._page, symbol, timeframe, since, min(limit, MAX_PAGE), params)

    def fetch_klines(self, symbol: str, tf: str, since: int | None, limit: int = MAX_PAGE,
                     until: int | None = None) -> KlinePage:
        """One page as :meth:`fetch_ohlcv` answers it, as a :class:`KlinePage` for validation."""
        symbol, timeframe = parse_symbol(symbol), tfs.parse_timeframe(tf)
        self.markets()
        market = self._exchange.markets.get(symbol) if self._exchange.markets else None
        if not (isinstance(self._exchange, ccxt.binance) and market and market.get("spot") and limit >= 1):
            return _page_of(self.fetch_ohlcv(symbol, timeframe, since, limit, until))
        # The request ccxt's binance.fetch_ohlcv sends for a spot market, parameters in its order.
        request: dict[str, Any] = {"interval": self._exchange.safe_string(self._exchange.timeframes, timeframe, timeframe),
                                   "limit": min(limit, MAX_PAGE), "symbol": market["id"]}
        if since is not None:
            request["startTime"] = int(since)
        if until is not None:
            request["endTime"] = int(until)
        return self._call(f"fetch_ohlcv {symbol} {timeframe}", self._klines, market, request)

    def _klines(self, market: dict[str, Any], request: dict[str, Any]) -> KlinePage:
        raw = self._answered(self._exchange.publicGetKlines, request,
                             shape=lambda raw: isinstance(raw, list), expected="a list of klines")
        whole = [r for r in raw if isinstance(r, list) and len(r) >= 6]
        matrix = _wire_matrix(whole)
        if matrix is None:
            matrix = rows_matrix([self._exchange.parse_ohlcv(r, market) for r in whole])
        return KlinePage(matrix, len(raw) - len(whole))

    def _answered(self, fn: Callable[..., T], *args: Any, shape: Callable[[Any], bool], expected: str) -> T:
        """Call ccxt, then check the answer it read was JSON and, from Binance, of ``shape``:
        ccxt reads an HTML page or ``{}`` as "nothing", which is never what the endpoint says."""
        try:
            result = fn(*args)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as exc:
            raise MalformedAnswer(f"unparsable answer ({type(exc).__name__}: {exc})") from exc
        raw = self._exchange.last_json_response
        if raw is None:
            body = _describe(self._exchange.last_http_response)
            raise MalformedAnswer(f"HTTP 200 answer is not a JSON object or list: {body}")
        if isinstance(self._exchange, ccxt.binance) and not shape(raw):
            raise MalformedAnswer(f"HTTP 200 answer is {_describe(raw)}, not {expected}")
        return result

    def _page(self, symbol: str, timeframe: str, since: int | None, limit: int, params: dict[str, Any]) -> list[Any]:
        rows = self._answered(self._exchange.fetch_ohlcv, symbol, timeframe, since, limit, params,
                              shape=lambda raw: isinstance(raw, list), expected="a list of klines")
        raw = self._exchange.last_json_response
        if not isinstance(self._exchange, ccxt.binance):
            return [list(r) for r in rows]  # another wire shape: ccxt's parse is all there is
        whole = [isinstance(r, list) and len(r) >= 6 for r in raw]
        if len(rows) == len(raw) and all(whole):
            return [list(r) for r in rows]  # ccxt dropped nothing: its parse is the one (~30 ms a page)
        market = self._exchange.market(symbol)
        return [self._exchange.parse_ohlcv(r, market) if ok else r for r, ok in zip(raw, whole)]

    def earliest_ts(self, symbol: str, tf: str) -> int | None:
        """Open time of the first candle the exchange has for the series (None: no data)."""
        rows = self.fetch_ohlcv(symbol, tf, since=0, limit=1)
        if not rows:
            return None
        first = rows[0][0] if isinstance(rows[0], list) and rows[0] else None
        if not isinstance(first, int) or isinstance(first, bool) or first < 0:
            raise TransientExchangeError(f"{self.exchange_id} fetch_ohlcv {symbol} {tf}: first candle has an "
                                         f"unusable open time {str(first)[:40]!r}")
        return tfs.floor(first, tfs.parse_timeframe(tf))

    @property
    def rate_limit_ms(self) -> float:
        """ccxt's own spacing of this exchange's requests (``rateLimit``, before endpoint cost)."""
        return float(self._exchange.rateLimit)

    def share_throttle(self, wait: Callable[[float | None], None]) -> None:
        """Space this client's requests with ``wait(cost)`` instead of its own per-instance
        throttle: clients of several threads then share one request budget (coin_core.throttle)."""
        self._exchange.throttle = wait

    def close(self) -> None:
        """Release the HTTP session."""
        session = getattr(self._exchange, "session", None)
        if session is not None:
            session.close()

    def __enter__(self) -> "ExchangeClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- retries and translation -----------------------------------------------------------

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        attempt = 0
        while True:
            attempt += 1
            self._exchange.last_response_headers = None  # a stale header must not steer a retry
            try:
                return fn(*args, **kwargs)
            except ccxt.OperationFailed as exc:
                retry_after = self._retry_after()
                if attempt > self._max_retries or (retry_after or 0.0) > self._cap:
                    error = TransientExchangeError(self._message(what, exc, attempt), retry_after)
                    raise error from self._cause(exc)
                self._sleep(self._delay(attempt, retry_after))
            except ccxt.BaseError as exc:
                raise PermanentExchangeError(self._message(what, exc, attempt)) from self._cause(exc)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with equal jitter, never shorter than the server's Retry-After."""
        backoff = min(self._cap, self._base * 2 ** (attempt - 1))
        jittered = backoff / 2 + self._rng.uniform(0, backoff / 2)
        return min(self._cap, max(jittered, retry_after or 0.0))

    def _retry_after(self) -> float | None:
        headers = self._exchange.last_response_headers or {}
        raw = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
        return _parse_retry_after(raw)

    def _redact(self, text: str) -> str:
        return redact(text, self._secrets)

    def _cause(self, exc: BaseException) -> BaseException | None:
        """Chain the ccxt error unless its text (or its own cause's) holds a secret."""
        texts = [str(exc), repr(exc.__cause__), repr(exc.__context__)]
        return None if any(self._redact(t) != t for t in texts) else exc

    def _message(self, what: str, exc: BaseException, attempts: int) -> str:
        detail = " ".join(self._redact(str(exc)).split())
        if len(detail) > _MAX_MESSAGE:
            detail = detail[:_MAX_MESSAGE] + "..."
        tries = f" after {attempts} attempt(s)" if attempts > 1 else ""
        return f"{self.exchange_id} {what} failed{tries}: {type(exc).__name__}: {detail}"
