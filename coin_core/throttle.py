"""One request throttle per exchange, shared by every ccxt client of the process.

ccxt's synchronous throttle spaces the requests of ONE client instance (``rateLimit`` ms times
the endpoint's cost since that client's previous request). A ccxt instance is not thread-safe,
so concurrent ingest gives every thread its own client; left alone, N clients would then send N
times the exchange's budget. :class:`SharedThrottle` replaces each client's ``throttle`` with one
spacing schedule: a request reserves the next free slot (``interval × cost`` after the previous
reservation) under a lock and sleeps until it, so the process as a whole sends at exactly the
rate one client would, while round trips overlap instead of queueing behind each other.

Why threads and not ``ccxt.async_support``: the stores (SQLite, the InfluxDB HTTP client), the
validation and the ingest logic are synchronous and shared with the CLI; an async ingest would
duplicate them. The round trip is I/O (the GIL is released), and the reservation is the same
arithmetic ccxt's own throttle does, so the request budget is what ccxt would allow one client.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

__all__ = ["SharedThrottle", "throttle_for"]


class SharedThrottle:
    """Spacing schedule of one exchange: at most one request per ``interval_ms × cost``."""

    def __init__(self, interval_ms: float, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if interval_ms < 0:
            raise ValueError(f"throttle interval must be >= 0 ms, got {interval_ms}")
        self.interval_ms = float(interval_ms)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_s = 0.0  # the earliest start of the next request
        self.requests = 0
        self.cost = 0.0  # sum of the costs reserved (for the ceiling a benchmark reports)
        self.booked: deque[float] = deque(maxlen=1024)  # the latest slot starts (clock seconds)

    def reserve(self, cost: float | None = None) -> float:
        """Book the next slot; returns how many seconds the caller must wait for it."""
        cost = 1.0 if cost is None else float(cost)
        with self._lock:
            now = self._clock()
            start = max(now, self._next_s)
            self._next_s = start + self.interval_ms * cost / 1000.0
            self.requests += 1
            self.cost += cost
            self.booked.append(start)
        return start - now

    def wait(self, cost: float | None = None) -> None:
        """ccxt's ``throttle(cost)`` hook: block until this request's slot."""
        delay = self.reserve(cost)
        if delay > 0:
            self._sleep(delay)

    def mean_interval_ms(self) -> float:
        """The mean spacing of the requests booked so far (rateLimit × mean cost)."""
        return self.interval_ms * self.cost / self.requests if self.requests else self.interval_ms


_REGISTRY: dict[str, SharedThrottle] = {}
_REGISTRY_LOCK = threading.Lock()


def throttle_for(key: str, interval_ms: float) -> SharedThrottle:
    """The process's one throttle of an exchange endpoint (``key``), created on first use."""
    with _REGISTRY_LOCK:
        found = _REGISTRY.get(key)
        if found is None:
            found = _REGISTRY[key] = SharedThrottle(interval_ms)
        return found
