"""A controllable clock for the simulated exchange (seconds since the epoch, like time.time)."""

from __future__ import annotations

import threading
import time

__all__ = ["SimClock"]


class SimClock:
    """Follows wall-clock time plus an offset, or stays frozen at a set instant.

    ``clock()`` is what :class:`~coin_core.exchange_sim.SimExchange` calls. ``advance`` moves
    it (frozen or not); ``set`` freezes it at an instant; ``unfreeze`` follows real time again
    from where it is.
    """

    def __init__(self, start_s: float | None = None) -> None:
        self._lock = threading.Lock()
        self._frozen: float | None = start_s
        self._offset = 0.0

    def __call__(self) -> float:
        with self._lock:
            return self._frozen if self._frozen is not None else time.time() + self._offset

    def now_ms(self) -> int:
        return int(self() * 1000)

    def set(self, seconds: float) -> None:
        with self._lock:
            self._frozen = float(seconds)

    def set_ms(self, ms: int) -> None:
        self.set(ms / 1000)

    def advance(self, seconds: float) -> None:
        with self._lock:
            if self._frozen is not None:
                self._frozen += seconds
            else:
                self._offset += seconds

    def unfreeze(self) -> None:
        with self._lock:
            if self._frozen is not None:
                self._offset = self._frozen - time.time()
                self._frozen = None
