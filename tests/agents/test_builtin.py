"""The demo agent a new user meets first (``make serve``): its two tools and what they read."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from qa_ws_cli.agents.base import ChatContext
from qa_ws_cli.agents.builtin import DemoAgent, demo_answer
from qa_ws_cli.agents.demo_files import describe
from qa_ws_cli.agents.events import Attachment, Piece, ToolFinished, ToolStarted
from qa_ws_cli.auth.tokens import issue_token
from tests.conftest import ServerProcess, make_settings

JUNIT = b"""<?xml version="1.0"?>
<testsuite name="login" tests="4">
  <testcase classname="login" name="test_ok"/>
  <testcase classname="login" name="test_lockout">
    <failure message="expected 423, got 200">AssertionError</failure>
  </testcase>
  <testcase classname="login" name="test_reset"><error>TimeoutError: no mail
  after 30 s</error></testcase>
  <testcase name="test_sso"><skipped/></testcase>
</testsuite>
"""
XML = "application/xml"


async def run(message: str, *files: Attachment) -> list[Piece]:
    context = ChatContext(message_id="m1", attachments=files)
    return [piece async for piece in DemoAgent(latency_ms=0).events(message, context)]


def text_of(pieces: list[Piece]) -> str:
    return "".join(p for p in pieces if isinstance(p, str))


async def test_a_question_on_a_known_topic_looks_up_its_plan_first() -> None:
    pieces = await run("what is our login test plan?")
    started, finished = pieces[0], pieces[1]
    assert started == ToolStarted("m1:plan", "lookup_test_plan", {"feature": "login"})
    assert isinstance(finished, ToolFinished) and finished.name == "lookup_test_plan"
    assert finished.result_preview == demo_answer("login") and finished.ms is not None
    assert text_of(pieces) == demo_answer("login")
    assert all(isinstance(p, str) for p in pieces[2:])  # then only the answer's deltas


async def test_any_other_question_is_answered_without_a_tool() -> None:
    pieces = await run("hello there")
    assert all(isinstance(p, str) for p in pieces)
    assert text_of(pieces).startswith("A good test plan starts from risk")


async def test_a_junit_report_is_read_and_its_failures_lead_the_answer() -> None:
    pieces = await run("why did the login suite fail?", Attachment("junit.xml", XML, JUNIT))
    assert pieces[0] == ToolStarted("m1:file0", "read_attachment", {"name": "junit.xml"})
    summary = (
        "junit.xml: 4 tests, 2 failed, 1 skipped. Failed: login.test_lockout (expected 423, "
        "got 200); login.test_reset (TimeoutError: no mail)."
    )
    assert isinstance(pieces[1], ToolFinished) and pieces[1].result_preview == summary
    assert [p.name for p in pieces if isinstance(p, ToolStarted)] == [
        "read_attachment",
        "lookup_test_plan",
    ]
    assert text_of(pieces) == f"{summary} {demo_answer('login')}"


def test_a_report_where_every_test_passed_says_so() -> None:
    report = b'<testsuite><testcase name="a"/><testcase name="b"/></testsuite>'
    note = describe(Attachment("ok.xml", XML, report))
    assert note == "ok.xml: 2 tests, 0 failed, 0 skipped: every test passed."


def test_many_failures_are_listed_up_to_five() -> None:
    cases = "".join(f'<testcase name="t{i}"><failure message="m{i}"/></testcase>' for i in range(8))
    note = describe(Attachment("many.xml", XML, f"<testsuite>{cases}</testsuite>".encode()))
    assert note.endswith("t0 (m0); t1 (m1); t2 (m2); t3 (m3); t4 (m4); and 3 more.")


def test_a_log_is_summed_up_by_its_error_lines() -> None:
    log = b"start\nERROR login failed for bob\nok\nTraceback (most recent call last):\nend\n"
    note = describe(Attachment("run.log", "text/plain", log))
    assert note == (
        'run.log: 5 lines, 2 mention an error or a failure: "ERROR login failed for bob"; '
        '"Traceback (most recent call last):".'
    )
    quiet = describe(Attachment("notes.md", "text/markdown", b"# Login\n- lockout\n"))
    assert quiet == "notes.md: 2 lines, none of them mentions an error or a failure."


def test_an_image_is_named_by_its_type_and_size() -> None:
    note = describe(Attachment("screen.png", "image/png", b"\x89PNG" + bytes(2044)))
    assert note == (
        "screen.png is an image (image/png, 2.0 KiB); the offline demo agent does not read "
        "its content."
    )


@pytest.mark.parametrize(
    "hostile",
    [
        # an entity expansion bomb: refused by defusedxml, then read as plain text
        b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">'
        b']><testsuite><testcase name="&b;"/></testsuite>',
        # an external entity: never fetched
        b'<?xml version="1.0"?><!DOCTYPE t [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<testsuite><testcase name="&x;"/></testsuite>',
        b"<testsuite><testcase name='broken'",  # not well-formed
    ],
)
def test_hostile_or_broken_xml_is_read_as_text_and_never_expanded(hostile: bytes) -> None:
    note = describe(Attachment("junit.xml", XML, hostile))
    assert note.startswith("junit.xml: 1 line, ") and "root:" not in note


def test_control_characters_of_a_file_never_reach_the_answer() -> None:
    report = (
        b'<testsuite><testcase name="t&#x1b;[31m"><failure message="red&#x9b;2J"/>'
        b"</testcase></testsuite>"
    )
    note = describe(Attachment("bad\x1b]0;name\x07.xml", XML, report))
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in note), repr(note)
    log = describe(Attachment("x.log", "text/plain", b"error \x1b[2J here\r\n"))
    assert log == 'x.log: 1 line, 1 mentions an error or a failure: "error  [2J here".'


def test_a_real_send_shows_the_demo_agent_s_tools_on_stderr(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = spawn_server("--agent", "demo")
    (tmp_path / "junit.xml").write_bytes(JUNIT)
    token = issue_token(make_settings(tmp_path), "alice")[0]
    command = ["send", "why did the login suite fail?", "--file", "junit.xml"]
    result = subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", *command, "--url", server.url, "--token", token],
        env=dict(os.environ, COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=45,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert [line.split("…")[0] for line in lines] == [
        'running read_attachment(name="junit.xml")',
        'running lookup_test_plan(feature="login")',
    ]
    assert all(" done in " in line for line in lines)
    assert result.stdout.startswith("junit.xml: 4 tests, 2 failed, 1 skipped.")
