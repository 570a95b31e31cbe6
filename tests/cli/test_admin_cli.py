"""The operator's commands through CliRunner against a real server process: what each prints,
and the one line and exit code each error gets (2 usage, 1 refused request, 3 bad token,
4 unreachable)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest
from typer.testing import CliRunner

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.cli.main import app
from tests.conftest import ServerProcess, make_settings

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()
DEAD = "http://127.0.0.1:9"


@pytest.fixture
def server(spawn_server: Callable[..., ServerProcess]) -> ServerProcess:
    return spawn_server()


@pytest.fixture
def admin_token(tmp_path: Path) -> str:
    return issue_token(make_settings(tmp_path), "ops", scope="admin")[0]


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(
        app, list(args), env={"QA_WS_URL": None, "QA_WS_TOKEN": None, **(env or {})}
    )
    return result.exit_code, result.output


def test_every_operator_command_has_an_example_in_its_help() -> None:
    for name in ("notify", "connections", "disconnect", "status", "broadcast"):
        code, out = run(name, "--help")
        assert code == 0 and "Example" in out, name


def test_notify_prints_where_it_went(server: ServerProcess, admin_token: str) -> None:
    env = {"QA_WS_URL": server.url, "QA_WS_TOKEN": admin_token}  # the ws:// URL works too
    code, out = run(
        "notify", "--user", "alice", "nightly run finished", "--data", '{"run": 1}', env=env
    )
    assert code == 0 and "stored for alice" in out and "next connect" in out


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["--user", "alice", "x"], 2, "pass --token"),
        (["--user", "alice", "x", "--data", "[1]", "-t", "T"], 2, "--data must be a JSON object"),
        (["--user", "alice", "x", "--data", "{oops", "-t", "T"], 2, "--data must be a JSON object"),
        (["--user", "alice", "x", "-t", "T", "-u", "ftp://host/"], 2, "--url"),
        (["--user", "alice", "x", "-t", "T", "-u", DEAD], 4, "cannot reach"),
    ],
)
def test_notify_usage_errors(args: list[str], code: int, says: str) -> None:
    got, out = run("notify", *args)
    assert got == code and says in out and out.count("\n") == 1, out


def test_errors_the_server_answers(server: ServerProcess, admin_token: str, tmp_path: Path) -> None:
    url = ["-u", server.url]
    code, out = run("notify", "--user", "bad\x1buser", "x", "-t", admin_token, *url)
    assert code == 1 and "invalid_user" in out and "\x1b" not in out
    code, out = run("notify", "--user", "alice", "x" * 5000, "-t", admin_token, *url)
    assert code == 1 and "invalid_message" in out
    chat_token = issue_token(make_settings(tmp_path), "alice")[0]
    code, out = run("notify", "--user", "alice", "x", "-t", chat_token, *url)
    assert code == 3 and "insufficient_scope" in out and "--scope admin" in out
    code, out = run("broadcast", "   ", "-t", admin_token, *url)
    assert code == 1 and "invalid_message" in out
    code, out = run("connections", "--user", "", "-t", admin_token, *url)
    assert code == 1 and "invalid_user" in out
    code, out = run("disconnect", "--connection-id", "nope", "-t", admin_token, *url)
    assert code == 1 and "invalid_connection_id" in out
    code, out = run("disconnect", "--user", "nobody", "-t", admin_token, *url)
    assert code == 1 and "no live connection matched" in out


def test_connections_broadcast_and_status(server: ServerProcess, admin_token: str) -> None:
    url = ["-u", server.url, "-t", admin_token]
    code, out = run("connections", "--json", *url)
    assert code == 0 and json.loads(out)["connections"] == []
    code, out = run("connections", *url)
    assert code == 0 and "0 live connection(s) on 1 instance(s)" in out
    code, out = run("broadcast", "maintenance at six", *url)
    assert (code, out.strip()) == (0, "delivered to 0 connection(s)")
    code, out = run("status", "-u", server.url, "--interval", "0.2")  # no token: no instances
    assert code == 0 and "ready" in out and "chats/s" in out and "p95 latency" in out
    assert "instances" not in out


def test_status_with_a_refused_token_exits_3_after_the_view(
    server: ServerProcess, tmp_path: Path
) -> None:
    chat_token = issue_token(make_settings(tmp_path), "alice")[0]  # valid, no admin scope
    for token, why in (
        ("abc", "the token is malformed (HTTP 401 invalid_token)"),
        (chat_token, "(HTTP 403 insufficient_scope)"),
    ):
        result = runner.invoke(
            app, ["status", "-u", server.url, "-t", token, "--interval", "0.2"], env={}
        )
        assert result.exit_code == 3, result.output
        assert "ready" in result.stdout and "p95 latency" in result.stdout  # the view still shows
        assert "note:" not in result.stdout
        line = result.stderr.strip()
        assert line.startswith("error: /admin/connections: ") and why in line, line
        assert line.endswith(
            "the admin API needs an admin token: qa-ws token issue --sub ops --scope admin"
        )


@pytest.mark.parametrize(
    "args",
    [
        ["connections"],
        ["disconnect", "--user", "a"],
        ["broadcast", "hello"],
    ],
)
def test_admin_commands_need_a_token(args: list[str]) -> None:
    code, out = run(*args, "-u", DEAD)
    assert code == 2 and "pass --token" in out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["disconnect", "-t", "T"], "exactly one of --user or --connection-id"),
        (["disconnect", "--user", "a", "--connection-id", "0" * 16, "-t", "T"], "exactly one"),
        (["status", "--interval", "0"], "--interval"),
        (["status", "-u", "not a url"], "--url"),
    ],
)
def test_usage_errors(args: list[str], says: str) -> None:
    code, out = run(*args)
    assert code == 2 and says in out


@pytest.mark.parametrize("name", ["connections", "disconnect", "broadcast", "status"])
def test_a_dead_url_is_one_line_and_exit_4(name: str) -> None:
    extra = {"disconnect": ["--user", "a"], "broadcast": ["hi"]}.get(name, [])
    code, out = run(name, *extra, "-u", DEAD, "-t", "T")
    assert code == 4 and out.count("\n") == 1 and f"cannot reach {DEAD}" in out


def test_status_watch_refreshes_until_ctrl_c(server: ServerProcess, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QA_WS_")}
    child = pexpect.spawn(
        sys.executable,
        ["-m", "qa_ws_cli", "status", "--watch", "-u", server.url, "--interval", "0.2"],
        env={**env, "COLUMNS": "120"},
        cwd=str(tmp_path),
        encoding="utf-8",
        timeout=20,
    )
    try:
        for _ in range(3):  # the first view and two refreshes in place
            child.expect("p95 latency")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0 and "Traceback" not in (child.before or "")
