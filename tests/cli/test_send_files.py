"""``qa-ws send --file`` and tool progress, as a user runs them: real ``qa-ws send`` processes
against a real ``qa-ws serve`` whose agent uses a tool (tests/tool_agent.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from qa_ws_cli.auth.tokens import issue_token
from tests.conftest import ServerProcess, make_settings, server_env
from tests.server.test_files import PNG

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[2]
AGENT = "python:tests.tool_agent:agent"
Spawn = Callable[..., ServerProcess]


@pytest.fixture
def server(spawn_server: Spawn, tmp_path: Path) -> ServerProcess:
    env = server_env(tmp_path, PYTHONPATH=str(REPO), WEBSOCKET_LIMITS__MAX_UPLOAD_BYTES="4096")
    return spawn_server("--agent", AGENT, env=env)


def send(
    server: ServerProcess, tmp_path: Path, *args: str, sub: str | None = "alice"
) -> subprocess.CompletedProcess[str]:
    """``qa-ws send`` with a token for ``sub`` (None: no token)."""
    token = ["--token", issue_token(make_settings(tmp_path), sub)[0]] if sub else []
    env = dict(os.environ, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", "send", *args, "--url", server.url, *token],
        env=env,
        capture_output=True,
        text=True,
        timeout=45,
        cwd=tmp_path,
    )


def test_tool_progress_goes_to_stderr_and_the_answer_to_stdout(
    server: ServerProcess, tmp_path: Path
) -> None:
    result = send(server, tmp_path, "what is the plan login")
    assert result.returncode == 0, result.stderr
    assert result.stderr == 'running lookup_test_plan(feature="login")… done in 120 ms\n'
    assert result.stdout == "Plan found. Files: none. You asked: what is the plan login\n"


def test_a_failing_tool_says_so_on_stderr(server: ServerProcess, tmp_path: Path) -> None:
    result = send(server, tmp_path, "plan checkout but fail")
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        'running lookup_test_plan(feature="checkout")… failed: the plan store is down\n'
    )


def test_files_are_uploaded_and_reach_the_agent(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "screen.png").write_bytes(PNG)
    (tmp_path / "junit.xml").write_text('<testsuite tests="3" failures="1"/>')
    result = send(server, tmp_path, "why?", "--file", "screen.png", "--file", "junit.xml")
    assert result.returncode == 0, result.stderr
    assert (
        f"Files: screen.png (image/png, {len(PNG)} bytes), "
        "junit.xml (application/xml, 35 bytes)." in result.stdout
    )


def test_without_authentication_an_upload_names_the_session(
    spawn_server: Spawn, tmp_path: Path
) -> None:
    """``serve --no-auth``: the upload was a new anonymous user's, so file_not_found, exit 5."""
    env = server_env(tmp_path, PYTHONPATH=str(REPO))
    server = spawn_server("--agent", AGENT, "--no-auth", env=env)
    (tmp_path / "junit.xml").write_text('<testsuite tests="3" failures="1"/>')
    result = send(server, tmp_path, "why?", "--file", "junit.xml", sub=None)
    assert result.returncode == 0, result.stderr
    assert "Files: junit.xml (application/xml, 35 bytes)." in result.stdout


def test_json_prints_every_event_and_no_progress(server: ServerProcess, tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text("# Login\n- lockout\n")
    result = send(server, tmp_path, "plan login", "--json", "--file", "notes.md")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [(e["type"], e.get("kind")) for e in events]
    assert kinds[0] == ("system_event", None)
    assert kinds.index(("agent_event", "tool_started")) < kinds.index(
        ("agent_event", "tool_finished")
    )
    assert kinds[-1] == ("agent_response", None)
    answer = events[-1]
    assert answer["tools"] == [{"name": "lookup_test_plan", "status": "finished", "ms": 120.0}]
    assert "notes.md (text/markdown, 18 bytes)" in answer["content"]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("big.txt", "x" * 5000, "file_too_large"),
        ("blob.bin", "\x00\x01\x02 not text", "unsupported_file_type"),
    ],
)
def test_a_refused_upload_is_one_line_and_sends_nothing(
    server: ServerProcess, tmp_path: Path, name: str, content: str, expected: str
) -> None:
    (tmp_path / name).write_text(content)
    result = send(server, tmp_path, "look at this", "--file", name)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: /files: ") and expected in line
    assert result.stdout == ""
    assert "chat user=" not in server.output()  # no message was sent


def test_a_missing_file_is_named(server: ServerProcess, tmp_path: Path) -> None:
    result = send(server, tmp_path, "look", "--file", "nope.png")
    assert result.returncode == 1
    assert result.stderr.strip() == "error: cannot attach nope.png: no such file"
