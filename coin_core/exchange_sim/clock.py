"""A controllable clock for the simulated exchange (seconds since the epoch, like time.time)."""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime, timezone

from ..errors import ConfigError

__all__ = ["SimClock", "parse_instant"]

_MAX_SPEED = 1_000_000.0


class SimClock:
    """Follows wall-clock time plus an offset (at ``speed`` x), or stays frozen at a set instant.

    ``clock()`` is what :class:`~coin_core.exchange_sim.SimExchange` calls. ``advance`` moves
    it (frozen or not); ``set`` freezes it at an instant; ``unfreeze`` follows real time again
    from where it is. :meth:`running` starts a clock that runs from a past instant, e.g. to
    replay a recorded market as if it were live then.
    """

    def __init__(self, start_s: float | None = None, *, speed: float = 1.0) -> None:
        if not (math.isfinite(speed) and 0 < speed <= _MAX_SPEED):
            raise ConfigError(f"clock speed must be > 0 and <= {_MAX_SPEED:.0f}, got {speed}")
        self._lock = threading.Lock()
        self._frozen: float | None = start_s
        self._speed = float(speed)
        now = time.time()
        self._anchor = (now, now)  # (real, simulated) at the last re-anchoring

    @classmethod
    def running(cls, start_s: float, speed: float = 1.0) -> "SimClock":
        """A clock at ``start_s`` now, advancing ``speed`` simulated seconds per real second."""
        clock = cls(start_s, speed=speed)
        clock.unfreeze()
        return clock

    def __call__(self) -> float:
        with self._lock:
            if self._frozen is not None:
                return self._frozen
            real, sim = self._anchor
            return sim + (time.time() - real) * self._speed

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
                real, sim = self._anchor
                self._anchor = (real, sim + seconds)

    def unfreeze(self) -> None:
        with self._lock:
            if self._frozen is not None:
                self._anchor = (time.time(), self._frozen)
                self._frozen = None


def parse_instant(text: str) -> float:
    """``2022-06-01``, ``2022-06-01T00:00Z`` or any ISO 8601 instant (UTC if no offset) -> seconds."""
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"invalid instant {text!r}: expected ISO 8601 such as 2022-06-01T00:00Z") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    seconds = parsed.timestamp()
    if not 0 <= seconds < 253_402_300_800:
        raise ConfigError(f"instant {text!r} is outside 1970..9999")
    return seconds
