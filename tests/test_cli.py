"""The command line mirrors the library: every command documented, errors are one clean line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from coin_core.cli import COMMANDS, build_parser, main
from tests.fixtures.common import REPO


def test_every_command_is_documented_with_an_example() -> None:
    doc = (REPO / "docs" / "cli.md").read_text()
    for name, (help_text, example, _) in COMMANDS.items():
        assert f"## `coin-predict {name}`" in doc, name
        assert example in doc, name
        assert example.startswith(f"coin-predict {name}")


def test_every_command_help_shows_its_example(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    for name, (_, example, _) in COMMANDS.items():
        with pytest.raises(SystemExit):
            parser.parse_args([name, "--help"])
        assert example in capsys.readouterr().out


def test_config_errors_are_one_clean_line(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TARGET_SYMBOLS", "BTC/USDT,<bad>")
    assert main(["config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("coin-predict: error:") and "<bad>" in err and "Traceback" not in err


def test_config_masks_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INFLUXDB_PASSWORD", "hunter2-very-secret")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2-very-secret" not in out and '"influxdb_password": "**********"' in out


def test_entry_point_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "coin_core.cli", "--version"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "coin-predict" in result.stdout


def test_exchange_command_serves_the_simulated_exchange(tmp_path) -> None:
    import json as _json
    import time
    import urllib.request

    from tests.fixtures.common import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "coin_core.cli", "exchange", "--port", str(port)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v3/time", timeout=2) as resp:
                    assert abs(_json.load(resp)["serverTime"] / 1000 - time.time()) < 60
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)


def test_config_strips_credentials_from_urls(monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("INFLUXDB_URL", "http://alice:s3cr3t-pw@db.internal:8086")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "s3cr3t-pw" not in out and "alice" not in out and '"influxdb_url": "http://***@db.internal:8086"' in out
