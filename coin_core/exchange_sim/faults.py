"""Fault injection for the simulated exchange, driven from Python at runtime (thread-safe).

A fault answers the next ``count`` matching requests (``count=None``: until cleared), optionally
only on one path. Faults are consumed first-added first; one request takes at most one fault::

    sim.faults.add("rate_limit", count=3, retry_after=1)           # 429 + Retry-After
    sim.faults.add("ban", retry_after=120)                          # 418 + Retry-After
    sim.faults.add("server_error", count=2, status=502)             # 5xx
    sim.faults.add("latency", seconds=2.0, path="/api/v3/klines")   # slow answer -> client timeout
    sim.faults.add("malformed", variant="high_below_low")           # one bad row in klines
    sim.faults.add("maintenance", style="-1001")                    # 503 {"code":-1001,...}
    sim.faults.add("disconnect")                                    # connection dropped, no answer
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["FaultKind", "MalformedVariant", "Fault", "Faults", "corrupt_row"]

FaultKind = Literal["rate_limit", "ban", "server_error", "latency", "malformed", "maintenance", "disconnect"]
MalformedVariant = Literal["non_number", "high_below_low", "missing_fields", "negative_price"]
MaintenanceStyle = Literal["503", "-1001"]

KLINES_PATH = "/api/v3/klines"


@dataclass
class Fault:
    kind: FaultKind
    remaining: int | None
    path: str | None = None
    retry_after: int = 1
    status: int = 500
    seconds: float = 0.0
    variant: MalformedVariant = "non_number"
    style: MaintenanceStyle = "-1001"
    row: int = 0
    body: str | None = None

    def matches(self, path: str) -> bool:
        return self.path is None or self.path == path


class Faults:
    """The fault plan of one simulated exchange."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plan: list[Fault] = []

    def add(
        self,
        kind: FaultKind,
        count: int | None = 1,
        *,
        path: str | None = None,
        retry_after: int = 1,
        status: int = 500,
        seconds: float = 0.0,
        variant: MalformedVariant = "non_number",
        style: MaintenanceStyle = "-1001",
        row: int = 0,
        body: str | None = None,
    ) -> Fault:
        """Queue a fault. ``body`` overrides the error body (server_error/maintenance)."""
        if kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {kind!r}: expected one of {get_args(FaultKind)}")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 (or None for a permanent fault)")
        if kind == "server_error" and not 500 <= status <= 599:
            raise ValueError(f"server_error needs a 5xx status, got {status}")
        if variant not in get_args(MalformedVariant):
            raise ValueError(f"unknown malformed variant {variant!r}")
        if style not in get_args(MaintenanceStyle):
            raise ValueError(f"unknown maintenance style {style!r}")
        if kind == "malformed" and path is None:
            path = KLINES_PATH  # only klines carry rows
        fault = Fault(kind, count, path, int(retry_after), status, float(seconds), variant, style, row, body)
        with self._lock:
            self._plan.append(fault)
        return fault

    def take(self, path: str) -> Fault | None:
        """Consume one use of the first fault that matches ``path``."""
        with self._lock:
            for fault in self._plan:
                if not fault.matches(path):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._plan.remove(fault)
                return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._plan.clear()

    @property
    def pending(self) -> list[Fault]:
        with self._lock:
            return list(self._plan)


def corrupt_row(row: list[object], variant: MalformedVariant) -> list[object]:
    """A copy of a 12-field kline row broken the way ``variant`` says."""
    bad = list(row)
    if variant == "non_number":
        bad[2] = "not-a-number"
    elif variant == "high_below_low":
        bad[2], bad[3] = bad[3], bad[2]
        if bad[2] == bad[3]:  # a flat candle: force a strict inversion
            bad[2] = "0.00000001"
    elif variant == "missing_fields":
        bad = bad[:4]
    elif variant == "negative_price":
        bad[3] = "-" + str(bad[3])
    return bad
