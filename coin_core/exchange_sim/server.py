"""The simulated exchange: a loopback HTTP server speaking the Binance spot REST subset ccxt uses.

    with SimExchange(symbols=("BTC/USDT", "ETH/USDT")) as sim:
        exchange = ccxt.binance()
        exchange.urls["api"] = {"public": sim.base_url + "/api/v3", ...}
        sim.faults.add("rate_limit", count=2)

Time comes from ``clock`` (seconds, like :func:`time.time`), so a test can move it; candles close
as it passes. Ground truth for tests is :meth:`SimExchange.expected_closed`, and every request is
logged in :attr:`SimExchange.requests`; ``on_request`` is called as each one arrives (before it
is answered: a test can act at an exact request) and ``request_log`` as each one is answered.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .. import timeframes as tfs
from ..symbols import parse_symbol
from .faults import Faults
from .handler import BadParam, Handler
from .klines import MissingRanges, forward_opens, newest_open, select, select_opens
from .market import ERR_INVALID_SYMBOL, error_body, exchange_info, market_id, symbol_info
from .series import DEFAULT_LISTING_MS, Kline, ReplaySeries, Series, SyntheticSeries
from .wirecache import WireCache

__all__ = ["SimExchange", "RequestRecord"]

Clock = Callable[[], float]


@dataclass(frozen=True)
class RequestRecord:
    """One request: ``status`` None while it is being answered, 0 when a fault dropped it."""

    path: str
    params: dict[str, str]
    status: int | None
    fault: str | None
    at_ms: int = field(compare=False)  # simulated time of arrival
    seconds: float | None = field(default=None, compare=False)  # real time taken to answer


class SimExchange:
    """A simulated Binance spot exchange on ``http://host:port``; see the module docstring."""

    def __init__(
        self,
        symbols: Iterable[str] = ("BTC/USDT", "ETH/USDT"),
        *,
        clock: Clock | None = None,
        listing_ms: int | Mapping[str, int] | None = None,
        replay: Mapping[tuple[str, str], str | Path] | None = None,
        in_progress: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        on_request: Callable[[RequestRecord], None] | None = None,
        request_log: Callable[[RequestRecord], None] | None = None,
        latency_s: float = 0.0,
    ) -> None:
        if not 0.0 <= latency_s <= 60.0:
            raise ValueError(f"latency_s must be within [0, 60] seconds, got {latency_s}")
        #: Added to every answer (a fixed round trip, e.g. 0.1 for a distant exchange); requests
        #: wait in their own server threads, so they overlap as they would on the network.
        self.latency_s = float(latency_s)
        self.wire = WireCache()
        self._clock = clock or time.time
        self._replay = {(parse_symbol(s), tfs.parse_timeframe(tf)): Path(p) for (s, tf), p in (replay or {}).items()}
        listed = [parse_symbol(s) for s in symbols] + [s for s, _ in self._replay]
        self.symbols: list[str] = list(dict.fromkeys(listed))
        self._listing = listing_ms
        self.in_progress = in_progress
        self.faults = Faults()
        self.missing = MissingRanges()
        self._host, self._port = host, port
        self._lock = threading.Lock()
        self._series: dict[tuple[str, str], Series] = {}
        self._by_id = {market_id(s): s for s in self.symbols}
        self._log: dict[int, RequestRecord] = {}  # by arrival number (dicts keep order)
        self._started: dict[int, float] = {}
        self.on_request, self.request_log = on_request, request_log
        self._arrivals = 0
        self._weight: tuple[int, int] = (0, 0)
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def replayed(self) -> list[tuple[str, tfs.Timeframe]]:
        """The (symbol, timeframe) series served from files."""
        return list(self._replay)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        """Bind, serve in a background thread and return the base URL."""
        if self._server is not None:
            return self.base_url
        server = ThreadingHTTPServer((self._host, self._port), Handler)
        server.daemon_threads = True
        server.sim = self  # type: ignore[attr-defined]
        self._stopping.clear()
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="sim-exchange", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving; requests sleeping in a latency fault are woken up first."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "SimExchange":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulated exchange is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- market data -----------------------------------------------------------------------

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def missing_range(self, symbol: str, tf: str, start_ms: int, end_ms: int) -> None:
        """An outage: no candle with an open time in ``[start_ms, end_ms]`` exists, ever."""
        self.missing.add(parse_symbol(symbol), tfs.parse_timeframe(tf), start_ms, end_ms)

    def delist(self, symbol: str) -> None:
        """The market disappears: exchangeInfo omits it and klines answer -1121 Invalid symbol."""
        symbol = parse_symbol(symbol)
        with self._lock:
            self._by_id.pop(market_id(symbol), None)
            self.symbols = [s for s in self.symbols if s != symbol]

    def listing_ms(self, symbol: str) -> int:
        if isinstance(self._listing, Mapping):
            return int(self._listing.get(symbol, DEFAULT_LISTING_MS))
        return DEFAULT_LISTING_MS if self._listing is None else int(self._listing)

    def series(self, symbol: str, tf: tfs.Timeframe) -> Series:
        key = (parse_symbol(symbol), tf)
        with self._lock:
            found = self._series.get(key)
            if found is None:
                path = self._replay.get(key)
                found = (ReplaySeries.from_csv(path, tf) if path is not None
                         else SyntheticSeries(key[0], tf, self.listing_ms(key[0])))
                self._series[key] = found
        return found

    def klines(self, symbol: str, tf: tfs.Timeframe, start_ms: int | None, end_ms: int | None,
               limit: int) -> list[Kline]:
        """What ``GET /api/v3/klines`` returns for a unified symbol."""
        symbol = parse_symbol(symbol)
        now = self.now_ms()
        last = newest_open(now, tf, self.in_progress)
        return select(self.series(symbol, tf), start_ms, end_ms, limit, last, self.missing.get(symbol, tf), now)

    def klines_by_id(self, symbol_id: str, tf: tfs.Timeframe, start_ms: int | None, end_ms: int | None,
                     limit: int) -> list[Kline] | None:
        symbol = self._by_id.get(symbol_id)
        return None if symbol is None else self.klines(symbol, tf, start_ms, end_ms, limit)

    def klines_body(self, symbol_id: str, tf: tfs.Timeframe, start_ms: int | None, end_ms: int | None,
                    limit: int) -> bytes | None:
        """The JSON body of ``klines_by_id``, closed candles' rows from :attr:`wire` (fast path)."""
        symbol = self._by_id.get(symbol_id)
        if symbol is None:
            return None
        now = self.now_ms()
        series = self.series(symbol, tf)
        opens = select_opens(series, start_ms, end_ms, limit, newest_open(now, tf, self.in_progress),
                             self.missing.get(symbol, tf))
        rows = self.wire.rows(symbol, tf, opens, tfs.last_closed_open(now, tf) + 1, lambda ts: series.candle(ts, now))
        return b"[" + b",".join(r for r in rows if r is not None) + b"]"

    def prebuild(self, symbol: str, tf: tfs.Timeframe, start_ms: int, end_ms: int) -> int:
        """Serialise the closed candles of ``[start_ms, end_ms]`` ahead of a benchmark; returns
        how many rows are cached for the range (the cache grows to hold them all)."""
        symbol, series, now = parse_symbol(symbol), self.series(parse_symbol(symbol), tf), self.now_ms()
        self.wire.make_room(max(0, tfs.count_between(start_ms, min(end_ms, now), tf)))
        count = 0
        for ts in forward_opens(series, start_ms, self.missing.get(symbol, tf)):
            if ts > end_ms or tfs.add(ts, tf, 1) > now:
                break
            count += self.wire.row((symbol, tf, ts), True, lambda ts=ts: series.candle(ts)) is not None
        return count

    def exchange_info(self, symbol_id: str | None = None) -> dict[str, Any]:
        if symbol_id is not None and symbol_id not in self._by_id:
            raise BadParam(error_body(ERR_INVALID_SYMBOL))
        chosen = [s for s in self.symbols if symbol_id is None or market_id(s) == symbol_id]
        entries = [symbol_info(s, self._price_decimals(s)) for s in chosen]
        return exchange_info(self.now_ms(), entries)

    def _price_decimals(self, symbol: str) -> int:
        series = self.series(symbol, "1d")
        return series.price_decimals if isinstance(series, SyntheticSeries) else 2

    def expected_closed(self, symbol: str, tf: tfs.Timeframe, start_ms: int, end_ms: int,
                        now_ms: int | None = None) -> list[list[float]]:
        """Ground truth: ``[ts, o, h, l, c, v]`` of every closed candle with open in [start, end]."""
        symbol = parse_symbol(symbol)
        upper = min(end_ms, tfs.last_closed_open(self.now_ms() if now_ms is None else now_ms, tf))
        out: list[list[float]] = []
        for ts in forward_opens(self.series(symbol, tf), start_ms, self.missing.get(symbol, tf)):
            if ts > upper:
                break
            kline = self.series(symbol, tf).candle(ts)
            if kline is not None:
                out.append(kline.ohlcv())
        return out

    # -- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._log.values())

    def count(self, path: str | None = None) -> int:
        """How many requests reached ``path`` (all paths when None)."""
        with self._lock:
            return sum(1 for r in self._log.values() if path is None or r.path == path)

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, path: str, params: dict[str, str], fault: str | None) -> int:
        """Log an arriving request; returns its number for :meth:`_finish`."""
        record = RequestRecord(path, params, None, fault, self.now_ms())
        with self._lock:
            self._arrivals += 1
            self._log[self._arrivals] = record
            self._started[self._arrivals] = time.monotonic()
            number = self._arrivals
        if self.on_request is not None:
            self.on_request(record)
        return number

    def _finish(self, number: int, status: int) -> None:
        with self._lock:
            started = self._started.pop(number, None)
            record = self._log.get(number)
            if record is None:  # cleared meanwhile
                return
            record = replace(record, status=status,
                             seconds=None if started is None else time.monotonic() - started)
            self._log[number] = record
        if self.request_log is not None:
            self.request_log(record)

    def _use_weight(self, weight: int) -> int:
        """Add to the used weight of the current minute and return the total (for the header)."""
        minute = self.now_ms() // 60_000
        with self._lock:
            used = (self._weight[1] if self._weight[0] == minute else 0) + weight
            self._weight = (minute, used)
        return used

