"""A token with a character no JWT has (a trailing CR or LF from a paste, a non-ASCII or
undecodable byte) is one usage line naming the character and where it is: never the token,
never a traceback, whichever command reads --token (or QA_WS_TOKEN). Real server process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.cli.main import app
from tests.conftest import ServerProcess, make_settings

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()


@pytest.fixture
def server(spawn_server: Callable[..., ServerProcess]) -> ServerProcess:
    return spawn_server()


@pytest.fixture
def token(tmp_path: Path) -> str:
    return issue_token(make_settings(tmp_path), "ops", scope="chat admin")[0]


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(
        app, list(args), env={"QA_WS_URL": None, "QA_WS_TOKEN": None, **(env or {})}
    )
    return result.exit_code, result.output


def commands(url: str, attach: Path) -> list[list[str]]:
    return [
        ["send", "hi", "-u", url, "--no-reconnect", "--timeout", "5"],
        ["send", "hi", "-u", url, "--file", str(attach), "--timeout", "5"],
        ["connections", "-u", url],
        ["status", "-u", url, "--interval", "0.1"],
        ["broadcast", "hello", "-u", url],
        ["notify", "--user", "a", "hello", "-u", url],
    ]


@pytest.mark.parametrize(
    ("tail", "named"), [("\r", "a carriage return (\\r)"), ("\n", "a line feed (\\n)")]
)
def test_a_token_with_a_line_end_is_a_usage_error_that_never_shows_it(
    server: ServerProcess, token: str, tmp_path: Path, tail: str, named: str
) -> None:
    attach = tmp_path / "notes.txt"
    attach.write_text("a note\n")
    for args in commands(server.url, attach):
        code, out = run(*args, "--token", token + tail)
        assert code == 2, (args, out)
        assert out == (
            f"error: --token: the token has {named} at its end: a JWT is printable ASCII only "
            "(a pasted line end, or a file with CRLF line ends?)\n"
        ), args
        code, out = run(*args, env={"QA_WS_TOKEN": token + tail})
        assert code == 2 and out.startswith("error: QA_WS_TOKEN: the token has"), (args, out)
        assert token[:20] not in out


def test_other_token_options_are_checked_too(server: ServerProcess, token: str) -> None:
    code, out = run("status", "-u", server.url, "--metrics-token", token + "\r")
    assert code == 2 and out.startswith("error: --metrics-token: the token has a carriage")
    code, out = run("bench", "--url", server.url, "--token", token + "\r", "--duration", "1s")
    assert code == 2 and out.startswith("error: --token: the token has a carriage")
    assert token[:20] not in out


def test_a_non_ascii_token_says_so_not_that_its_times_are_bad(
    server: ServerProcess, tmp_path: Path
) -> None:
    code, out = run("send", "hi", "-u", server.url, "-t", "é", "--no-reconnect")
    assert (code, out) == (
        2,
        "error: --token: the token has a non-ASCII character (U+00E9) at its end: "
        "a JWT is printable ASCII only\n",
    )
    env = {"WEBSOCKET_SECRET_KEY": "k" * 48}
    code, out = run("token", "verify", "ab\udce9", env=env)  # $'ab\xe9' as argv gives it
    assert (code, out) == (
        1,
        "error: the token is malformed: it has the byte 0xe9 (not UTF-8) at its end: "
        "a JWT is printable ASCII only\n",
    )
