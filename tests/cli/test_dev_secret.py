"""`serve --dev` keeps its secret: tokens from `token issue` / `--sub` work and survive restarts.

Real `qa-ws serve --dev` processes; the client commands run through CliRunner in this process
(one subprocess checks the banner's send line as a shell would run it). Each test has its own
``XDG_STATE_HOME`` (the autouse ``state_home`` fixture) and no ``WEBSOCKET_SECRET_KEY``.
"""

from __future__ import annotations

import html
import re
import shlex
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from qa_ws_cli.cli.main import app
from tests.conftest import SECRET, ServerProcess, server_env

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WEBSOCKET_SECRET_KEY", raising=False)
    monkeypatch.setenv(
        "WEBSOCKET_SECURITY__AUTHENTICATION__REVOCATION_FILE", str(tmp_path / "revoked.jsonl")
    )


def dev_env(tmp_path: Path) -> dict[str, str]:
    env = server_env(tmp_path, COLUMNS="400")
    env.pop("WEBSOCKET_SECRET_KEY")
    return env


def cli(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin)


def qa_ws(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def banner(server: ServerProcess) -> list[str]:
    """The dev banner's lines, once the last one (the send line) is out."""
    deadline = time.monotonic() + 15
    while "qa-ws send " not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    return server.output().splitlines()


def test_dev_secret_is_kept_0600_and_tokens_survive_a_restart(
    tmp_path: Path, state_home: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    env = dev_env(tmp_path)
    server = spawn_server("--dev", env=env)
    lines = banner(server)
    secret_file = state_home / "qa-ws" / "dev-secret"
    assert any(f"signing secret kept in {secret_file} (mode 0600)" in line for line in lines)
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret_file.parent.stat().st_mode) == 0o700
    kept = secret_file.read_text()
    assert kept not in server.output()  # the secret itself is never printed

    issued = cli("token", "issue", "--sub", "alice")
    assert issued.exit_code == 0, issued.stderr
    assert f"signed with the dev secret {secret_file}" in issued.stderr
    token = issued.stdout.strip()
    answer = cli("send", "how do I test a login form?", "-u", server.url, "-t", token)
    assert answer.exit_code == 0, answer.stderr
    assert "login form" in answer.stdout
    by_sub = cli("send", "hi", "--url", server.url, "--sub", "bob")
    assert by_sub.exit_code == 0, by_sub.stderr
    repl = cli("repl", "--url", server.url, "--sub", "carol", stdin="hi\n/session\n")
    assert repl.exit_code == 0, repl.stderr
    assert "carol" in repl.stdout + repl.stderr
    assert server.stop() == 0

    again = spawn_server("--dev", env=env)
    banner(again)
    assert secret_file.read_text() == kept  # reused, not replaced
    after = cli("send", "hi", "--url", again.url, "--token", token)
    assert after.exit_code == 0, after.stderr  # the token minted before the restart still works
    verified = cli("token", "verify", token)
    assert verified.exit_code == 0 and "valid" in verified.stdout


def test_dev_banner_prints_a_signed_in_page_url_and_a_working_send_line(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    env = dev_env(tmp_path)
    server = spawn_server("--dev", env=env)
    lines = banner(server)
    page = server.url.replace("ws://", "http://").removesuffix("/ws") + "/"
    page_line = next(line for line in lines if line.startswith(f"{page}#token="))
    token = page_line.removeprefix(f"{page}#token=")
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", token)
    verified = cli("token", "verify", token)
    assert verified.exit_code == 0 and '"sub": "dev"' in verified.stdout
    send_line = next(line for line in lines if line.startswith("qa-ws send "))
    done = qa_ws(*shlex.split(send_line)[1:], env=env)  # as a shell runs it
    assert done.returncode == 0 and "login form" in done.stdout


def test_the_pages_token_hint_is_a_command_that_works(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    env = dev_env(tmp_path)
    server = spawn_server("--dev", env=env)
    banner(server)
    page_url = server.url.replace("ws://", "http://").removesuffix("/ws") + "/"
    with urllib.request.urlopen(page_url, timeout=10) as response:
        page = html.unescape(response.read().decode())
    commands = set(re.findall(r"qa-ws token issue --sub [\w-]+", page))
    assert commands, "the page names no `qa-ws token issue --sub ...` command"
    for command in commands:
        issued = cli(*shlex.split(command)[1:])
        assert issued.exit_code == 0, (command, issued.stderr)
        sent = cli("send", "hi", "--url", server.url, "--token", issued.stdout.strip())
        assert sent.exit_code == 0, (command, sent.stderr)


def test_without_any_secret_the_errors_say_to_start_serve_dev() -> None:
    issued = cli("token", "issue", "--sub", "alice")
    assert issued.exit_code == 1
    assert "WEBSOCKET_SECRET_KEY" in issued.stderr and "qa-ws serve --dev" in issued.stderr
    assert "Traceback" not in issued.stderr
    sent = cli("send", "hi", "--url", "ws://127.0.0.1:9/ws", "--sub", "bob")
    assert sent.exit_code == 1 and "qa-ws serve --dev" in sent.stderr


def test_a_dev_secret_open_to_others_is_refused_and_left_alone(
    tmp_path: Path, state_home: Path
) -> None:
    secret_file = state_home / "qa-ws" / "dev-secret"
    secret_file.parent.mkdir(parents=True)
    secret_file.write_text("s" * 64 + "\n")
    secret_file.chmod(0o644)
    for args in (["token", "issue", "--sub", "a"], ["serve", "--dev", "--port", "0"]):
        done = cli(*args)
        assert done.exit_code == 1, args
        assert f"the dev secret {secret_file} is open to other users (mode 0644)" in done.stderr
        assert f"chmod 600 {secret_file}" in done.stderr
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o644
    assert secret_file.read_text() == "s" * 64 + "\n"


def test_a_configured_secret_wins_over_the_kept_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server("--dev", env=dev_env(tmp_path))
    banner(server)
    monkeypatch.setenv("WEBSOCKET_SECRET_KEY", SECRET)  # configured: not the dev server's key
    issued = cli("token", "issue", "--sub", "alice")
    assert issued.exit_code == 0 and "dev secret" not in issued.stderr
    refused = cli("send", "hi", "--url", server.url, "--token", issued.stdout.strip())
    assert refused.exit_code == 3 and "invalid_token" in refused.stderr


def test_bench_mints_its_users_tokens_with_the_dev_secret(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    env = dev_env(tmp_path)  # no WEBSOCKET_SECRET_KEY, as after `make serve`
    server = spawn_server("--dev", env=env)
    banner(server)
    load = ["--users", "2", "--spawn-rate", "10", "-d", "2s"]  # tiny, and on loopback
    done = subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", "bench", "--url", server.url, *load],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "cannot mint" not in done.stderr and "Traceback" not in done.stderr
    assert "connections: peak 2 of 2" in done.stdout + done.stderr


def test_bench_without_any_secret_says_to_start_serve_dev(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server(env=server_env(tmp_path))  # its key is not in this shell, no dev secret
    result = cli("bench", "--url", server.url, "--users", "2", "-d", "2s")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot mint the users' tokens (")
    assert "pass --token, or --serve, or run `qa-ws serve --dev`" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_help_names_the_dev_secret_file_whether_or_not_xdg_is_set(
    state_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for xdg in (str(state_home), None):
        if xdg is None:
            monkeypatch.delenv("XDG_STATE_HOME")
        out = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "400"}).output
        flat = " ".join(out.split())
        assert (
            "keep one in $XDG_STATE_HOME/qa-ws/dev-secret (~/.local/state/qa-ws/dev-secret "
            "when XDG_STATE_HOME is unset)" in flat
        ), out
