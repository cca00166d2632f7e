"""The simulated exchange in its own process, driven over a pipe (benchmarks only).

In its own process it never shares the benchmark's GIL nor counts in its RSS. The parent sends
one JSON command a line and reads one JSON answer a line::

    with SimProcess(symbols, start_s=T0, latency_s=0.1) as sim:
        sim.base_url
        sim.call("advance", seconds=3600)                 # frozen clock moves on
        sim.call("fault", kind="server_error", count=None, path="/api/v3/klines", status=503)
        sim.call("clear_faults")
        sim.call("prebuild", tf="1h", start_ms=..., end_ms=...)
        sim.call("missing", symbol="BTC/USDT", tf="1h", start_ms=..., end_ms=...)  # an outage
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

__all__ = ["SimProcess"]


def _serve(symbols: list[str], start_s: float, latency_s: float) -> None:
    from coin_core.exchange_sim import SimClock, SimExchange

    clock = SimClock()
    clock.set(start_s)
    with SimExchange(symbols, clock=clock, latency_s=latency_s) as sim:
        print(json.dumps({"url": sim.base_url}), flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd.pop("op")
            if op == "advance":
                clock.advance(cmd["seconds"])
                answer: Any = clock.now_ms()
            elif op == "fault":
                sim.faults.add(cmd.pop("kind"), **cmd)
                answer = len(sim.faults.pending)
            elif op == "missing":
                sim.missing_range(cmd["symbol"], cmd["tf"], cmd["start_ms"], cmd["end_ms"])
                answer = 0
            elif op == "clear_faults":
                sim.faults.clear()
                answer = 0
            elif op == "prebuild":
                answer = sum(sim.prebuild(s, cmd["tf"], cmd["start_ms"], cmd["end_ms"]) for s in symbols)
            elif op == "requests":
                answer = sim.count(cmd.get("path"))
            else:
                answer = f"unknown op {op}"
            print(json.dumps({"ok": answer}), flush=True)


class SimProcess:
    def __init__(self, symbols: list[str], *, start_s: float, latency_s: float = 0.0) -> None:
        self.args = [json.dumps({"symbols": symbols, "start_s": start_s, "latency_s": latency_s})]

    def __enter__(self) -> "SimProcess":
        self.proc = subprocess.Popen([sys.executable, __file__, *self.args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        self.base_url = json.loads(self.proc.stdout.readline())["url"]  # type: ignore[union-attr]
        return self

    def call(self, op: str, **args: Any) -> Any:
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self.proc.stdout.readline())["ok"]  # type: ignore[union-attr]

    def __exit__(self, *exc: object) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(30)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    config = json.loads(sys.argv[1])
    _serve(config["symbols"], config["start_s"], config["latency_s"])
