"""What a user of `send` and `repl` meets when things go wrong: a reader that leaves early,
a URL without a scheme or path, nothing listening, TLS against a plain server, no token.
Real server processes; the commands run as subprocesses or through CliRunner.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.cli.main import app
from qa_ws_cli.config import Settings
from tests.conftest import free_port, self_signed, server_env

pytestmark = pytest.mark.timeout(90)
Spawn = Callable[..., Any]
QUESTION = "how do I test a login form?"


def qa_ws(*args: str, **popen: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "qa_ws_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **popen,
    )


def token_for(settings: Settings) -> str:
    return issue_token(settings, "alice", ttl_s=600)[0]


def leave_after(proc: subprocess.Popen[bytes], n: int) -> tuple[int, bytes]:
    """Read ``n`` bytes of stdout and close it, as `| head -c n` does; the exit code and what
    stderr had besides the demo agent's tool progress (``running lookup_test_plan(…)…``)."""
    assert proc.stdout is not None and proc.stderr is not None
    if n:
        assert len(proc.stdout.read(n)) == n
    proc.stdout.close()
    code = proc.wait(30)  # a bound, not a measurement: the timeout asked for is 60 s
    lines = proc.stderr.read().splitlines(keepends=True)
    return code, b"".join(line for line in lines if not line.startswith(b"running "))


def test_send_into_head_ends_at_once_quietly_with_the_pipe_status(
    spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    server = spawn_server("--demo-latency-ms", "2000")
    token = token_for(settings)
    streaming = qa_ws("send", QUESTION, "--url", server.url, "--token", token, "--timeout", "60")
    assert leave_after(streaming, 80) == (141, b"")  # 128 + SIGPIPE, as `yes | head` gives
    waiting = qa_ws("send", QUESTION, "--url", server.url, "--token", token, "--timeout", "60")
    assert leave_after(waiting, 0) == (141, b"")  # the reader left before any byte came


def test_repl_pipe_mode_into_head_ends_at_once(
    spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    server = spawn_server("--demo-latency-ms", "2000")
    args = ("repl", "--url", server.url, "--token", token_for(settings), "--timeout", "60")
    proc = qa_ws(*args, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(f"{QUESTION}\n{QUESTION}\n".encode())
    proc.stdin.flush()  # stdin stays open: only stdout's reader leaving can end it
    assert leave_after(proc, 40) == (141, b"")
    proc.stdin.close()


runner = CliRunner()


def send(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["send", "hi", "--no-reconnect", *args], env={"COLUMNS": "200"})
    return result.exit_code, result.output


def test_connection_errors_say_what_is_wrong_and_what_to_try(
    spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    server = spawn_server()
    token = ["--token", token_for(settings)]
    port = free_port()
    code, out = send("--url", f"ws://127.0.0.1:{port}/ws", *token)
    assert code == 4
    assert out == (
        f"error: nothing is listening on 127.0.0.1:{port}: is `qa-ws serve` running on that port?\n"
    )
    root = server.url.removesuffix("/ws")
    code, out = send("--url", root + "/", *token)
    assert code == 3
    assert out == (
        f"error: {root[5:]} answered HTTP 200, not a WebSocket upgrade: "
        f"the path is /ws (try {server.url})\n"
    )
    code, out = send("--url", root + "/chat", *token)
    assert code == 3 and "answered HTTP 404, not a WebSocket upgrade: the path is /ws" in out
    code, out = send("--url", server.url.replace("ws://", "wss://"), *token)
    assert (code, out) == (
        4,
        f"error: {root[5:]} did not answer TLS: the server speaks plain ws, try {server.url}\n",
    )
    code, out = send("--url", root[5:], *token)  # 127.0.0.1:PORT, no scheme
    assert code == 2
    assert out.startswith(f"error: --url '{root[5:]}' is not a WebSocket URL: it starts with ws://")
    assert "Traceback" not in out


def test_send_without_a_token_gives_the_cli_hint(
    spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    server = spawn_server()
    result = runner.invoke(app, ["send", "hi", "--url", server.url], env={"QA_WS_TOKEN": ""})
    assert result.exit_code == 3
    assert result.output.startswith("error: the server wants a token (HTTP 401 missing_token)")
    assert "--token TOKEN (or set QA_WS_TOKEN), or --sub USER" in result.output
    assert "Authorization" not in result.output  # not the server's wire-level hint


def test_send_with_a_token_of_another_secret_says_how_to_get_one(
    spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    env = server_env(tmp_path, WEBSOCKET_SECRET_KEY="another-secret-" + "z" * 40)
    server = spawn_server(env=env)
    code, out = send("--url", server.url, "--token", token_for(settings))
    assert code == 3
    assert out.startswith("error: handshake refused: HTTP 401 invalid_token")
    assert "qa-ws token issue --sub USER" in out and "--sub USER" in out


@pytest.mark.parametrize("command", ["send", "repl"])
def test_sub_against_a_server_with_another_key_says_to_set_its_key(
    spawn_server: Spawn, tmp_path: Path, command: str
) -> None:
    server = spawn_server(env=server_env(tmp_path, WEBSOCKET_SECRET_KEY="server-key-" + "s" * 40))
    args = ["send", "hi"] if command == "send" else ["repl", "--plain"]
    result = runner.invoke(
        app,
        [*args, "--sub", "alice", "--url", server.url],
        input="hi\n",
        env={"WEBSOCKET_SECRET_KEY": "client-key-" + "c" * 40, "COLUMNS": "200"},
    )
    assert result.exit_code == 3
    assert result.output.startswith(
        "error: handshake refused: HTTP 401 invalid_token: the token's signature is invalid; "
        "--sub signed the token with this shell's key (WEBSOCKET_SECRET_KEY, or the development "
        "secret of `qa-ws serve --dev` when none is set) and the server uses another: "
        "set WEBSOCKET_SECRET_KEY to the server's key"
    )
    assert "qa-ws token issue" not in result.output  # not the advice already followed


def test_send_trusts_a_self_signed_certificate_given_in_ssl_cert_file(
    spawn_server: Spawn, settings: Settings, tmp_path: Path
) -> None:
    certfile, keyfile = self_signed(tmp_path)
    server = spawn_server(
        env=server_env(
            tmp_path,
            WEBSOCKET_SERVER__SSL__CERTFILE=str(certfile),
            WEBSOCKET_SERVER__SSL__KEYFILE=str(keyfile),
        )
    )
    assert server.url.startswith("wss://127.0.0.1:")
    report = tmp_path / "run.log"
    report.write_text("error: the login page timed out\n")
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    args = [sys.executable, "-m", "qa_ws_cli", "send", QUESTION, "-u", server.url]
    args += ["--token", token_for(settings), "--no-reconnect"]

    def run(*extra: str, **more_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args, *extra],
            env={**env, "COLUMNS": "300", **more_env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    where = server.url.removeprefix("wss://").removesuffix("/ws")
    refused = run()
    assert refused.returncode == 4
    assert refused.stderr == (
        f"error: the TLS certificate of {where} was not accepted (self-signed certificate); "
        "to trust a test certificate, set SSL_CERT_FILE=/path/to/cert.pem\n"
    )
    upload = run("--file", str(report))  # the HTTP client (aiohttp) says the same
    assert upload.returncode == 4
    assert upload.stderr == (
        f"error: cannot upload to https://{where}/files: its TLS certificate was not accepted "
        "(self-signed certificate); to trust a test certificate, "
        "set SSL_CERT_FILE=/path/to/cert.pem\n"
    )
    trusted = run("--file", str(report), SSL_CERT_FILE=str(certfile))
    assert trusted.returncode == 0, trusted.stderr
    assert "login form" in trusted.stdout  # uploaded and answered over wss://
