"""The main job on one command: the whole product offline on the embedded store.

Starts the simulated exchange on loopback, backfills, trains, forecasts and publishes, then
prints where the site is (and serves it when asked). Each step is the same library function
the Prefect flows call.
"""

from __future__ import annotations

import functools
import http.server
import time
from pathlib import Path

from .config import Settings
from .pipeline import run_forecast, run_publish, run_train

__all__ = ["run_demo", "serve_directory"]


def _step(title: str) -> float:
    print(f"==> {title}", flush=True)
    return time.monotonic()


def run_demo(settings: Settings, *, serve_port: int | None = None, lookback_days: int = 365) -> int:
    from .cli import _print_ingest, _ProgressPrinter
    from .exchange_sim import SimExchange
    from .ingest import run_ingest

    began = _step(f"starting the simulated exchange for {', '.join(settings.target_symbols)}")
    overrides = dict(settings.timeframe_policy)
    overrides["1h"] = {**overrides.get("1h", {}), "lookback_days": lookback_days}
    with SimExchange(symbols=settings.target_symbols) as sim:
        demo = settings.with_updates(exchange_api_url=sim.base_url, timeframe_policy=overrides)
        print(f"    exchange at {sim.base_url}; store: {demo.store} under {demo.data_dir}")
        _step(f"backfilling {', '.join(demo.ingest_timeframes)} candles")
        ingest = run_ingest(demo, progress=_ProgressPrinter())
        _print_ingest(ingest)
        now_ms = int(time.time() * 1000)
        _step("training every candidate model, then the promotion gate")
        for series, report in run_train(demo).items():
            gate = report.gate
            print(f"    {series:<14} {', '.join(report.fits)} fitted; gate {gate.status if gate else report.error}: "
                  f"serving {gate.champion if gate else '?'}")
        _step("forecasting from the next closed-candle boundary")
        for series, status in run_forecast(demo, now_ms=now_ms).items():
            print(f"    {series:<14} {status}")
        _step("publishing the static site")
        report = run_publish(demo, now_ms=now_ms)
    index = Path(demo.public_dir).resolve() / "index.html"
    print(f"    {len(report.written)} file(s) written, overall status: {report.overall}")
    print(f"done in {time.monotonic() - began:.0f}s. Site: {index}")
    if serve_port:
        serve_directory(Path(demo.public_dir), serve_port)
    return 0 if ingest.ok else 1


def serve_directory(root: Path, port: int, host: str = "127.0.0.1") -> None:
    """Serve a published site until interrupted (a convenience; production uses nginx)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    with http.server.ThreadingHTTPServer((host, port), handler) as server:
        print(f"serving {root} at http://{host}:{port}/ (Ctrl-C to stop)", flush=True)
        server.serve_forever()
