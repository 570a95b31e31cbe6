"""The real ``qa-ws repl`` in a pseudo-terminal (pexpect) and through a pipe, against real
server processes: what a user types, what they see, and how it ends.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.client.repl import PROMPT
from qa_ws_cli.config import Settings
from tests.conftest import free_port, server_env

# the spawn_server and settings fixtures come from tests/conftest.py (sharing its secret)
Spawn = Callable[..., Any]

pytestmark = pytest.mark.timeout(60)

CPR_REQUEST = re.compile(r"\x1b\[6n")
QUESTION = "how do I test a login form?"
GAP = r"(?:\s|\x1b\[[0-9;?]*[A-Za-z])+"  # what separates two table cells on screen
ERROR = r"error: (?:\x1b\[[0-9;]*m)*"  # the red label, then the message


class Terminal:
    """A repl in a pty that answers prompt_toolkit's cursor position requests like a real
    terminal would (without answers it never draws the status line)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log.open("w")
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "qa_ws_cli", "repl", *args],
            env=env,
            dimensions=(30, 110),
            encoding="utf-8",
            timeout=15,
        )
        self.child.logfile_read = self.log

    def expect(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            left = max(0.1, deadline - time.monotonic())
            index = self.child.expect([CPR_REQUEST, pattern], timeout=left)
            if index == 0:
                self.child.send("\x1b[5;1R")
                continue
            match: re.Match[str] = self.child.match
            return match

    def send(self, text: str) -> None:
        self.child.send(text)

    def line(self, text: str) -> None:
        self.child.send(text + "\r")

    def wait_exit(self, timeout: float = 15.0) -> int:
        self.expect_eof(timeout)
        self.child.close()
        assert self.child.exitstatus is not None, f"killed by signal {self.child.signalstatus}"
        return int(self.child.exitstatus)

    def expect_eof(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.child.expect([CPR_REQUEST, pexpect.EOF], timeout=timeout) == 0:
            timeout = max(0.1, deadline - time.monotonic())

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        self.log.close()


def repl_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(TERM="xterm", XDG_STATE_HOME=str(tmp_path / "state"), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    opened: list[Terminal] = []

    def open_terminal(*args: str, **env: str) -> Terminal:
        term = Terminal(list(args), repl_env(tmp_path, **env), tmp_path / f"pty-{len(opened)}.log")
        opened.append(term)
        return term

    yield open_terminal
    for term in opened:
        term.close()


def token_for(settings: Settings, sub: str = "alice") -> str:
    return issue_token(settings, sub, ttl_s=600)[0]


def broadcast(ws_url: str, admin_token: str, message: str) -> None:
    http = ws_url.replace("ws://", "http://").removesuffix("/ws")
    request = urllib.request.Request(
        f"{http}/admin/broadcast",
        data=json.dumps({"message": message}).encode(),
        headers={"Authorization": f"Bearer {admin_token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 202


def test_chat_slash_commands_and_quit(
    spawn_server: Spawn, terminal: Callable[..., Terminal], tmp_path: Path, settings: Settings
) -> None:
    server = spawn_server("--demo-latency-ms", "1000")
    history = tmp_path / "history"
    term = terminal("--url", server.url, "--token", token_for(settings), "--history", str(history))
    term.expect(r"connected to .* as alice")
    term.expect(r"● connected .*alice .*session \w{8} .*rtt [\d.]+ ms")  # the status line

    term.line(QUESTION)
    term.expect("To test a login form")  # the first delta, while the rest still streams
    term.line("/ping")  # typed ahead: runs once the answer is complete
    term.expect("HttpOnly")
    term.expect(r"answered in \d+ ms")
    term.expect(r"pong in [\d.]+ ms")

    broadcast(server.url, issue_token(settings, "ops", scope="chat admin")[0], "deploy at 5")
    term.expect("broadcast: deploy at 5")
    term.send("/ses")
    term.expect("show the session")  # the completion menu, with each command's purpose
    term.send("\t")
    term.line("")
    term.expect(rf"resumed{GAP}False \(0 events replayed\)")
    term.line("/token")
    term.expect(rf"sub{GAP}alice")
    term.expect(rf"expires{GAP}\S+ \S+ UTC \(in 9 min\)")

    term.line("/json")
    term.expect("raw event view on")
    term.line("what about an API?")
    term.expect(r'\{"ts":"[^"]+","type":"agent_delta","reply_to":"[\w-]+","delta":"For an API')
    term.expect(r'\{"ts":"[^"]+","type":"agent_response","reply_to":"[\w-]+","content":"For an API')
    term.line("/json")
    term.expect("raw event view off")

    term.line("/nope")
    term.expect(rf"{ERROR}unknown command /nope \(try /help\)")
    term.line("/help")
    term.expect("Alt-Enter")
    term.line("/quit")
    assert term.wait_exit() == 0
    saved = history.read_text()
    assert QUESTION in saved and "what about an API?" in saved


def test_multiline_message_with_alt_enter(
    spawn_server: Spawn, terminal: Callable[..., Terminal], tmp_path: Path, settings: Settings
) -> None:
    server = spawn_server("--agent", "echo")
    term = terminal(
        "--url", server.url, "--token", token_for(settings), "--history", str(tmp_path / "h")
    )
    term.expect("connected to")
    term.send("first line\x1b\r")  # Esc Enter: a newline, not a send
    term.send("second line\r")
    term.expect(r"first line\s+second line")
    term.expect(r"answered in \d+ ms")
    term.send("a draft")
    term.send("\x03")  # Ctrl-C with text: clears the line, stays
    term.line("/ping")
    term.expect(r"pong in [\d.]+ ms")
    term.send("\x04")  # Ctrl-D at an empty prompt
    assert term.wait_exit() == 0


def test_ctrl_c_cancels_the_answer_then_a_second_ctrl_c_exits(
    spawn_server: Spawn, terminal: Callable[..., Terminal], tmp_path: Path, settings: Settings
) -> None:
    server = spawn_server("--demo-latency-ms", "3000")
    term = terminal(
        "--url", server.url, "--token", token_for(settings), "--history", str(tmp_path / "h")
    )
    term.expect("connected to")
    term.line(QUESTION)
    term.expect("To test a login form")  # the first delta is on screen
    started = time.monotonic()
    term.child.sendintr()
    match = term.expect(r"cancelled|answered in")
    assert match.group(0) == "cancelled"
    assert time.monotonic() - started < 2.0  # well before the 3 s answer would have ended
    term.send("\x03")  # the second Ctrl-C leaves
    assert term.wait_exit() == 0
    assert "screen reader" not in (tmp_path / "pty-0.log").read_text()


def test_survives_a_server_restart_with_a_new_session(
    spawn_server: Spawn, terminal: Callable[..., Terminal], tmp_path: Path, settings: Settings
) -> None:
    port = str(free_port())
    first = spawn_server("--port", port, "--demo-latency-ms", "50")
    term = terminal(
        "--url",
        first.url,
        "--sub",
        "alice",
        "--history",
        str(tmp_path / "h"),
        WEBSOCKET_SECRET_KEY=str(settings.secret()),
    )
    term.expect(r"connected to .* as alice, session (\w{8})")
    term.line(QUESTION)
    term.expect(r"answered in \d+ ms")
    old_session = term.expect(r"session (\w{8})").group(1)

    assert first.stop() == 0
    term.expect("connection lost — reconnecting…")
    term.expect(r"● reconnecting…")
    second = spawn_server("--port", port, "--demo-latency-ms", "50")
    assert second.url == first.url
    new_session = term.expect(r"reconnected after [\d.]+ s, with a new session (\w{8})").group(1)
    assert new_session != old_session

    term.line("what about an API?")
    term.expect("contract")
    term.expect(r"answered in \d+ ms")
    term.line("/reconnect")
    term.expect(r"reconnected after [\d.]+ s, session resumed \(0 events replayed\)")
    term.expect(re.escape(PROMPT))  # the next prompt is up: this Ctrl-C is read by it
    term.send("\x03")  # at an empty prompt: only a hint
    term.expect("press Ctrl-C again or Ctrl-D to leave")
    term.send("\x04")
    assert term.wait_exit() == 0


def test_ctrl_c_while_a_command_runs_is_a_hint_not_an_exit(
    spawn_server: Spawn, terminal: Callable[..., Terminal], tmp_path: Path, settings: Settings
) -> None:
    server = spawn_server("--demo-latency-ms", "20")
    term = terminal(
        "--url",
        server.url,
        "--sub",
        "alice",
        "--history",
        str(tmp_path / "h"),
        WEBSOCKET_SECRET_KEY=str(settings.secret()),
    )
    term.expect(r"connected to .* as alice")
    term.line("/reconnect")
    term.send("\x03")  # while the command runs (read as a key at the next prompt at the latest)
    hint, done = "press Ctrl-C again or Ctrl-D to leave", r"reconnected after [\d.]+ s"
    term.expect(rf"(?s)({hint}.*{done}|{done}.*{hint})")  # either order, and no exit
    term.line(QUESTION)
    term.expect(r"answered in \d+ ms")  # still working
    term.send("\x04")
    assert term.wait_exit() == 0


def test_gives_up_then_reconnects_by_hand(
    spawn_server: Spawn, terminal: Callable[..., Terminal], tmp_path: Path, settings: Settings
) -> None:
    port = str(free_port())
    first = spawn_server("--port", port, "--demo-latency-ms", "20")
    term = terminal(
        "--url",
        first.url,
        "--token",
        token_for(settings),
        "--history",
        str(tmp_path / "h"),
        "--max-reconnects",
        "1",
    )
    term.expect("connected to")
    first.stop()
    # the reason it stopped (the last attempt's), not the close that started it
    gone = r"gave up reconnecting after 1 attempt: nothing is listening on 127\.0\.0\.1:\d+"
    term.expect(rf"connection lost: {gone}")
    term.expect("/reconnect to try again")
    term.expect("● disconnected")
    term.line(QUESTION)
    term.expect(rf"{ERROR}not connected \({gone}")
    term.expect("/reconnect first")
    term.line("/ping")
    term.expect(rf"{ERROR}not connected")
    spawn_server("--port", port, "--demo-latency-ms", "20")
    term.line("/reconnect")
    term.expect(r"reconnected after [\d.]+ s, with a new session")
    term.line(QUESTION)
    term.expect(r"answered in \d+ ms")
    term.line("/exit")
    assert term.wait_exit() == 0


def test_a_restart_with_another_secret_says_the_token_was_refused(
    spawn_server: Spawn, terminal: Callable[..., Terminal], tmp_path: Path, settings: Settings
) -> None:
    port = str(free_port())
    first = spawn_server("--port", port, "--demo-latency-ms", "20")
    term = terminal("--url", first.url, "--token", token_for(settings), "--history", "/dev/null")
    term.expect("connected to")
    other = server_env(tmp_path, WEBSOCKET_SECRET_KEY="another-secret-" + "q" * 40)
    first.stop()
    spawn_server("--port", port, "--demo-latency-ms", "20", env=other)
    seen = term.expect(r"reconnecting was refused: HTTP 401 invalid_token[^\n]*")
    assert "1001" not in seen.group(0)  # the refusal, not the close that began the outage
    term.expect(r"qa-ws token issue --sub USER")
    term.expect("● disconnected")
    term.line("/quit")
    assert term.wait_exit() == 0


# -- no terminal: line mode --------------------------------------------------------------------


def run_piped(args: list[str], stdin: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", "repl", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
        env=repl_env(tmp_path),
    )


def test_pipe_mode_answers_and_commands(
    spawn_server: Spawn, tmp_path: Path, settings: Settings
) -> None:
    server = spawn_server("--demo-latency-ms", "20")
    done = run_piped(
        ["--url", server.url, "--token", token_for(settings)],
        f"{QUESTION}\n/ping\n\n/session\n//api? yes\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("To test a login form") and lines[0].endswith("screen reader.")
    assert re.fullmatch(r"pong: [\d.]+ ms", lines[1])
    assert "user: alice" in lines
    assert lines[-1].startswith("For an API")  # "//" sent "/api? yes" as a message
    progress = done.stderr.splitlines()  # the demo agent's tools, and nothing else
    assert [line.split("…")[0] for line in progress] == [
        'running lookup_test_plan(feature="login")',
        'running lookup_test_plan(feature="api")',
    ]
    assert all(" done in " in line for line in progress)


def test_pipe_mode_reports_errors_on_stderr_and_in_the_exit_code(
    spawn_server: Spawn, tmp_path: Path, settings: Settings
) -> None:
    server = spawn_server()
    refused = run_piped(["--url", server.url], "hello\n", tmp_path)
    assert refused.returncode == 3
    assert refused.stderr.strip().startswith("error: the server wants a token (HTTP 401")
    assert "--token TOKEN (or set QA_WS_TOKEN), or --sub USER" in refused.stderr
    assert "Traceback" not in refused.stderr and refused.stdout == ""

    unknown = run_piped(
        ["--url", server.url, "--token", token_for(settings), "--json"], "/what\nhello\n", tmp_path
    )
    assert unknown.returncode == 1
    assert unknown.stderr == "error: unknown command /what (try /help)\n"
    assert '"type":"agent_response"' in unknown.stdout  # --json: raw events, still answered


def test_pipe_mode_exits_4_when_the_connection_is_lost_for_good(
    spawn_server: Spawn, tmp_path: Path, settings: Settings
) -> None:
    server = spawn_server("--demo-latency-ms", "20")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "qa_ws_cli",
            "repl",
            "--url",
            server.url,
            "--token",
            token_for(settings),
            "--max-reconnects",
            "1",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=repl_env(tmp_path),
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(QUESTION + "\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("To test a login form")
        server.stop()
        proc.wait(timeout=20)  # stdin is still open: losing the server alone must end it
        assert proc.stderr is not None
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == 4, err
    assert "connection lost — reconnecting…" in err
    assert err.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in err


def test_a_notification_shows_and_an_operator_disconnect_ends_the_repl(
    spawn_server: Spawn, terminal: Callable[..., Terminal], tmp_path: Path, settings: Settings
) -> None:
    server = spawn_server()
    term = terminal("--url", server.url, "--token", token_for(settings, "nora"))
    term.expect(r"connected to .* as nora")
    http = server.url.replace("ws://", "http://").removesuffix("/ws")
    admin = {"Authorization": f"Bearer {issue_token(settings, 'ops', scope='admin')[0]}"}
    for path, body in (
        ("/admin/notify", {"user": "nora", "message": "your run finished"}),
        ("/admin/disconnect", {"user": "nora"}),
    ):
        request = urllib.request.Request(
            http + path,
            data=json.dumps(body).encode(),
            headers={**admin, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as answer:
            assert answer.status in (200, 202)
        if path == "/admin/notify":
            term.expect("notification: your run finished")
    term.expect("disconnected by an operator")
