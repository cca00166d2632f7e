"""A simulated Binance spot exchange on loopback, for ccxt to run unchanged against (SPEC §7).

Public API: :class:`SimExchange` (start/stop, ``faults``, ``missing_range``, ``expected_closed``,
``requests``, ``on_request``/``request_log`` hooks), :class:`SimClock`, :func:`serve_forever` for
``coin-predict exchange`` and :func:`replay_files`.
"""

from __future__ import annotations

from .clock import SimClock, parse_instant
from .faults import BodyVariant, Fault, FaultKind, Faults, MalformedVariant
from .series import DEFAULT_LISTING_MS, Kline
from .serve import format_request, replay_files, serve_forever
from .server import RequestRecord, SimExchange

__all__ = [
    "SimExchange",
    "SimClock",
    "RequestRecord",
    "Faults",
    "Fault",
    "FaultKind",
    "MalformedVariant",
    "BodyVariant",
    "Kline",
    "DEFAULT_LISTING_MS",
    "replay_files",
    "serve_forever",
    "format_request",
    "parse_instant",
]
