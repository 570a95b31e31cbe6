"""The repl's pieces in-process: command parsing, token and session views, completion, the
streaming view, history fallback, and line mode against an in-process gateway."""

from __future__ import annotations

import io
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, InMemoryHistory
from rich.console import Console

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.client.connection import ClientOptions, QaWsClient
from qa_ws_cli.client.plain import (
    UnknownCommand,
    command_name,
    message_text,
    run_plain,
    session_rows,
    token_rows,
)
from qa_ws_cli.client.repl import (
    SlashCompleter,
    StreamingAnswer,
    default_history_path,
    open_history,
)
from qa_ws_cli.config import Settings
from qa_ws_cli.errors import ServerError
from qa_ws_cli.protocol.events import AgentEvent, ToolCall


def test_command_names_aliases_and_the_slash_escape() -> None:
    assert command_name("/ping") == "/ping"
    assert command_name("/EXIT now") == "/quit"
    assert command_name("/?") == "/help"
    assert command_name("how do I test?") is None
    assert command_name("//etc/passwd is a path") is None
    assert message_text("//etc/passwd") == "/etc/passwd"
    assert message_text("plain") == "plain"
    with pytest.raises(UnknownCommand, match=r"unknown command /pong \(try /help\)"):
        command_name("/pong")


def test_token_rows(settings: Settings) -> None:
    now = float(int(time.time()))  # tokens carry whole seconds
    token = issue_token(settings, "alice", ttl_s=600, scope="chat admin", now=now)[0]
    rows = dict(token_rows(token, now=now + 60))
    assert rows["sub"] == "alice" and rows["scope"] == "chat admin"
    assert rows["expires"].endswith("(in 9 min)") and rows["issued"].endswith("(60 s ago)")
    assert "status" not in rows
    expired = dict(token_rows(token, now=now + 4 * 3600))
    assert expired["expires"].endswith("(3 h 50 min ago)")
    assert expired["status"].startswith("EXPIRED")
    assert token_rows("not-a-jwt") == [("token", "the token is malformed")]
    assert token_rows(None)[0][1].startswith("none")


def test_slash_completion_only_for_the_command_word() -> None:
    def complete(text: str) -> list[str]:
        found = SlashCompleter().get_completions(Document(text), CompleteEvent())
        return [c.text for c in found]

    assert complete("/re") == ["/reconnect"]
    assert complete("/") == [
        "/help",
        "/ping",
        "/session",
        "/token",
        "/json",
        "/attach",
        "/tools",
        "/reconnect",
        "/quit",
    ]
    assert complete("/ping now") == []
    assert complete("what is /p") == []


def test_streaming_answer_shows_its_last_screenful() -> None:
    answer = StreamingAnswer()
    console = Console(width=20, height=6, file=io.StringIO(), color_system=None)
    console.print(answer)
    assert "thinking" in console.file.getvalue()  # type: ignore[attr-defined]
    for n in range(12):
        answer.add(f"line{n:02d} ")
    console = Console(width=8, height=6, file=io.StringIO(), color_system=None)
    console.print(answer)
    shown = console.file.getvalue().split()  # type: ignore[attr-defined]
    assert shown == ["line08", "line09", "line10", "line11"]


def test_streaming_answer_has_a_status_line_while_a_tool_runs() -> None:
    answer = StreamingAnswer()
    call = ToolCall(id="t1", name="lookup_test_plan", args={"feature": "login"})
    answer.event(AgentEvent(reply_to="m1", kind="tool_started", tool=call))
    console = Console(width=100, height=6, file=io.StringIO(), color_system=None)
    console.print(answer)
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert 'running lookup_test_plan(feature="login")…' in shown and "thinking" not in shown
    done = ToolCall(id="t1", name="lookup_test_plan")
    answer.event(
        AgentEvent(
            reply_to="m1", kind="tool_finished", tool=done, result_preview="3 cases\nok", ms=120
        )
    )
    answer.add("Plan found.")
    console = Console(width=100, height=6, file=io.StringIO(), color_system=None)
    console.print(answer)
    assert console.file.getvalue().strip() == "Plan found."  # type: ignore[attr-defined]
    assert answer.done == ['lookup_test_plan(feature="login") done in 120 ms → 3 cases ok']


def test_history_file_and_its_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert default_history_path() == tmp_path / "state" / "qa-ws" / "history"
    history, problem = open_history(None)
    assert isinstance(history, FileHistory) and problem is None
    assert default_history_path().is_file()
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    history, problem = open_history(blocker / "history")
    assert isinstance(history, InMemoryHistory)
    assert problem is not None and problem.startswith("history not kept: cannot write")


async def lines_of(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line + "\n"


async def test_line_mode_commands_and_errors(gateway: Any) -> None:
    client = QaWsClient(ClientOptions(url=gateway.url, token=gateway.token("bob"), reconnect=True))
    out, err = io.StringIO(), io.StringIO()
    errors = await run_plain(
        client,
        lines_of(
            "/help", "/token", "x" * 9000, "/reconnect", "/session", "hello", "/quit", "later"
        ),
        out,
        err,
    )
    assert len(errors) == 1 and isinstance(errors[0], ServerError)
    assert err.getvalue().splitlines()[0].startswith("error: ")
    assert "connection lost — reconnecting…" in err.getvalue()
    assert re.search(r"reconnected after [\d.]+ s, session resumed", err.getvalue())
    text = out.getvalue()
    assert "/reconnect: drop the connection and resume the session" in text
    assert "sub: bob" in text
    assert "resumed: True" in text and "reconnects: 1" in text
    assert text.rstrip().endswith(
        "Ask me about login forms, APIs, performance, flaky tests or releases for specifics."
    )  # "later" came after /quit
    assert client.state == "closed"


async def test_session_rows_before_and_after_connecting(gateway: Any) -> None:
    client = QaWsClient(ClientOptions(url=gateway.url, token=gateway.token()))
    assert session_rows(client) == [("session", "none yet")]
    async with client:
        rows = dict(session_rows(client))
    assert rows["user"] == "alice" and rows["session"] == client.session_id
    assert rows["limits"].startswith("max_message_bytes=")
