"""The repl with an agent that uses tools (tests/tool_agent.py) and files: the live status
line, ``/attach``, ``/tools`` and Ctrl-C mid-tool, in a pseudo-terminal and through a pipe,
against a real ``qa-ws serve`` process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qa_ws_cli.config import Settings
from tests.client.test_repl import Terminal, repl_env, run_piped, token_for
from tests.conftest import ServerProcess, server_env
from tests.server.test_files import PNG

pytestmark = pytest.mark.timeout(60)
REPO = Path(__file__).resolve().parents[2]
Spawn = Callable[..., ServerProcess]


@pytest.fixture
def server(spawn_server: Spawn, tmp_path: Path) -> ServerProcess:
    env = server_env(tmp_path, PYTHONPATH=str(REPO))
    return spawn_server("--agent", "python:tests.tool_agent:agent", env=env)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    opened: list[Terminal] = []

    def open_terminal(*args: str) -> Terminal:
        term = Terminal(list(args), repl_env(tmp_path), tmp_path / f"pty-{len(opened)}.log")
        opened.append(term)
        return term

    yield open_terminal
    for term in opened:
        term.close()


def test_status_line_attach_tools_and_ctrl_c_mid_tool(
    server: ServerProcess, terminal: Callable[..., Terminal], tmp_path: Path, settings: Settings
) -> None:
    png = tmp_path / "screen.png"
    png.write_bytes(PNG)
    term = terminal(
        "--url", server.url, "--token", token_for(settings), "--history", str(tmp_path / "h")
    )
    term.expect("connected to")
    term.line(f"/attach {png}")
    term.expect(r"attached screen\.png \(image/png, 33 B\) to the next message")
    term.line("/attach /no/such/file.png")
    term.expect(r"error: (?:\x1b\[[0-9;]*m)*cannot attach /no/such/file\.png: no such file")

    term.line("what is the plan login")
    term.expect(r'running lookup_test_plan\(feature="login"\)…')  # the live status line
    term.expect(r"used lookup_test_plan \(120 ms\)")  # /tools off: one line
    term.expect(r"Files: screen\.png \(image/png, 33 bytes\)")  # the attachment reached it
    term.expect(r"answered in \d+ ms")

    term.line("/tools")
    term.expect("tool details on")
    term.line("plan checkout")
    term.expect(
        r'lookup_test_plan\(feature="checkout"\) done in 120 ms → plan for checkout: 3 cases'
    )
    term.expect(r"Files: none")  # the file went with one message only
    term.expect(r"answered in \d+ ms")

    term.line("plan slow")
    term.expect(r'running lookup_test_plan\(feature="slow"\)…')
    term.child.sendintr()  # Ctrl-C while the tool runs: a protocol cancel
    term.expect(r"cancelled")
    term.line("/quit")
    assert term.wait_exit() == 0
    assert "outcome=cancelled" in server.output()


def test_pipe_mode_attach_and_tool_progress_on_stderr(
    server: ServerProcess, tmp_path: Path, settings: Settings
) -> None:
    report = tmp_path / "junit.xml"
    report.write_text('<testsuite name="login" tests="1"><testcase name="ok"/></testsuite>')
    stdin = f"/attach {report}\nplan login\n/tools\nplan checkout\n"
    done = run_piped(["--url", server.url, "--token", token_for(settings)], stdin, tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert out[0].startswith("Plan found. Files: junit.xml (application/xml, 67 bytes).")
    assert out[1].startswith("Plan found. Files: none.")
    assert done.stderr.splitlines() == [
        "attached junit.xml (application/xml, 67 B) to the next message",
        'running lookup_test_plan(feature="login")… done in 120 ms',
        "tool details on",
        'running lookup_test_plan(feature="checkout")… done in 120 ms',
        "  → plan for checkout: 3 cases",
    ]
