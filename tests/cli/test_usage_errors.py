"""Bad values that were tracebacks, the wrong exit code or silently accepted: each is now one
line on stderr and exit 2 (a usage error; 1 for a config file that is not UTF-8, as for any bad
config). Real server processes and real `qa-ws` subprocesses, so a traceback would show."""

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
from tests.conftest import ServerProcess, make_settings, server_env

pytestmark = pytest.mark.timeout(120)
runner = CliRunner()
EXAMPLE = "(for example ws://127.0.0.1:8765/ws)"


def qa_ws(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=tmp_path,
        env=server_env(tmp_path),
    )
    return done.returncode, done.stdout, done.stderr


@pytest.fixture
def server(spawn_server: Callable[..., ServerProcess]) -> ServerProcess:
    return spawn_server("--agent", "echo")


def test_a_bad_url_is_a_usage_error_that_says_what_is_wrong(
    server: ServerProcess, tmp_path: Path
) -> None:
    port = server.url.split(":")[2].split("/")[0]
    token = issue_token(make_settings(tmp_path), "alice")[0]
    cases = {
        "ws://[::1/ws": "is not a valid URL (Invalid IPv6 URL)",
        "ws://127.0.0.1:99999/ws": "is not a valid URL (Port out of range 0-65535)",
        "ws://127.0.0.1:abc/ws": "is not a valid URL (Port could not be cast to integer value",
        f"ws://:{port}/ws": "names no host: give it after ws://",
        f"{server.url}#frag": ": a WebSocket URL has no #fragment",
    }
    for url, says in cases.items():
        code, _, err = qa_ws(tmp_path, "send", "hi", "-u", url, "-t", token, "--no-reconnect")
        assert code == 2, (url, err)
        assert err.startswith(f"error: --url {url!r}{'' if says[0] == ':' else ' '}{says}"), err
        assert err.rstrip().endswith(EXAMPLE) and err.count("\n") == 1, err


def test_empty_subjects_and_ids_are_usage_errors(tmp_path: Path) -> None:
    for args in (("token", "issue", "--sub", ""),):
        code, _, err = qa_ws(tmp_path, *args)
        assert (code, err) == (2, "error: --sub must name a user: it is empty\n")
    for flag in ("--jti", "--sub"):
        code, _, err = qa_ws(tmp_path, "token", "revoke", flag, "")
        assert (code, err) == (2, f"error: {flag} must not be empty: it would revoke nothing\n")
    assert not (tmp_path / "revoked.jsonl").exists()  # nothing was written


def test_notify_data_with_nan_is_not_sent(server: ServerProcess, tmp_path: Path) -> None:
    admin = issue_token(make_settings(tmp_path), "ops", scope="admin")[0]
    args = ["notify", "--user", "a", "hi", "-u", server.url, "-t", admin, "--data"]
    for data, constant in (('{"a": NaN}', "NaN"), ('{"a": [Infinity]}', "Infinity")):
        result = runner.invoke(app, [*args, data])
        assert (result.exit_code, result.output) == (
            2,
            f"error: --data must be a JSON object, e.g. '{{\"run\": 42}}': {constant} is not "
            "JSON (the server refuses it)\n",
        )


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"websocket:\n  server:\n    name: caf\xe9\n")
    line = (
        f"error: cannot read config file {bad}: it is not UTF-8 text (the byte 0xe9 at offset "
        "34); save it as UTF-8\n"
    )
    for args in (("config", "validate", str(bad)), ("config", "show", "-c", str(bad))):
        assert qa_ws(tmp_path, *args) == (1, "", line), args
    code, _, err = qa_ws(tmp_path, "serve", "--port", "0", "-c", str(bad))
    assert (code, err) == (1, line)


def test_bench_checks_its_reports_and_options_before_the_run(
    server: ServerProcess, tmp_path: Path
) -> None:
    regular = tmp_path / "a-file"
    regular.write_text("x")
    run = ("bench", "--url", server.url, "--users", "1", "--duration", "2s")
    cases = {
        ("--report-json", "/proc/r.json"): "--report-json /proc/r.json: cannot write it (",
        ("--report-junit", f"{regular}/r.xml"): f"{regular} is a file, not a directory",
        ("--report-html", str(tmp_path)): f"--report-html {tmp_path}: it is a directory",
        ("--max-regression", "abc"): "--max-regression needs --baseline",
    }
    for extra, says in cases.items():
        started = time.monotonic()
        code, _, err = qa_ws(tmp_path, *run, *extra)
        assert code == 2 and says in err and err.count("\n") == 1, (extra, err)
        assert time.monotonic() - started < 10  # before the run, not after it
    deep = tmp_path / "new" / "dir" / "r.json"  # a missing parent is created (README)
    code, _, err = qa_ws(tmp_path, *run, "--report-json", str(deep), "--max-p95-ms", "60000")
    assert code == 0, err
    assert deep.is_file()
