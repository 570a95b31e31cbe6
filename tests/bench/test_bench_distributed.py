"""Locust's distributed mode: `qa-ws bench --master` and `qa-ws bench --worker` on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qa_ws_cli.cli.main import app
from tests.conftest import SECRET, ServerProcess, free_port, server_env

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QA_WS_TOKEN", raising=False)
    monkeypatch.setenv("WEBSOCKET_SECRET_KEY", SECRET)  # the server's key: tokens per user


def start_worker(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "qa_ws_cli", "bench", "--worker", "--master-port", str(port)],
        cwd=tmp_path,
        env=server_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_master_and_two_workers_complete_a_run(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = spawn_server("--agent", "echo")
    port = free_port()
    workers = [start_worker(tmp_path, port) for _ in range(2)]
    try:
        out = tmp_path / "m.json"
        result = runner.invoke(
            app,
            [
                "bench",
                "--master",
                "--expect-workers",
                "2",
                "--master-port",
                str(port),
                "--url",
                server.url,
                "--users",
                "6",
                "--spawn-rate",
                "6",
                "--duration",
                "3s",
                "--report-json",
                str(out),
            ],
        )
        assert result.exit_code == 0, result.output
        logs = [w.communicate(timeout=60)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
    data = json.loads(out.read_text())
    assert data["run"]["workers"] == 2 and data["generator"]["workers"] == 2
    assert data["generator"]["all_reports_received"] is True
    assert data["connections"]["peak"] == 6 and data["latency_ms"]["connect"]["count"] == 6
    assert data["latency_ms"]["chat"]["count"] == data["throughput"]["answers"] >= 6
    assert "2 Locust workers" in result.output
    assert all(w.returncode == 0 for w in workers), logs


def test_a_master_whose_workers_never_come_exits_2(
    spawn_server: Callable[..., ServerProcess],
) -> None:
    server = spawn_server("--agent", "echo")
    result = runner.invoke(
        app,
        [
            "bench",
            "--master",
            "--expect-workers",
            "2",
            "--master-port",
            str(free_port()),
            "--workers-wait",
            "1s",
            "--url",
            server.url,
            "--duration",
            "2s",
        ],
    )
    assert result.exit_code == 2, result.output
    assert "only 0 of 2 load workers connected within 1 s" in result.output
    assert "qa-ws bench --worker --master-host" in result.output


def test_a_worker_without_a_token_or_key_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBSOCKET_SECRET_KEY")
    result = runner.invoke(app, ["bench", "--worker", "--master-port", "1"])
    assert result.exit_code == 2 and "WEBSOCKET_SECRET_KEY" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--master", "--serve"], "--master needs --url"),
        (["--master", "--processes", "2"], "exclude each other"),
        (["--master", "--expect-workers", "0", "--url", "ws://127.0.0.1:1/ws"], "at least 1"),
    ],
)
def test_master_options_that_do_not_fit_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(app, ["bench", *args])
    assert result.exit_code == 2 and message in result.output
