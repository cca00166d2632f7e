"""Exchange clients for concurrent ingest: one ccxt client per thread, one throttle for all.

A ccxt instance is not thread-safe (it keeps the last response, headers and its throttle
timestamp on itself), so :class:`ClientPool` hands every thread its own
:class:`~coin_core.exchange.ExchangeClient`. They share what must be shared: the exchange's
request budget (:func:`coin_core.throttle.throttle_for`, one per exchange endpoint per process)
and one market snapshot (the exchange's market list is loaded once per pool, not per thread).
"""

from __future__ import annotations

import threading
from typing import Any, Mapping

from .config import Settings
from .exchange import ExchangeClient
from .throttle import SharedThrottle, throttle_for

__all__ = ["ClientPool"]


class ClientPool:
    """Thread-local clients of one exchange behind one throttle; a context manager.

    Building the pool loads the markets (one ``exchangeInfo`` request) unless ``markets`` is a
    snapshot already (e.g. cached by a flow); it raises the exchange's error when it cannot.
    ``rate_limit_ms`` overrides ccxt's ``rateLimit`` (tests, benchmarks); None keeps ccxt's.
    """

    def __init__(self, settings: Settings, *, markets: Mapping[str, dict[str, Any]] | None = None,
                 rate_limit_ms: int | None = None) -> None:
        self._settings, self._rate = settings, rate_limit_ms
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[ExchangeClient] = []
        lead = self._new(markets)
        key = f"{settings.exchange_id}|{settings.exchange_api_url or 'default'}|{lead.rate_limit_ms}"
        self.throttle: SharedThrottle = throttle_for(key, lead.rate_limit_ms)
        lead.share_throttle(self.throttle.wait)
        try:
            self.markets: dict[str, dict[str, Any]] = (dict(markets) if markets else
                                                       lead.market_snapshot(settings.target_symbols))
        except BaseException:
            self.close()
            raise
        self._local.client = self._lead = lead
        self.clock_note = None

    def _new(self, markets: Mapping[str, dict[str, Any]] | None) -> ExchangeClient:
        client = ExchangeClient(self._settings, rate_limit_ms=self._rate, markets=markets)
        with self._lock:
            self._clients.append(client)
        return client

    @property
    def listed(self) -> set[str]:
        """The configured symbols the exchange lists."""
        return set(self.markets)

    def client(self) -> ExchangeClient:
        """This thread's client (created on first use, with the pool's throttle and markets)."""
        client: ExchangeClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self._new(None)
            client.share_markets(self._lead)
            client.share_throttle(self.throttle.wait)
            self._local.client = client
        return client

    def now_ms(self) -> int:
        """The exchange's clock, read once for a run (skew-bounded by the client; a note on a
        large skew is kept in :attr:`clock_note` for every series' report)."""
        client = self.client()
        now = client.now_ms()
        self.clock_note: str | None = client.clock_note
        return now

    def close(self) -> None:
        """Close every thread's HTTP session."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    def __enter__(self) -> "ClientPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
