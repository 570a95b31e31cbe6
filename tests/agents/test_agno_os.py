"""The Agno and OpenAI-compatible backends against a real Agno AgentOS (agno_os.py).

AgentOS and its stand-in model are ``tests/agents/stack.py``'s; the qa-ws agents are called
directly, as the gateway calls them (tests/server/test_agent_e2e.py goes through the gateway).
"""

from __future__ import annotations

import asyncio

import pytest

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.agents.events import Attachment, Piece, ToolFinished, ToolStarted
from qa_ws_cli.agents.registry import load_agent
from qa_ws_cli.errors import AgentError
from tests.server.test_files import PNG

from .conftest import agent_settings
from .stack import Stack, agentos_stack  # noqa: F401 (the stack fixture)

pytest.importorskip("agno", reason="agno is a test dependency: pip install -e '.[dev]'")


def agno_agent(stack: Stack) -> Agent:
    return load_agent(agent_settings(spec=f"agno+{stack.agentos}/agents/qa", timeout_s=30.0))


def openai_agent(stack: Stack) -> Agent:
    return load_agent(
        agent_settings(spec=f"openai+{stack.model_url}", model="qa-model", timeout_s=30.0)
    )


def context(message_id: str, *attachments: Attachment) -> ChatContext:
    return ChatContext(
        session_id=f"sess-{message_id}",
        user="alice",
        message_id=message_id,
        attachments=attachments,
    )


async def run(agent: Agent, message: str, ctx: ChatContext) -> list[Piece]:
    try:
        return [item async for item in agent.events(message, ctx)]
    finally:
        await agent.aclose()


async def test_tool_events_arrive_in_order_before_the_text(stack: Stack) -> None:
    items = await run(agno_agent(stack), "What is our login test plan?", context("m-tools"))
    kinds = [type(item).__name__ for item in items]
    started = next(i for i, item in enumerate(items) if isinstance(item, ToolStarted))
    finished = next(i for i, item in enumerate(items) if isinstance(item, ToolFinished))
    first_text = next(i for i, item in enumerate(items) if isinstance(item, str))
    assert started < finished < first_text, kinds
    tool_started, tool_finished = items[started], items[finished]
    assert isinstance(tool_started, ToolStarted)
    assert isinstance(tool_finished, ToolFinished)
    assert (tool_started.name, dict(tool_started.args)) == (
        "lookup_test_plan",
        {"feature": "login"},
    )
    assert tool_finished.id == tool_started.id
    assert tool_finished.result_preview.startswith("plan for login")
    assert tool_finished.ms is not None and tool_finished.ms >= 0
    text = "".join(item for item in items if isinstance(item, str))
    assert "Tool said: plan for login" in text  # the tool's result went back to the model


async def test_an_uploaded_png_reaches_the_model_through_agno(stack: Stack) -> None:
    stack.model.calls.clear()
    png = Attachment("screen.png", "image/png", PNG)
    items = await run(agno_agent(stack), "What is wrong in this screenshot?", context("m-png", png))
    assert "Image seen: yes" in "".join(item for item in items if isinstance(item, str))
    assert stack.model.calls[0].saw_image
    part = next(
        p
        for m in stack.model.calls[0].body["messages"]
        if isinstance(m.get("content"), list)
        for p in m["content"]
        if p.get("type") == "image_url"
    )
    assert part["image_url"]["url"].startswith("data:image/png;base64,")


async def test_png_and_text_files_reach_the_model_through_the_openai_backend(
    stack: Stack,
) -> None:
    stack.model.calls.clear()
    png = Attachment("screen.png", "image/png", PNG)
    report = Attachment("junit.xml", "application/xml", b'<testsuite tests="3" failures="1"/>')
    items = await run(openai_agent(stack), "Why did it fail?", context("m-oa", png, report))
    assert "Image seen: yes" in "".join(item for item in items if isinstance(item, str))
    (call,) = stack.model.calls
    assert call.saw_image
    assert any(
        "junit.xml" in text and '<testsuite tests="3" failures="1"/>' in text for text in call.texts
    )


async def test_a_pdf_is_refused_by_the_openai_backend_before_any_request(stack: Stack) -> None:
    stack.model.calls.clear()
    pdf = Attachment("plan.pdf", "application/pdf", b"%PDF-1.7\n")
    with pytest.raises(AgentError) as caught:
        await run(openai_agent(stack), "Summarise", context("m-pdf", pdf))
    assert caught.value.code == "unsupported_file_type"
    assert stack.model.calls == []


async def test_cancel_mid_tool_reaches_agnos_cancel_endpoint(stack: Stack) -> None:
    stack.model.calls.clear()
    agent = agno_agent(stack)
    ctx = context("m-cancel")
    seen: list[Piece] = []
    tool_running = asyncio.Event()

    async def consume() -> None:
        async for item in agent.events("Run the slow check", ctx):
            seen.append(item)
            if isinstance(item, ToolStarted):
                tool_running.set()

    task = asyncio.create_task(consume())
    try:
        await asyncio.wait_for(tool_running.wait(), 30)
        assert await agent.cancel(ctx) is True  # AgentOS answered 200 to the cancel
        with pytest.raises(AgentError) as caught:
            await asyncio.wait_for(task, 30)
        assert caught.value.code == "cancelled"  # AgentOS ended the run with RunCancelled
        assert not any(isinstance(item, str) for item in seen)
        assert len(stack.model.calls) == 1  # the model was never asked to go on
        assert await agent.cancel(ctx) is False  # nothing left to cancel
    finally:
        task.cancel()
        await agent.aclose()
