"""``qa-ws demo`` with another agent than the demo one (its own server process): the echo agent
answers at once, without deltas, and the basic chat still shows its answer and passes (before:
an empty answer, "0 deltas", exit 1); an agent that cannot start is an error on stderr."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", "demo", "--clients", "3", "--questions", "1", *args],
        capture_output=True,
        text=True,
        timeout=50,
        env=dict(os.environ, COLUMNS="200"),
    )


def test_the_echo_agent_passes_the_demo_without_deltas() -> None:
    done = run_demo("--agent", "echo")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "agent \u203a how do I test a login form?\n" in out  # the answer, not an empty line
    assert "answered at once (no deltas), agent_response after" in out
    assert "0 deltas" not in out and "all demos passed" in out


def test_an_agent_that_cannot_start_is_an_error_on_stderr() -> None:
    done = run_demo("--agent", "bogus")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("error: the demo server did not start: unknown agent 'bogus'")
