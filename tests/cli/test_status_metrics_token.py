"""`qa-ws status` against a server whose /metrics wants metrics.token: a refused /metrics no
longer skips the admin token's check (a chat token exited 0 with "version ?"), the note names
the option that takes the metrics token (--metrics-token, not --token), and the one instance
there is still gives the version. Real server process through CliRunner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.cli.main import app
from tests.conftest import ServerProcess, make_settings, server_env

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()
METRICS_TOKEN = "metrics-" + "m" * 24
NOTE = (
    "note: metrics: /metrics: wrong metrics token (HTTP 401 invalid_token); "
    "pass the metrics token (metrics.token) with --metrics-token"
)


@pytest.fixture
def server(spawn_server: Callable[..., ServerProcess], tmp_path: Path) -> ServerProcess:
    return spawn_server(env=server_env(tmp_path, WEBSOCKET_METRICS__TOKEN=METRICS_TOKEN))


def status(url: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(
        app, ["status", "-u", url, "--interval", "0.2", *args], env={"COLUMNS": "300"}
    )
    return result.exit_code, result.stdout, result.stderr


def test_a_refused_metrics_still_checks_the_admin_token(
    server: ServerProcess, tmp_path: Path
) -> None:
    chat = issue_token(make_settings(tmp_path), "alice")[0]  # valid, no admin scope
    code, out, err = status(server.url, "-t", chat)
    assert code == 3, out + err
    assert err.startswith("error: /admin/connections: the token lacks the 'admin' scope")
    assert NOTE in out


def test_with_an_admin_token_the_note_names_metrics_token_and_the_version_shows(
    server: ServerProcess, tmp_path: Path
) -> None:
    admin = issue_token(make_settings(tmp_path), "ops", scope="admin")[0]
    code, out, _ = status(server.url, "-t", admin)
    assert code == 0, out
    assert NOTE in out and "(pass the metrics token with --token)" not in out
    assert "version            ?" not in out and "(this one)" in out
    code, out, _ = status(server.url, "-t", admin, "--metrics-token", METRICS_TOKEN)
    assert code == 0 and "note:" not in out and "p95 latency" in out
