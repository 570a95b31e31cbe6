"""The CLI: each command through CliRunner, and a real `serve --dev` with `send` as a user would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.cli.main import app
from tests.conftest import SECRET, ServerProcess, free_port, make_settings, server_env

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)
    values = {
        "WEBSOCKET_SECRET_KEY": SECRET,
        "WEBSOCKET_SECURITY__AUTHENTICATION__REVOCATION_FILE": str(tmp_path / "revoked.jsonl"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


def test_help_explains_every_command_with_an_example() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("serve", "send", "token", "config"):
        assert name in result.output
    for args in (
        ["serve"],
        ["send"],
        ["token", "issue"],
        ["token", "verify"],
        ["token", "revoke"],
        ["config", "show"],
        ["config", "validate"],
    ):
        out = runner.invoke(app, [*args, "--help"]).output
        assert "Example" in out, args
    assert runner.invoke(app, ["--version"]).output.startswith("qa-ws ")


@pytest.mark.parametrize(
    ("args", "usage"),
    [
        (["send"], "Usage: qa-ws send [OPTIONS] MESSAGE"),
        (["notify"], "Usage: qa-ws notify [OPTIONS] MESSAGE"),
        (["broadcast"], "Usage: qa-ws broadcast [OPTIONS] MESSAGE"),
        (["token", "verify"], "Usage: qa-ws token verify [OPTIONS] TOKEN"),
        (["token", "revoke"], "Usage: qa-ws token revoke [OPTIONS] [TOKEN]"),
        (["config", "validate"], "Usage: qa-ws config validate [OPTIONS] FILE"),
        (["token"], "Usage: qa-ws token [OPTIONS] COMMAND [ARGS]..."),
    ],
)
def test_help_names_arguments_in_capitals(args: list[str], usage: str) -> None:
    out = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"}).output
    line = next(line for line in out.splitlines() if "Usage:" in line)
    assert line.strip() == usage, out


def test_help_shows_a_repeatable_options_value_as_one_value() -> None:
    out = runner.invoke(app, ["send", "--help"], env={"COLUMNS": "200"}).output
    assert re.search(r"--file +<path> +Upload this file", out), out
    for args in (["send"], ["bench"], ["repl"], ["serve"], ["token", "revoke"]):
        shown = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"}).output
        assert "<list[" not in shown, args


def test_token_issue_verify_revoke(env: dict[str, str], tmp_path: Path) -> None:
    issued = runner.invoke(
        app, ["token", "issue", "--sub", "alice", "--ttl", "1h", "--scope", "chat"]
    )
    assert issued.exit_code == 0
    token = issued.output.strip()
    checked = runner.invoke(app, ["token", "verify", token])
    assert (
        checked.exit_code == 0 and "valid" in checked.output and '"sub": "alice"' in checked.output
    )
    as_json = json.loads(runner.invoke(app, ["token", "issue", "--sub", "bob", "--json"]).output)
    assert (
        as_json["claims"]["sub"] == "bob"
        and as_json["claims"]["exp"] - as_json["claims"]["iat"] == 3600
    )
    from_stdin = runner.invoke(app, ["token", "verify", "-"], input=token + "\n")
    assert from_stdin.exit_code == 0
    revoked = runner.invoke(app, ["token", "revoke", token])
    assert revoked.exit_code == 0 and "revoked jti" in revoked.output
    after = runner.invoke(app, ["token", "verify", token])
    assert after.exit_code == 1 and "revoked" in after.output
    by_jti = runner.invoke(app, ["token", "revoke", "--jti", "abc", "--keep", "1d"])
    assert by_jti.exit_code == 0
    assert (tmp_path / "revoked.jsonl").read_text().count("jti") == 2


@pytest.mark.parametrize(
    ("args", "reason", "code"),
    [
        (["token", "verify", "garbage"], "malformed", 1),
        (["token", "issue", "--sub", "a", "--ttl", "soon"], "duration", 2),  # usage
        (["token", "issue", "--sub", "a", "--ttl", "0s"], "positive", 2),
        (["token", "issue", "--sub", "a", "--ttl", "400d"], "at most 366d", 2),
        (["token", "revoke", "garbage"], "malformed", 1),
    ],
)
def test_token_failures_are_one_clear_line(
    env: dict[str, str], args: list[str], reason: str, code: int
) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == code
    assert reason in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (["token", "revoke"], None, "error: give exactly one of TOKEN, --jti or --sub"),
        (
            ["token", "revoke", "some.jwt.here", "--keep", "1d"],
            None,
            "error: --keep goes with --jti or --sub: a revoked TOKEN is kept until it expires",
        ),
        (
            ["token", "revoke", "--jti", "abc", "--keep", "soon"],
            None,
            "error: --keep: not a duration: 'soon' (use e.g. 30s, 15m, 1h, 2d)",
        ),
        (
            ["token", "verify", ""],
            None,
            "error: no token was given: pass the token, or - to read it from stdin",
        ),
        (["token", "verify", "-"], "\n", "error: no token was given: stdin was empty"),
        (
            ["token", "revoke", " "],
            None,
            "error: no token was given: pass the token, or - to read it from stdin",
        ),
    ],
)
def test_token_usage_errors_exit_2_with_one_line(
    env: dict[str, str], tmp_path: Path, args: list[str], stdin: str | None, expected: str
) -> None:
    result = runner.invoke(app, args, input=stdin)
    assert (result.exit_code, result.stderr.strip()) == (2, expected)
    assert not (tmp_path / "revoked.jsonl").exists()  # nothing was revoked


def test_token_revoke_without_redis_names_it_once(env: dict[str, str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = runner.invoke(app, ["token", "revoke", "--sub", "alice", "--redis-url", url])
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"error: cannot reach Redis {url} (ConnectionError): nothing was revoked"
    )


def test_token_verify_names_expiry_and_bad_signature(env: dict[str, str], tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    expired = issue_token(settings, "a", ttl_s=-10)[0]
    assert "expired" in runner.invoke(app, ["token", "verify", expired]).output
    other = make_settings(tmp_path, security={"secret_key": "z" * 40})
    forged = issue_token(other, "a")[0]
    result = runner.invoke(app, ["token", "verify", forged])
    assert result.exit_code == 1 and "signature" in result.output


def test_token_issue_without_secret_says_how_to_set_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WEBSOCKET_SECRET_KEY", raising=False)
    result = runner.invoke(app, ["token", "issue", "--sub", "a"])
    assert result.exit_code == 1 and "WEBSOCKET_SECRET_KEY" in result.output


def test_config_show_redacts_and_names_sources(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEBSOCKET_PORT", "9123")
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["server.port"] == {
        "value": 9123,
        "source": "env WEBSOCKET_PORT",
        "changed": True,
        "default": 8765,
    }
    assert data["security.secret_key"]["value"] == "**********"
    assert SECRET not in result.output
    assert data["limits.max_message_bytes"]["source"] == "default"
    assert data["security.secret_key"]["source"] == "env WEBSOCKET_SECRET_KEY"
    table = runner.invoke(app, ["config", "show"])
    assert table.exit_code == 0 and "websocket.server.port" in table.output


def test_config_validate(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("websocket:\n  server:\n    port: 9000\n")
    assert runner.invoke(app, ["config", "validate", str(good)]).exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("websocket:\n  limits:\n    max_message_bytes: tiny\n")
    result = runner.invoke(app, ["config", "validate", str(bad)])
    assert result.exit_code == 1 and "websocket.limits.max_message_bytes" in result.output


def test_serve_refuses_to_start_without_a_strong_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WEBSOCKET_SECRET_KEY", "short")
    result = runner.invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 1 and "shorter than 32 bytes" in result.output
    monkeypatch.delenv("WEBSOCKET_SECRET_KEY")
    result = runner.invoke(app, ["serve", "--port", "0"])
    assert (
        result.exit_code == 1
        and "WEBSOCKET_SECRET_KEY" in result.output
        and "--dev" in result.output
    )
    result = runner.invoke(app, ["serve", "--dev", "--agent", "nonsense"])
    assert result.exit_code == 1 and "unknown agent" in result.output


def test_send_failures_exit_non_zero_with_one_line(env: dict[str, str]) -> None:
    result = runner.invoke(
        app, ["send", "hi", "--url", "ws://127.0.0.1:1/ws", "--token", "t", "--no-reconnect"]
    )
    assert result.exit_code == 4 and "nothing is listening on 127.0.0.1:1" in result.output
    assert runner.invoke(app, ["send", "", "--token", "t"]).exit_code == 2  # usage
    assert runner.invoke(app, ["send", "hi", "--carrier", "pigeon"]).exit_code == 2


def qa_ws(
    *args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_dev_then_send_as_a_user_would(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    env = dict(os.environ)
    env.pop("WEBSOCKET_SECRET_KEY", None)
    env["COLUMNS"] = "400"
    server = spawn_server("--dev", env=env)
    deadline = time.monotonic() + 10
    while "qa-ws send" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = server.output().splitlines()
    send_line = next(line for line in lines if line.startswith("qa-ws send "))
    token = send_line.rsplit("--token ", 1)[1].strip()
    assert f"--url {server.url}" in send_line
    answer = qa_ws(
        "send", "how do I test a login form?", "--url", server.url, "--token", token, env=env
    )
    assert answer.returncode == 0, answer.stderr
    assert "login form" in answer.stdout
    events = qa_ws("send", "hi", "--url", server.url, "--token", token, "--json", env=env)
    kinds = [json.loads(line)["type"] for line in events.stdout.splitlines()]
    assert kinds[0] == "system_event" and kinds[-1] == "agent_response" and "agent_delta" in kinds
    piped = qa_ws(
        "send",
        "-",
        "--url",
        server.url,
        "--token",
        token,
        "--carrier",
        "subprotocol",
        env=env,
        stdin="how do I test an API?\n\nwhat about flaky tests?\n",
    )
    assert piped.returncode == 0
    out = piped.stdout.splitlines()
    assert len(out) == 2 and "API" in out[0] and "flaky" in out[1]
    refused = qa_ws("send", "hi", "--url", server.url, "--token", "bad", env=env)
    assert refused.returncode == 3
    assert refused.stderr.strip().startswith(
        "error: handshake refused: HTTP 401 invalid_token: the token is malformed; "
        "get a fresh token (qa-ws token issue --sub USER)"
    )
    timed_out = qa_ws(
        "send", "hi", "--url", server.url, "--token", token, "--timeout", "0.05", env=env
    )
    # 0.05 s may run out during the handshake or while waiting for the answer: both exit 6
    assert timed_out.returncode == 6 and "within 0.05 s" in timed_out.stderr
    assert server.stop() == 0
    log_lines = [line for line in server.output().splitlines() if " INFO " in line]
    assert any("status=401" in line for line in log_lines)
    assert all(token not in line for line in log_lines)  # the token never reaches a log line


def test_python_dash_m_works_like_qa_ws(tmp_path: Path) -> None:
    result = qa_ws("--help", env=server_env(tmp_path))
    assert result.returncode == 0 and "serve" in result.stdout
