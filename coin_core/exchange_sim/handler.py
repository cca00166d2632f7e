"""The HTTP side of the simulated exchange: one request in, one Binance-shaped answer out.

The handler only parses, applies faults and serialises; what the market holds is asked of the
:class:`~coin_core.exchange_sim.server.SimExchange` it serves (``self.server.sim``).
"""

from __future__ import annotations

import json
import socket
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from .. import timeframes as tfs
from ..errors import CoinPredictError
from .faults import Fault, bad_body, corrupt_row
from .market import (
    ERR_BANNED, ERR_ILLEGAL, ERR_INTERNAL, ERR_INVALID_INTERVAL, ERR_INVALID_SYMBOL, ERR_MANDATORY,
    ERR_START_AFTER_END, ERR_TOO_MUCH_WEIGHT, WEIGHTS, error_body,
)

if TYPE_CHECKING:
    from .server import SimExchange

__all__ = ["Handler", "BadParam"]

_DIGITS = set("0123456789")
# Faults that shape a normal answer (a row, the body, the time) rather than replace it.
_ANSWER_FAULTS = ("malformed", "bad_body", "clock_skew")
DEFAULT_LIMIT, MAX_LIMIT = 500, 1000


class BadParam(Exception):
    """A request the exchange answers with HTTP 400 and an error payload."""

    def __init__(self, body: dict[str, Any]) -> None:
        super().__init__(body["msg"])
        self.body = body


def _int_param(params: dict[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not set(raw) <= _DIGITS or len(raw) > 20:
        raise BadParam(error_body(ERR_ILLEGAL, name))
    return int(raw)


class Handler(BaseHTTPRequestHandler):
    server_version = "SimExchange/1"
    sys_version = ""
    # Keep-alive, like the real exchange: a client's connection is reused, not set up per request
    # (every answer carries Content-Length; the "disconnect" fault still hangs up).
    protocol_version = "HTTP/1.1"
    _log_index: int = -1

    def setup(self) -> None:
        super().setup()
        # Headers and body leave in two writes: without this, Nagle's algorithm holds the body
        # until the client's delayed ACK (~40 ms) on a kept-alive connection.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    @property
    def sim(self) -> "SimExchange":
        return self.server.sim  # type: ignore[attr-defined, no-any-return]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Quiet: the request log is :attr:`SimExchange.requests`, not stderr."""

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        fault = self.sim.faults.take(url.path)
        # Logged on arrival (status None while pending) and completed before the answer leaves,
        # so a client that got an answer, or gave up waiting, always finds its request logged.
        self._log_index = self.sim._record(url.path, params, fault.kind if fault else None)
        if self.sim.latency_s > 0:  # the injected round trip: this thread waits, others go on
            self.sim._stopping.wait(self.sim.latency_s)
        self._respond(url.path, params, fault)

    def _log(self, status: int) -> None:
        self.sim._finish(self._log_index, status)

    def _respond(self, path: str, params: dict[str, str], fault: Fault | None) -> int:
        if fault is not None and fault.kind not in _ANSWER_FAULTS:
            handled = self._fault(fault)
            if handled is not None:
                return handled
        route = {
            "/api/v3/ping": lambda: {},
            "/api/v3/time": lambda: {"serverTime": self.sim.now_ms() + self._skew_ms(fault)},
            "/api/v3/exchangeInfo": lambda: self.sim.exchange_info(params.get("symbol")),
            "/api/v3/klines": lambda: self._klines(params, fault),
        }.get(path)
        if route is None:
            return self._send(404, b"<html><body><h1>404 Not Found</h1></body></html>", "text/html", path)
        try:
            if path == "/api/v3/klines" and self._fast_klines(fault):
                return self._send(200, self._klines_body(params), "application/json;charset=UTF-8", path)
            payload = route()
        except BadParam as exc:
            return self._json(400, exc.body, path)
        except CoinPredictError as exc:  # e.g. an unreadable replay file: answer, do not hang up
            return self._json(500, {"code": -1000, "msg": f"An unknown error occurred: {exc}"}, path)
        if fault is not None and fault.kind == "bad_body":
            body, ctype = bad_body(fault.variant, json.dumps(payload, separators=(",", ":")).encode())
            return self._send(200, body, ctype, path)
        return self._json(200, payload, path)

    @staticmethod
    def _skew_ms(fault: Fault | None) -> int:
        return int(fault.seconds * 1000) if fault is not None and fault.kind == "clock_skew" else 0

    def _fast_klines(self, fault: Fault | None) -> bool:
        """Serve cached rows unless a fault rewrites the answer, or a test replaced
        ``klines_by_id`` on the instance (it then gets exactly what its replacement answers)."""
        return (fault is None or fault.kind not in _ANSWER_FAULTS) and "klines_by_id" not in vars(self.sim)

    def _klines_query(self, params: dict[str, str]) -> tuple[str, str, int | None, int | None, int]:
        """symbol id, interval, startTime, endTime, limit of a klines request, validated."""
        symbol = params.get("symbol", "")
        if not symbol:
            raise BadParam(error_body(ERR_MANDATORY, "symbol"))
        interval = params.get("interval", "")
        if not interval:
            raise BadParam(error_body(ERR_MANDATORY, "interval"))
        if interval not in tfs.TIMEFRAMES:
            raise BadParam(error_body(ERR_INVALID_INTERVAL))
        start, end = _int_param(params, "startTime"), _int_param(params, "endTime")
        limit = _int_param(params, "limit")
        if start is not None and end is not None and start > end:
            raise BadParam(error_body(ERR_START_AFTER_END))
        # Binance documents a maximum of 1000; larger values are clamped here (ccxt never sends more).
        limit = DEFAULT_LIMIT if limit is None or limit == 0 else min(limit, MAX_LIMIT)
        return symbol, interval, start, end, limit

    def _klines_body(self, params: dict[str, str]) -> bytes:
        body = self.sim.klines_body(*self._klines_query(params))  # type: ignore[arg-type]
        if body is None:
            raise BadParam(error_body(ERR_INVALID_SYMBOL))
        return body

    def _klines(self, params: dict[str, str], fault: Fault | None) -> list[object]:
        klines = self.sim.klines_by_id(*self._klines_query(params))  # type: ignore[arg-type]
        if klines is None:
            raise BadParam(error_body(ERR_INVALID_SYMBOL))
        rows: list[object] = [k.wire() for k in klines]
        if fault is not None and fault.kind == "malformed" and rows:
            i = min(fault.row, len(rows) - 1)
            rows[i] = corrupt_row(rows[i], fault.variant)  # type: ignore[arg-type]
        return rows

    def _fault(self, fault: Fault) -> int | None:
        """Answer the request as the fault says; None lets it through (after any latency)."""
        if fault.kind == "latency":
            self.sim._stopping.wait(fault.seconds)
            return None
        if fault.kind == "disconnect":
            self._log(0)
            self.close_connection = True
            self.connection.close()
            return 0
        if fault.kind == "rate_limit":
            return self._json(429, error_body(ERR_TOO_MUCH_WEIGHT), None, {"Retry-After": str(fault.retry_after)})
        if fault.kind == "ban":
            until = self.sim.now_ms() + fault.retry_after * 1000
            return self._json(418, error_body(ERR_BANNED, until), None, {"Retry-After": str(fault.retry_after)})
        if fault.kind == "maintenance":
            if fault.style == "-1001":
                return self._json(503, error_body(ERR_INTERNAL), None)
            return self._send(503, (fault.body or "Service Unavailable").encode(), "text/html", None)
        body = fault.body if fault.body is not None else f"<html><body>{fault.status} error</body></html>"
        return self._send(fault.status, body.encode(), "text/html", None)

    def _json(self, status: int, payload: Any, path: str | None, extra: dict[str, str] | None = None) -> int:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return self._send(status, body, "application/json;charset=UTF-8", path, extra)

    def _send(self, status: int, body: bytes, ctype: str, path: str | None,
              extra: dict[str, str] | None = None) -> int:
        self._log(status)
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            used = self.sim._use_weight(WEIGHTS.get(path or "", 1))
            self.send_header("X-MBX-USED-WEIGHT-1M", str(used))
            self.send_header("x-mbx-used-weight", str(used))
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing left to answer
        return status
