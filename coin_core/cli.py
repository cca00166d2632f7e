"""The ``coin-predict`` command line: each command builds the settings, calls the same library
function a Prefect flow calls, and turns every error into one clean line on stderr.

Exit codes: 0 done; 1 a run finished but some series failed, or an unexpected error (one line;
``--debug`` adds the traceback); 2 bad input (settings, flags, nothing stored) or any other
project error; 130 interrupted. Every line that leaves this process goes through
:func:`coin_core.redaction.redact`, so no form of a secret reaches the terminal or a log.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from typing import Callable, NoReturn, Sequence

from . import __version__
from .config import Settings, load_settings
from .errors import CoinPredictError, ConfigError, StorageUnavailableError
from .redaction import redact

DESCRIPTION = """Coin Predict: collect crypto candles, forecast them, publish a static site.

Settings come from the environment and .env (see docs/configuration.md; `coin-predict config`
shows them). Exit codes: 0 done, 1 some series failed or an unexpected error, 2 bad input or a
project error (one line on stderr), 130 interrupted.
"""
_SECRET_ENV = ("EXCHANGE_API_KEY", "EXCHANGE_SECRET", "INFLUXDB_TOKEN", "INFLUXDB_PASSWORD")

__all__ = ["main", "build_parser", "COMMANDS"]

Handler = Callable[[argparse.Namespace, Settings], int]
COMMANDS: dict[str, tuple[str, str, Handler]] = {}
"""name -> (one-line help, example, handler); the parser and docs/cli.md are built from it."""


def command(name: str, help_text: str, example: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        COMMANDS[name] = (help_text, example, func)
        return func
    return register


def _now_ms() -> int:
    return int(time.time() * 1000)


def _csv(value: str | None) -> list[str] | None:
    """None when the flag is absent (the configured set); a list, maybe empty (an error), if given."""
    return None if value is None else [v for v in value.split(",") if v.strip(" \t")]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected a number 1-65535") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: expected 1-65535")
    return port


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: expected a whole number >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid number {value}: expected a whole number >= 1")
    return value


def _series_exit(results: dict[str, str]) -> int:
    """0 all done, 2 when nothing is stored for any selected series, 1 when some failed."""
    from .pipeline import NO_CANDLES

    if results and all(r == NO_CANDLES for r in results.values()):
        raise CoinPredictError(f"no candles stored for {', '.join(results)}: run `coin-predict ingest` first")
    return 1 if any(r == NO_CANDLES or r.startswith(("failed", "degraded")) for r in results.values()) else 0


class _ProgressPrinter:
    """Rate-limited progress lines on stderr for long backfills."""

    def __init__(self, stream=sys.stderr, every_s: float = 1.0) -> None:
        self.stream, self.every_s, self._last = stream, every_s, 0.0

    def __call__(self, symbol: str, tf: str, count: int, cursor: int, target: int) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s and cursor <= target:
            return
        self._last = now
        from .timeframes import to_datetime

        reached = to_datetime(min(cursor, target)).strftime("%Y-%m-%d %H:%M")
        print(f"  {symbol} {tf}: {count:,} candles stored, reached {reached} UTC", file=self.stream, flush=True)


def _print_ingest(report) -> None:
    for s in report.series:
        state = "error: " + s.error if s.error else ("up to date (skipped)" if s.skipped else "ok")
        print(f"{s.symbol:<12} {s.timeframe:<3} new={s.new_candles:<7} rejected={s.rejected:<4} "
              f"known_gaps={s.known_gaps:<3} {s.seconds:6.1f}s  {state}")
    print(f"stored {report.new_candles:,} new candles in {report.seconds:.1f}s")


@command("ingest", "Backfill / update closed candles of the configured series into the store.",
         "coin-predict ingest --symbols BTC/USDT,ETH/USDT --timeframes 1h")
def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from .ingest import run_ingest

    report = run_ingest(settings, symbols=_csv(args.symbols), timeframes=_csv(args.timeframes), progress=_ProgressPrinter())
    _print_ingest(report)
    return 0 if report.ok else 1


@command("train", "Fit every candidate model of each series, then evaluate, gate and publish (never an ungated swap).",
         "coin-predict train --symbols BTC/USDT --timeframes 1h --lookback 2000")
def _train(args: argparse.Namespace, settings: Settings) -> int:
    from .pipeline import run_train

    failed = False
    results = run_train(settings, symbols=_csv(args.symbols), timeframes=_csv(args.timeframes), lookback=args.lookback)
    for series, report in results.items():
        if isinstance(report, str):
            print(f"{series:<16} {report}")
            continue
        fits = ", ".join(f"{name}: {status}" for name, status in report.fits.items())
        gate = report.error or (f"gate {report.gate.status}: {report.gate.message}" if report.gate else "gate not run")
        print(f"{series:<16} {fits}\n{'':<16} {gate} -> serving {report.gate.champion if report.gate else '?'}")
        failed = failed or report.error is not None or any(v.startswith("failed") for v in report.fits.values())
    summary = {series: r if isinstance(r, str) else "ok" for series, r in results.items()}
    return max(_series_exit(summary), 1 if failed else 0)


@command("score", "Score stored forecasts whose target candle closed; demote a champion that lost to naive.",
         "coin-predict score --timeframes 1h")
def _score(args: argparse.Namespace, settings: Settings) -> int:
    from .pipeline import run_score

    results = run_score(settings, now_ms=_now_ms(), symbols=_csv(args.symbols), timeframes=_csv(args.timeframes))
    for series, status in results.items():
        print(f"{series:<16} {status}")
    return 1 if any(status.startswith("failed:") for status in results.values()) else 0


@command("models", "List each series' champion, shadows, live track record and last gate decision.",
         "coin-predict models --symbols BTC/USDT")
def _models(args: argparse.Namespace, settings: Settings) -> int:
    from .lifecycle.report import model_lines

    for line in model_lines(settings.narrowed(_csv(args.symbols), _csv(args.timeframes))):
        print(line)
    return 0


@command("events", "Print the model event log of a series (registered, promoted, rejected, rolled back, demoted).",
         "coin-predict events --symbol BTC/USDT --timeframe 1h --limit 20")
def _events(args: argparse.Namespace, settings: Settings) -> int:
    from .lifecycle.report import event_lines

    for line in event_lines(settings, args.symbol, args.timeframe, args.limit):
        print(line)
    return 0


@command("rollback", "Serve a series' previous champion again (one step) and republish at once.",
         "coin-predict rollback --symbol BTC/USDT --timeframe 1h --reason 'bad fit'")
def _rollback(args: argparse.Namespace, settings: Settings) -> int:
    from .forecast.registry import rollback
    from .pipeline import run_publish

    event = rollback(settings, args.symbol, args.timeframe, actor="cli", reason=args.reason)
    run_publish(settings, now_ms=_now_ms())
    print(f"{args.symbol} {args.timeframe}: {event.champion_before} -> {event.champion_after} (rolled back, site republished)")
    return 0


@command("forecast", "Forecast every predicted series from its latest closed candle.",
         "coin-predict forecast --timeframes 1h")
def _forecast(args: argparse.Namespace, settings: Settings) -> int:
    from .pipeline import run_forecast

    settings.narrowed(_csv(args.symbols), _csv(args.timeframes)).predicted_series()  # e.g. 1m: never predicted
    results = run_forecast(settings, now_ms=_now_ms(), symbols=_csv(args.symbols), timeframes=_csv(args.timeframes))
    for series, status in results.items():
        print(f"{series:<16} {status}")
    return _series_exit(results)


@command("evaluate", "Rolling-origin evaluation of the baselines, the champion spec and the challengers "
         "(MASE vs naive, WIS, 50/80 % band coverage); saved under DATA_DIR/evaluation/.",
         "coin-predict evaluate --symbols BTC/USDT --timeframes 1h --origins 200 --workers 2")
def _evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from .evaluation.run import run_evaluate, score_rows

    evaluations = run_evaluate(settings, symbols=_csv(args.symbols), timeframes=_csv(args.timeframes),
                               n_origins=args.origins, workers=args.workers, now_ms=_now_ms())
    for row in score_rows(evaluations):
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    return 0 if all(ev.status == "ok" for ev in evaluations) else 1


@command("publish", "Reconcile public/ (JSON + HTML) with the store and the models.", "coin-predict publish")
def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from .pipeline import run_publish

    report = run_publish(settings, now_ms=_now_ms())
    print(f"{len(report.written)} file(s) written ({report.bytes_written:,} bytes), {len(report.unchanged)} unchanged, "
          f"overall {report.overall}, in {report.duration_s:.2f}s -> {report.public_dir}")
    if report.store_error:
        print(f"the store cannot be read ({report.store_error}): published from the last known candle times",
              file=sys.stderr)
        return 1
    return 0


@command("cycle", "One scheduled cycle: score -> ingest -> forecast per series, then publish.",
         "coin-predict cycle --timeframes 1h")
def _cycle(args: argparse.Namespace, settings: Settings) -> int:
    from .pipeline import run_cycle

    report = run_cycle(settings, symbols=_csv(args.symbols), timeframes=_csv(args.timeframes), progress=_ProgressPrinter())
    _print_ingest(report.ingest)
    failed_scores = {name: line for name, line in report.scores.items() if line.startswith("failed")}
    print(f"forecasts: {report.forecasts}" + (f"\nscoring: {failed_scores}" if failed_scores else "")
          + f"\npublished {report.published_files} changed file(s) in {report.seconds:.1f}s")
    return 0 if report.ingest.ok and not failed_scores else 1


@command("status", "Print the full status picture: freshness, store, storage, heartbeat, run times, errors.",
         "coin-predict status")
def _status(args: argparse.Namespace, settings: Settings) -> int:
    from .status import build_status, picture_dict

    picture = build_status(settings, now_ms=_now_ms())
    print(json.dumps(picture_dict(picture), indent=1, default=str))
    if not picture.store.reachable:  # the picture above still says how old the data is
        raise StorageUnavailableError(f"the {picture.store.backend} store cannot be read: {picture.store.error}")
    return 0 if picture.overall[0] in {"fresh", "stale"} else 1


@command("monitor", "Run one monitor pass and print its alerts (the monitor flow sends them to ALERT_BLOCK).",
         "coin-predict monitor")
def _monitor(args: argparse.Namespace, settings: Settings) -> int:
    from .monitor import run_monitor

    held = settings.alert_block is not None  # the flow, which can load the block, sends them
    report = run_monitor(settings, now_ms=_now_ms(), send=None, hold=held)
    for msg in report.queued:
        print(msg.text)
    where = f"pending for the monitor flow ({settings.alert_block})" if held else "logged only (no ALERT_BLOCK)"
    print(f"{len(report.queued)} alert message(s) queued, {where}; firing: {', '.join(report.firing) or 'none'}")
    return 0 if not report.firing else 1


@command("config", "Show the effective settings (secrets masked) and the timeframe policy matrix.", "coin-predict config")
def _config(args: argparse.Namespace, settings: Settings) -> int:
    payload = settings.redacted()
    payload["policies"] = {tf: p.model_dump() for tf, p in settings.policies.items()}
    print(json.dumps(payload, indent=1, default=str))
    return 0


@command("exchange", "Run the simulated Binance-compatible exchange on 127.0.0.1.",
         "coin-predict exchange --port 8765 --replay-dir ./market --start 2022-06-01T00:00Z")
def _exchange(args: argparse.Namespace, settings: Settings) -> int:
    from .exchange_sim import serve_forever

    if not 0 <= args.latency_ms <= 60_000:
        raise ConfigError(f"--latency-ms must be within [0, 60000], got {args.latency_ms}")
    serve_forever(host=args.host, port=args.port, symbols=settings.target_symbols, replay_dir=args.replay_dir,
                  start=args.start, speed=args.speed, request_log=args.request_log, latency_s=args.latency_ms / 1000)
    return 0


@command("demo", "Run the whole product offline: simulated exchange, backfill, train, forecast, publish.",
         "coin-predict demo --serve 8000")
def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from .demo import run_demo

    return run_demo(settings, serve_port=args.serve, lookback_days=args.lookback_days)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit 2), like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"coin-predict: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="coin-predict", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"coin-predict {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details")
    parser.add_argument("--debug", action="store_true", help="on an unexpected error, print its traceback too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, example, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text.replace("%", "%%"), description=help_text, epilog=f"example:\n  {example}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name in {"ingest", "train", "forecast", "cycle", "score", "models", "evaluate"}:
            p.add_argument("--symbols", help="comma-separated symbols, a subset of TARGET_SYMBOLS (default: all of them)")
            p.add_argument("--timeframes", help="comma-separated timeframes, a subset of INGEST_TIMEFRAMES (default: all of them)")
        if name == "train":
            p.add_argument("--lookback", type=_positive, metavar="N",
                           help="train on the latest N candles (at least the timeframe's min samples; default: its training window)")
        if name in {"events", "rollback"}:
            p.add_argument("--symbol", required=True, help="e.g. BTC/USDT")
            p.add_argument("--timeframe", default="1h", help="e.g. 1h (default 1h)")
        if name == "events":
            p.add_argument("--limit", type=_positive, default=50, metavar="N", help="latest N events (default 50)")
        if name == "rollback":
            p.add_argument("--reason", default="operator rollback", help="recorded in the event log")
        if name == "evaluate":
            p.add_argument("--origins", type=_positive, metavar="N", help="scored origins per series (default 200, at least 50)")
            p.add_argument("--workers", type=_positive, metavar="N", help="processes for the fits (default: every core; 1 = serial)")
        if name == "exchange":
            p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
            p.add_argument("--port", type=int, default=8765, help="port to listen on, 0..65535 (default 8765)")
            p.add_argument("--replay-dir", help="replay binance_{SLUG}_{TF}.csv files from this folder")
            p.add_argument("--latency-ms", type=int, default=0,
                           help="add a fixed round trip to every answer, e.g. 100 (default 0)")
            p.add_argument("--start", help="simulated clock at start-up, ISO 8601 (e.g. 2022-06-01T00:00Z; "
                                          "default: now)")
            p.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)")
            p.add_argument("--request-log", default="-", metavar="FILE",
                           help="one line per request to FILE (appended), '-' for stderr (default), 'off'")
        if name == "demo":
            p.add_argument("--serve", type=_port, metavar="PORT", help="serve public/ on 127.0.0.1:PORT afterwards")
            p.add_argument("--lookback-days", type=_positive, default=365, help="1h history to backfill (default 365)")
    return parser


class _RedactingFilter(logging.Filter):
    """Masks secrets in every log record (message and arguments) before a handler formats it."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        if record.exc_info:
            record.msg += "\n" + redact("".join(traceback.format_exception(*record.exc_info)), self.secrets)
            record.exc_info = None
        return True


def _env_secrets() -> list[str]:
    """Secrets straight from the environment: settings that failed to load must still be masked."""
    return [v for k, v in os.environ.items() if k.upper() in _SECRET_ENV and v]


def _fail(code: int, text: str, secrets: list[str]) -> int:
    line = " ".join(redact(text, secrets).split())
    print(f"coin-predict: {line}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    secrets = _env_secrets()
    redactor = _RedactingFilter(secrets)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(redactor)
    try:
        settings = load_settings()
        secrets += settings.secret_values()
        return COMMANDS[args.command][2](args, settings)
    except CoinPredictError as exc:
        return _fail(2, f"error: {exc}", secrets)
    except KeyboardInterrupt:
        return _fail(130, "interrupted", secrets)
    except Exception as exc:  # noqa: BLE001 - the edge: one line, never a bare traceback
        if args.debug:
            print(redact("".join(traceback.format_exception(exc)), secrets), file=sys.stderr, end="")
        hint = "" if args.debug else " (run with --debug for the traceback)"
        return _fail(1, f"unexpected error: {type(exc).__name__}: {exc}{hint}", secrets)


if __name__ == "__main__":
    sys.exit(main())
