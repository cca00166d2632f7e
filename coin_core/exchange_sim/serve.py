"""``coin-predict exchange``: the simulated exchange in the foreground, optionally replaying
recorded market files on a clock that starts in their past, with one log line per request.

Every bad argument (a port out of range or taken, a replay folder that does not exist or holds
no market file, an unreadable file, a bad start instant or speed) is a :class:`ConfigError` or
:class:`DataValidationError` before anything listens: never silently synthetic data.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, TextIO

from .. import timeframes as tfs
from ..errors import ConfigError
from .clock import SimClock, parse_instant
from .server import RequestRecord, SimExchange

__all__ = ["replay_files", "serve_forever", "format_request"]

_REPLAY_NAME = re.compile(r"^[a-z0-9]+_([A-Z0-9]{2,15})-([A-Z0-9]{2,10})_(1m|1h|1d|1w|1M)\.csv$")
_TIME_PARAMS = ("startTime", "endTime")
_MAX_QUERY = 200


def replay_files(directory: str | Path) -> dict[tuple[str, str], Path]:
    """Find ``<exchange>_<BASE>-<QUOTE>_<tf>.csv`` files (the shared market data naming)."""
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(Path(directory).glob("*.csv")):
        match = _REPLAY_NAME.match(path.name)
        if match:
            found[(f"{match[1]}/{match[2]}", match[3])] = path
    return found


def _replay(directory: str | Path) -> dict[tuple[str, str], Path]:
    if not Path(directory).is_dir():
        raise ConfigError(f"--replay-dir {str(directory)!r} is not a folder")
    found = replay_files(directory)
    if not found:
        raise ConfigError(f"--replay-dir {str(directory)!r} holds no market file named like "
                          "binance_BTC-USDT_1h.csv (<exchange>_<BASE>-<QUOTE>_<timeframe>.csv)")
    return found


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def format_request(record: RequestRecord) -> str:
    """``<sim time> GET <path> <query> -> <status> <ms> ms``: one line, printable, bounded."""
    params = []
    for key, value in record.params.items():
        if key in _TIME_PARAMS and value.isdigit() and len(value) <= 15:
            value = tfs.to_datetime(int(value)).strftime("%Y-%m-%dT%H:%MZ")
        params.append(f"{key}={value}")
    query = _printable(" ".join(params))
    query = query if len(query) <= _MAX_QUERY else query[:_MAX_QUERY] + "..."
    at = tfs.to_datetime(record.at_ms).strftime("%Y-%m-%dT%H:%M:%SZ")
    parts = [at, "GET", _printable(record.path)[:100], query, "->", "dropped" if record.status == 0 else str(record.status)]
    parts += [f"{record.seconds * 1000:.1f} ms"] if record.seconds is not None else []
    parts += [f"[fault {record.fault}]"] if record.fault else []
    return " ".join(p for p in parts if p)


def _log_to(target: str) -> Callable[[RequestRecord], None] | None:
    """``-``: stderr; ``off``: no log; anything else: a file, appended to."""
    if target == "off":
        return None
    stream: TextIO = sys.stderr
    if target != "-":
        try:
            stream = open(target, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - open until exit
        except OSError as exc:
            raise ConfigError(f"cannot open --request-log {target!r}: {exc.strerror or exc}") from exc

    def write(record: RequestRecord) -> None:
        print(format_request(record), file=stream, flush=True)
    return write


def _clock(start: str | None, speed: float) -> Callable[[], float]:
    if start is None and speed == 1.0:
        return time.time
    return SimClock.running(parse_instant(start) if start is not None else time.time(), speed)


def serve_forever(
    host: str = "127.0.0.1",
    port: int = 8765,
    symbols: Iterable[str] = ("BTC/USDT", "ETH/USDT"),
    replay_dir: str | Path | None = None,
    in_progress: bool = True,
    *,
    start: str | None = None,
    speed: float = 1.0,
    request_log: str = "-",
) -> None:
    """Run the simulated exchange until interrupted (``coin-predict exchange``).

    ``start``: the simulated clock's instant at start-up (ISO 8601), then advancing ``speed``
    simulated seconds per real second; ``request_log``: where each request's line goes (a file,
    ``-`` for stderr, ``off``).
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port} is out of range: expected 0..65535")
    replay = _replay(replay_dir) if replay_dir is not None else None
    clock = _clock(start, speed)
    sim = SimExchange(symbols, clock=clock, replay=replay, in_progress=in_progress, host=host, port=port,
                      request_log=_log_to(request_log))
    for symbol, tf in sim.replayed:
        sim.series(symbol, tf)  # a bad file fails now, not at the first request
    try:
        url = sim.start()
    except (OSError, OverflowError) as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from exc
    at = tfs.to_datetime(sim.now_ms()).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"simulated exchange listening on {url} (EXCHANGE_API_URL={url}); clock {at} at {speed:g}x; "
          "Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
