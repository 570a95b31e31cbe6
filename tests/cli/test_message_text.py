"""A message that is not Unicode text (a byte the locale could not decode) is refused before
it is sent, with the byte and its place: an argument or a `send -` line is a usage error
(exit 2, nothing sent), a repl pipe line an error for that line (exit 2 at the end). Before,
the frame carried a lone surrogate, the server answered invalid_json without a reply_to and
the client waited its whole timeout. Real server process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.cli.main import app
from tests.conftest import ServerProcess, make_settings

pytestmark = pytest.mark.timeout(60)
runner = CliRunner()
HINT = "send UTF-8 text (convert the input, e.g. with iconv -f latin1 -t utf-8)"


@pytest.fixture
def server(spawn_server: Callable[..., ServerProcess]) -> ServerProcess:
    return spawn_server("--agent", "echo")


@pytest.fixture
def token(tmp_path: Path) -> str:
    return issue_token(make_settings(tmp_path), "alice")[0]


def test_an_argument_that_is_not_text_is_a_usage_error(server: ServerProcess, token: str) -> None:
    args = ["send", "x\udcff", "-u", server.url, "-t", token, "--timeout", "5"]  # $'x\xff'
    result = runner.invoke(app, args)
    assert (result.exit_code, result.output) == (
        2,
        f"error: the message is not valid text: it has the byte 0xff (not UTF-8) at its end: "
        f"{HINT}\n",
    )


def test_a_stdin_line_that_is_not_text_stops_send_before_anything_is_sent(
    server: ServerProcess, token: str
) -> None:
    args = ["send", "-", "-u", server.url, "-t", token, "--timeout", "5"]
    result = runner.invoke(app, args, input=b"hi\nx\xffy\n")
    assert (result.exit_code, result.output) == (
        2,
        "error: stdin line 2 is not valid text: it has the byte 0xff (not UTF-8) at position 2 "
        f"of 3: {HINT}; nothing was sent\n",
    )


def test_a_repl_pipe_line_that_is_not_text_is_an_error_for_that_line(
    server: ServerProcess, token: str
) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", "repl", "-u", server.url, "-t", token],
        input=b"x\xffy\nhello\n",
        capture_output=True,
        timeout=30,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},  # whatever the locale's own decoding
    )
    assert time.monotonic() - started < 15  # the repl's --timeout is 120 s: it did not wait
    assert done.returncode == 2
    assert done.stdout.decode() == "hello\n"  # the next line was sent and answered
    assert (
        "error: the message is not valid text: it has the byte 0xff (not UTF-8) at position 2 "
        f"of 3: {HINT}"
    ) in done.stderr.decode()
