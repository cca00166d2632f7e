"""Fault injection for the simulated exchange, driven from Python at runtime (thread-safe).

A fault answers the next ``count`` matching requests (``count=None``: until cleared), optionally
only on one path. Faults are consumed first-added first; one request takes at most one fault::

    sim.faults.add("rate_limit", count=3, retry_after=1)           # 429 + Retry-After
    sim.faults.add("ban", retry_after=120)                          # 418 + Retry-After
    sim.faults.add("server_error", count=2, status=502)             # 5xx
    sim.faults.add("latency", seconds=2.0, path="/api/v3/klines")   # slow answer -> client timeout
    sim.faults.add("malformed", variant="high_below_low")           # one bad row in klines
    sim.faults.add("malformed", variant="null_row", row=3)          # a row that is JSON null
    sim.faults.add("bad_body", variant="html")                      # HTTP 200 with an HTML page
    sim.faults.add("clock_skew", count=None, seconds=86_400)        # /api/v3/time a day ahead
    sim.faults.add("maintenance", style="-1001")                    # 503 {"code":-1001,...}
    sim.faults.add("disconnect")                                    # connection dropped, no answer
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["FaultKind", "MalformedVariant", "BodyVariant", "Fault", "Faults", "corrupt_row", "bad_body"]

FaultKind = Literal["rate_limit", "ban", "server_error", "latency", "malformed", "maintenance", "disconnect",
                    "bad_body", "clock_skew"]
# One row of a klines answer broken; the rest of the answer is well-formed.
MalformedVariant = Literal["non_number", "high_below_low", "missing_fields", "negative_price", "dict_row",
                           "null_row", "negative_time", "future_time", "misaligned_time", "huge_value",
                           "short_row"]
# A whole HTTP 200 answer that is not what the endpoint returns (a proxy's page, a cut connection).
BodyVariant = Literal["html", "truncated_json", "empty", "object", "empty_list", "number"]
MaintenanceStyle = Literal["503", "-1001"]

KLINES_PATH = "/api/v3/klines"
TIME_PATH = "/api/v3/time"
_FAR_FUTURE_MS = 100 * 365 * 86_400_000


def _variant(kind: str, variant: str | None) -> str:
    allowed = get_args(BodyVariant) if kind == "bad_body" else get_args(MalformedVariant)
    chosen = variant if variant is not None else allowed[0]
    if chosen not in allowed:
        raise ValueError(f"unknown {kind} variant {chosen!r}: expected one of {allowed}")
    return chosen


@dataclass
class Fault:
    kind: FaultKind
    remaining: int | None
    path: str | None = None
    retry_after: int = 1
    status: int = 500
    seconds: float = 0.0
    variant: str = "non_number"
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
        variant: str | None = None,
        style: MaintenanceStyle = "-1001",
        row: int = 0,
        body: str | None = None,
    ) -> Fault:
        """Queue a fault. ``body`` overrides the error body (server_error/maintenance).

        ``variant`` names the broken row (``malformed``) or the broken answer (``bad_body``);
        ``seconds`` is the delay (``latency``) or how far ``/api/v3/time`` is off (``clock_skew``).
        """
        if kind not in get_args(FaultKind):
            raise ValueError(f"unknown fault kind {kind!r}: expected one of {get_args(FaultKind)}")
        if count is not None and count < 1:
            raise ValueError("count must be >= 1 (or None for a permanent fault)")
        if kind == "server_error" and not 500 <= status <= 599:
            raise ValueError(f"server_error needs a 5xx status, got {status}")
        variant = _variant(kind, variant)
        if style not in get_args(MaintenanceStyle):
            raise ValueError(f"unknown maintenance style {style!r}")
        if kind in ("malformed", "bad_body") and path is None:
            path = KLINES_PATH  # only klines carry rows
        if kind == "clock_skew" and path is None:
            path = TIME_PATH
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


def corrupt_row(row: list[object], variant: str) -> object:
    """A copy of a 12-field kline row broken the way ``variant`` says."""
    bad = list(row)
    ts = int(row[0])  # type: ignore[call-overload]
    if variant == "dict_row":
        return dict(zip(("openTime", "open", "high", "low", "close", "volume"), bad))
    if variant == "null_row":
        return None
    timed = {"negative_time": -ts, "future_time": ts + _FAR_FUTURE_MS, "misaligned_time": ts + 1}
    if variant in timed:
        bad[0] = timed[variant]
    elif variant == "huge_value":
        bad[1:5] = ["1e300"] * 4
    elif variant == "short_row":
        bad = bad[:5]
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


def bad_body(variant: str, good: bytes) -> tuple[bytes, str]:
    """The body and content type of a broken HTTP 200 answer; ``good`` is the real one."""
    if variant == "html":
        return b"<html><body><h1>Welcome to nginx!</h1></body></html>", "text/html"
    if variant == "truncated_json":
        return good[: max(1, len(good) // 2)], "application/json;charset=UTF-8"
    bodies = {"empty": b"", "object": b"{}", "empty_list": b"[]", "number": b"42"}
    return bodies[variant], "application/json;charset=UTF-8"
