"""Worker processes for a cycle's CPU-bound work (``coin_core.workers``, ``CPU_WORKERS``).

Real processes from the real fork server: calls run in other processes, a killed worker falls
back to this process without losing a result, the caller's ``__main__`` is not re-run in the
workers, and a cycle on worker processes writes exactly what the same cycle in one process
writes (forecasts, band states, score book, every byte of the site), series pages rendered
early (while the units run) included.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from coin_core.config import Settings
from coin_core.exchange_sim import SimClock, SimExchange
from coin_core.cycle import run_series
from coin_core.pipeline import run_cycle
from coin_core.publish import publish_site
from coin_core.publish.early import EarlyPublish
from coin_core.storage import open_store
from coin_core.storage.sqlite import SQLiteStore
from coin_core.workers import MIN_POOL_JOBS, Workers, default_workers, kept_open, pool_size

from tests.fixtures.common import REPO

LOOKBACK_DAYS = 10


def _double_unless_in(pid: int, value: int) -> int:
    """Dies (as an OOM kill would) in any process but ``pid``; doubles there."""
    if os.getpid() != pid:
        os._exit(9)
    return value * 2


def _pid_and_square(value: int) -> tuple[int, int]:
    return os.getpid(), value * value


def test_calls_run_in_other_processes_in_order() -> None:
    with Workers(2) as workers:
        assert workers.parallel
        pid, nine = workers.call(_pid_and_square, 3)
        mapped = list(workers.map(_pid_and_square, range(20), chunksize=3))
        eager = list(workers.map(_pid_and_square, range(7), eager=True))
    assert nine == 9 and pid != os.getpid()
    assert [v for _, v in mapped] == [i * i for i in range(20)] and [v for _, v in eager] == [i * i for i in range(7)]
    assert os.getpid() not in {p for p, _ in mapped}


def test_one_worker_is_this_process() -> None:
    with Workers(1) as workers:
        assert not workers.parallel and workers.call(_pid_and_square, 4) == (os.getpid(), 16)


@pytest.mark.parametrize("how", ["call", "map"])
def test_a_killed_worker_falls_back_to_this_process(how: str, caplog: pytest.LogCaptureFixture) -> None:
    me = os.getpid()
    with caplog.at_level(logging.WARNING, logger="coin_core.workers"), Workers(2) as workers:
        if how == "call":
            results = [workers.call(_double_unless_in, me, 21)]
            expected = [42]
        else:
            results = list(workers.map(_double_unless_in_me, [(me, i) for i in range(10)], chunksize=2))
            expected = [2 * i for i in range(10)]
        assert not workers.parallel, "a broken pool is not used again"
    assert results == expected, "nothing lost: what the dead worker held was computed here"
    assert any("worker process died" in r.message for r in caplog.records)


def _double_unless_in_me(job: tuple[int, int]) -> int:
    return _double_unless_in(*job)


def test_workers_do_not_rerun_the_callers_main_script(tmp_path: Path) -> None:
    script = tmp_path / "caller.py"
    marker = tmp_path / "ran"
    script.write_text(
        "import os, sys\n"
        f"open({str(marker)!r}, 'a').write(str(os.getpid()) + '\\n')  # a script without a __main__ guard\n"
        "from coin_core.workers import Workers\n"
        "with Workers(2) as workers:\n"
        "    pids = {workers.call(os.getpid) for _ in range(4)}\n"
        "assert os.getpid() not in pids, pids\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(marker.read_text().split()) == 1, "the script ran once: in its own process, not in the workers"


class _Ledger:
    """A closable resource that notes in a file each time it is opened or closed, and by which process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._note("open")

    def _note(self, what: str) -> None:
        with self.path.open("a") as handle:
            handle.write(f"{what} {os.getpid()}\n")

    def close(self) -> None:
        self._note("close")

    def __enter__(self) -> "_Ledger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _use_ledger(path: str) -> tuple[int, int]:
    with kept_open(f"ledger {path}", lambda: _Ledger(Path(path))) as ledger:
        return os.getpid(), id(ledger)


def _notes(path: Path) -> list[tuple[str, int]]:
    return [(what, int(pid)) for what, pid in (line.split() for line in path.read_text().splitlines())]


def test_a_worker_keeps_what_it_opens_until_it_exits(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    with Workers(2) as workers:
        used = list(workers.map(_use_ledger, [str(kept)] * 16))
    pids = {pid for pid, _ in used}
    assert os.getpid() not in pids
    for pid in pids:  # one open however many calls the worker ran, one close when it exited
        assert len({ident for p, ident in used if p == pid}) == 1
        assert sorted(what for what, p in _notes(kept) if p == pid) == ["close", "open"]
    here = tmp_path / "here"
    assert _use_ledger(str(here))[0] == _use_ledger(str(here))[0] == os.getpid()
    assert _notes(here) == [("open", os.getpid()), ("close", os.getpid())] * 2, "in-process: opened and closed per call"


def test_pool_size_policy() -> None:
    assert pool_size(4, MIN_POOL_JOBS - 1) == 1, "a few series: no pool"
    assert pool_size(4, 50) == 4 and pool_size(4, MIN_POOL_JOBS) == 4
    assert pool_size(64, MIN_POOL_JOBS) == MIN_POOL_JOBS, "never more processes than jobs"
    assert pool_size(0, 50) == min(default_workers(), 50) and pool_size(1, 50) == 1


def _world(cfg: Settings, root: Path, url: str, symbols: list[str], workers: int) -> Settings:
    return cfg.model_copy(update={"data_dir": root / "data", "public_dir": root / "public", "exchange_api_url": url,
                                  "target_symbols": symbols, "cpu_workers": workers})


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_cycle_on_worker_processes_writes_what_one_process_writes(cfg: Settings, frozen: SimClock,
                                                                     tmp_path: Path) -> None:
    symbols = [f"W{i:02d}/USDT" for i in range(MIN_POOL_JOBS)]
    with SimExchange(symbols, clock=frozen) as sim:
        one, many = (_world(cfg, tmp_path / name, sim.base_url, symbols, n) for name, n in (("one", 1), ("many", 2)))
        early = 0
        for cycle in range(3):  # backfill + naive champions, then two cycles that score and forecast
            reports = {name: run_cycle(world) for name, world in (("one", one), ("many", many))}
            assert reports["one"].workers == 1 and reports["many"].workers == 2
            assert reports["one"].early_series == 0, "no early pages without worker processes"
            early += reports["many"].early_series
            assert reports["one"].forecasts == reports["many"].forecasts
            assert reports["one"].scores == reports["many"].scores and not any(
                line.startswith("failed") for line in reports["many"].scores.values()), reports["many"].scores
            assert all(v == "ok" for v in reports["many"].forecasts.values()) and len(reports["many"].forecasts) == len(symbols)
            frozen.advance(3600)
    assert early > 0, "some series' files were rendered while the units ran (publish.early)"
    assert not list((tmp_path / "many").glob(".public.staging/*")), "no run directory left behind"
    site_one, site_many = _tree(one.public_dir), _tree(many.public_dir)
    status_one, status_many = (json.loads(site.pop("status.json")) for site in (site_one, site_many))
    for status in (status_one, status_many):  # the SQLite files' sizes: a page more or less, as writes interleave
        del status["storage"]["used_bytes"], status["storage"]["used_ratio"]
    assert site_one == site_many and status_one == status_many, "every byte of the site but the store's size"
    assert _tree(one.data_dir / "bands") == _tree(many.data_dir / "bands"), "the scores fed the same band states"
    with SQLiteStore(one.data_dir / "candles.sqlite3") as a, SQLiteStore(many.data_dir / "candles.sqlite3") as b:
        for symbol in symbols:
            fa, fb = a.read_forecasts(symbol, "1h"), b.read_forecasts(symbol, "1h")
            assert len(fa) == len(fb) == 3 * 2, "three cycles of the naive champion and the drift baseline"
            for x, y in zip(fa, fb):
                assert (x.model_version, x.issued_at, x.input_last_ts) == (y.model_version, y.issued_at, y.input_last_ts)
                assert x.points.equals(y.points)


def test_publish_renders_again_an_early_series_that_moved_on(cfg: Settings, frozen: SimClock, tmp_path: Path) -> None:
    """A series whose store changed after its early page was rendered is read and rendered again
    by publish; every other early series is taken as it is, and the site is what a publish alone
    makes of the same store at the same clock."""
    symbols = [f"W{i:02d}/USDT" for i in range(MIN_POOL_JOBS)]
    with SimExchange(symbols, clock=frozen) as sim:
        world = _world(cfg, tmp_path / "w", sim.base_url, symbols, 2)
        run_cycle(world)
        frozen.advance(3600)
        moved = symbols[3]
        with Workers(2) as workers, EarlyPublish(world) as early, open_store(world) as store:
            run = run_series(store, world, workers=workers, score=True, on_unit=early.series_done)
            while early._queue or not workers.wait_below(1, 0.05):  # every series rendered early
                pass
            last = store.tail(moved, "1h", 1)
            store.write_candles(moved, "1h", last.assign(ts=last["ts"] + 3_600_000))  # after its unit
            report = publish_site(store, world, now_ms=run.now_ms, workers=workers, early=early)
            alone = publish_site(store, world, now_ms=run.now_ms)
    assert report.early == len(symbols) - 1, "all but the series that moved on were taken as rendered"
    assert alone.written == [] and len(alone.unchanged) == len(report.written) + len(report.unchanged)
    page = (world.public_dir / "W03-USDT_1h.html").read_text()
    assert f'data-candle="{int(last["ts"].iloc[0]) + 3_600_000}"' in page, "its page shows the candle written after"
    assert not list((tmp_path / "w").glob(".public.staging/*")), "no run directory left behind"
