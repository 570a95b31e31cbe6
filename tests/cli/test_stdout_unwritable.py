"""A stdout that refuses writes (``> /dev/full``) or was closed (``>&-``) is one line on stderr
and a prompt exit 1: before, `send` waited its whole timeout and said "no answer" (the write
error killed its reader), `token issue` printed a traceback and `>&-` was a silent success.
A reader leaving (``| head``) stays the quiet 141. Real server process, real descriptors."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qa_ws_cli.auth.tokens import issue_token
from tests.conftest import SECRET, ServerProcess, make_settings, server_env

pytestmark = pytest.mark.timeout(90)
FULL = "error: cannot write to stdout: No space left on device\n"
CLOSED = "error: cannot write to stdout: it is closed\n"


def qa_ws(tmp_path: Path, *args: str, closed: bool = False, **kw: Any) -> tuple[int, str, float]:
    """Exit code, stderr without tool progress, seconds taken; stdout /dev/full or closed."""
    started = time.monotonic()
    with open(os.devnull if closed else "/dev/full", "w") as sink:
        done = subprocess.run(
            [sys.executable, "-m", "qa_ws_cli", *args],
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=server_env(tmp_path),
            preexec_fn=(lambda: os.close(1)) if closed else None,
            **kw,
        )
    lines = done.stderr.splitlines(keepends=True)
    err = "".join(line for line in lines if not line.startswith("running "))
    return done.returncode, err, time.monotonic() - started


@pytest.fixture
def server(spawn_server: Callable[..., ServerProcess]) -> ServerProcess:
    return spawn_server()


@pytest.mark.parametrize("closed", [False, True], ids=["dev-full", "closed"])
def test_send_and_repl_say_stdout_cannot_be_written_at_once(
    server: ServerProcess, tmp_path: Path, closed: bool
) -> None:
    token = issue_token(make_settings(tmp_path), "alice")[0]
    common = ("-u", server.url, "-t", token, "--timeout", "30")
    expected = CLOSED if closed else FULL
    for args in (("send", "hi", *common), ("send", "hi", "--json", *common)):
        code, err, took = qa_ws(tmp_path, *args, closed=closed)
        assert (code, err) == (1, expected), args
        assert took < 15  # not the 30 s timeout
    code, err, took = qa_ws(tmp_path, "repl", *common, closed=closed, input="hi\n")
    assert (code, err, took < 15) == (1, expected, True)


@pytest.mark.parametrize("closed", [False, True], ids=["dev-full", "closed"])
def test_printing_commands_say_stdout_cannot_be_written(tmp_path: Path, closed: bool) -> None:
    expected = CLOSED if closed else FULL
    for args in (("token", "issue", "--sub", "a"), ("config", "show", "--json")):
        code, err, _ = qa_ws(tmp_path, *args, closed=closed)
        assert (code, err) == (1, expected), args
    assert SECRET not in err
