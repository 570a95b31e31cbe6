"""An agent that has its answer at once (``Agent.answer_at_once``) is answered in the same step:
the same frames, the same kept answer and history, the same safe errors as a run in a task."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.agents.builtin import EchoAgent
from qa_ws_cli.config import Settings
from qa_ws_cli.errors import AgentBusy
from tests.conftest import make_settings, run_gateway
from tests.server.wire import answer_to, chat, connect, metric, until

SECRET = "password=hunter2"


class Lookup(Agent):
    """Knows some answers at once; asks its (streaming) backend for the rest."""

    def __init__(self) -> None:
        self.asked_at_once: list[str] = []
        self.streamed: list[str] = []
        self.histories: list[int] = []
        self.attached: list[int] = []  # how many files each streamed question carried

    def answer_at_once(self, message: str, context: ChatContext) -> str | None:
        self.asked_at_once.append(message)
        self.histories.append(len(context.history))
        if message == "raise":
            raise RuntimeError(SECRET)
        if message == "busy":
            raise AgentBusy()
        if message == "number":
            return 42  # type: ignore[return-value]  # a mistake the gateway must survive
        return f"known: {message}" if message.startswith("faq") else None

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        self.streamed.append(message)
        self.attached.append(len(context.attachments))
        yield "looked "
        yield "up"


def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path, security={"rate_limiting": {"max_requests_per_minute": 10_000, "burst": 1_000}}
    )


async def test_an_answer_at_once_is_sent_kept_and_in_the_history(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qa_ws.chat")
    agent = Lookup()
    async with run_gateway(settings(tmp_path), agent) as gw:
        ws, hello = await connect(http, gw)
        first = await chat(ws, "m1", "faq one")
        assert first["type"] == "agent_response" and first["content"] == "known: faq one"
        assert isinstance(first["seq"], int) and first["latency_ms"] >= 0
        again = await chat(ws, "m1", "faq one")  # a resend: the kept answer, no second ask
        assert again == first and agent.asked_at_once == ["faq one"]
        second = await chat(ws, "m2", "faq two")
        assert agent.histories == [0, 2]  # the first question and answer are in the history
        assert await metric(http, gw, "qa_ws_chat_latency_seconds_count") == 2
        await ws.close()
        ws2, hello2 = await connect(
            http, gw, params={"session_id": hello["session_id"], "last_seq": "0"}
        )
        assert hello2["resumed"] is True and hello2["replayed"] == 2
        replayed = await until(ws2, answer_to("m2"))
        assert [e["content"] for e in replayed] == [first["content"], second["content"]]
    lines = [r for r in caplog.records if r.getMessage() == "chat"]
    assert [r.fields["outcome"] for r in lines] == ["ok", "ok"]  # type: ignore[attr-defined]
    assert lines[0].fields["session"] == hello["session_id"]  # type: ignore[attr-defined]


async def test_no_answer_at_once_goes_on_to_the_agents_stream(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    agent = Lookup()
    async with run_gateway(settings(tmp_path), agent) as gw:
        ws, _ = await connect(http, gw)
        await ws.send_json({"type": "chat_message", "id": "m1", "content": "what is new"})
        events = await until(ws, answer_to("m1"))
        assert [e["delta"] for e in events if e["type"] == "agent_delta"] == ["looked ", "up"]
        assert events[-1]["content"] == "looked up"
        assert agent.asked_at_once == agent.streamed == ["what is new"]


async def test_a_chat_with_files_runs_as_a_task_and_its_agent_gets_them(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    agent = Lookup()
    async with run_gateway(settings(tmp_path), agent) as gw:
        form = aiohttp.FormData()
        form.add_field("file", b"a log line\n", filename="run.log", content_type="text/plain")
        headers = {"Authorization": f"Bearer {gw.token('alice')}"}
        async with http.post(gw.http + "/files", data=form, headers=headers) as response:
            assert response.status == 201, await response.text()
            file_id = (await response.json())["file_id"]
        ws, _ = await connect(http, gw)
        await ws.send_json(
            {"type": "chat_message", "id": "m1", "content": "faq one", "attachments": [file_id]}
        )
        events = await until(ws, answer_to("m1"))
        assert events[-1]["content"] == "looked up"  # the files first: never answered at once
        assert agent.asked_at_once == [] and agent.attached == [1]


async def test_an_answer_at_once_that_raises_is_a_safe_error_and_the_session_goes_on(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qa_ws.server")
    async with run_gateway(settings(tmp_path), Lookup()) as gw:
        ws, hello = await connect(http, gw)
        error = await chat(ws, "m1", "raise")
        assert error["type"] == "error" and error["code"] == "agent_error"
        assert SECRET not in str(error) and "RuntimeError" not in str(error)
        busy = await chat(ws, "m2", "busy")  # a protocol code passes with its safe message
        assert busy["code"] == "agent_busy"
        number = await chat(ws, "m4", "number")
        assert number["type"] == "error" and number["code"] == "agent_error"
        assert (await chat(ws, "m3", "faq ok"))["content"] == "known: faq ok"
    logged = [r for r in caplog.records if r.getMessage() == "agent raised"]
    assert len(logged) == 1 and logged[0].fields["connection"] == hello["connection_id"]  # type: ignore[attr-defined]


def test_the_default_has_no_answer_at_once_and_echo_has_one() -> None:
    class Plain(Agent):
        async def chat(self, message: str, context: ChatContext | None = None) -> str:
            return message

    assert Plain().answer_at_once("hi", ChatContext()) is None
    assert EchoAgent().answer_at_once("hi", ChatContext()) == "hi"
