"""The Agno backend's event mapping, against a local server that writes AgentOS's bytes.

(tests/agents/test_agno_os.py runs the same paths against a real AgentOS; these cover the
events a stand-in model cannot make Agno emit: reasoning, tool errors, produced files.)
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Callable
from typing import Any

from aiohttp import web

from qa_ws_cli.agents.agno import create
from qa_ws_cli.agents.base import ChatContext
from qa_ws_cli.agents.events import (
    Attachment,
    Piece,
    Reasoning,
    ToolFailed,
    ToolFinished,
    ToolStarted,
)
from qa_ws_cli.errors import AgentError

from .conftest import CONTEXT, Serve, agent_settings, agno_event, agno_run, stream_all

Keep = Callable[[Any], Any]
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8


def tool(name: str, **fields: Any) -> dict[str, Any]:
    return {"tool_call_id": "call-9", "tool_name": name, "created_at": 1757348314, **fields}


def with_events(*events: bytes, deltas: list[str] | None = None, **done: Any) -> bytes:
    """A run whose extra events come before its content; ``done`` adds to RunCompleted."""
    run = agno_run(deltas if deltas is not None else ["Done."])
    head, sep, rest = run.partition(b"event: RunContent\n")
    payload = head + b"".join(events) + sep + rest
    if done:
        tail = agno_event("RunCompleted", content="".join(deltas or ["Done."]), **done)
        payload = payload[: payload.rindex(b"event: RunCompleted")] + tail
    return payload


async def run_against(serve: Serve, closing: Keep, payload: bytes, ctx: ChatContext = CONTEXT):
    seen: list[web.Request] = []
    files: list[tuple[str, str, bytes]] = []

    async def runs(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.name == "files":
                    kind = part.headers.get("Content-Type", "")
                    files.append((part.filename or "", kind, await part.read()))  # type: ignore[union-attr]
        else:
            await request.post()
        return await stream_all(request, payload)

    app = web.Application()
    app.router.add_post("/agents/qa/runs", runs)
    base = await serve(app)
    agent = closing(create(f"{base}agents/qa", agent_settings()))
    items: list[Piece] = [item async for item in agent.events("q", ctx)]
    return items, files


async def test_tools_reasoning_and_unknown_events(serve: Serve, closing: Keep) -> None:
    payload = with_events(
        agno_event("ReasoningStarted"),
        agno_event("ReasoningContentDelta", reasoning_content="First, the plan. "),
        agno_event("ReasoningStep", content={"title": "Check", "reasoning": "Look it up"}),
        agno_event("MemoryUpdateStarted"),  # not mapped: dropped
        agno_event("ToolCallStarted", tool=tool("lookup", tool_args={"feature": "login"})),
        agno_event(
            "ToolCallCompleted",
            tool=tool("lookup", result="plan A", metrics={"duration": 0.12}),
        ),
        agno_event("ToolCallStarted", tool=tool("run_check", tool_call_id="call-10")),
        agno_event(
            "ToolCallCompleted",
            tool=tool("run_check", tool_call_id="call-10", tool_call_error=True, result="boom"),
        ),
        agno_event("ToolCallError", tool=tool("run_check", tool_call_id="call-10"), error="boom"),
        agno_event("SomethingNew", content="from a later Agno"),
    )
    items, _ = await run_against(serve, closing, payload)
    assert items == [
        Reasoning("First, the plan. "),
        Reasoning("Look it up"),
        ToolStarted("call-9", "lookup", {"feature": "login"}),
        ToolFinished("call-9", "lookup", "plan A", 120.0),
        ToolStarted("call-10", "run_check", {}),
        ToolFailed("call-10", "run_check", "boom"),  # once, though Agno reports it twice
        "Done.",
    ]


async def test_attachments_go_as_files_and_produced_media_come_back(
    serve: Serve, closing: Keep
) -> None:
    images = [{"id": "i1", "mime_type": "image/png", "content": base64.b64encode(PNG).decode()}]
    produced = [
        {"id": "f1", "mime_type": "text/csv", "filename": "results.csv", "content": "a,b\n1,2\n"},
        {"id": "f2", "url": "https://elsewhere.example/x.pdf"},  # a link only: not fetched
    ]
    payload = with_events(deltas=["See the chart."], images=images, files=produced)
    ctx = ChatContext(
        session_id="s",
        user="alice",
        message_id="m",
        attachments=(
            Attachment("shot.png", "image/png", PNG),
            Attachment("junit.xml", "application/xml", b"<testsuite/>"),
        ),
    )
    items, files = await run_against(serve, closing, payload, ctx)
    assert files == [("shot.png", "image/png", PNG), ("junit.xml", "text/xml", b"<testsuite/>")]
    assert items == [
        "See the chart.",
        Attachment("image-1", "image/png", PNG),
        Attachment("results.csv", "text/csv", b"a,b\n1,2\n"),
    ]


async def test_cancel_without_a_run_or_when_agentos_refuses(serve: Serve, closing: Keep) -> None:
    release = asyncio.Event()
    cancels: list[str] = []

    async def slow_run(request: web.Request) -> web.StreamResponse:
        await request.post()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(agno_event("RunStarted", run_id="run-7", session_id="sess-x"))
        await release.wait()
        return response

    async def cancel(request: web.Request) -> web.Response:
        cancels.append(f"{request.match_info['run']}?{request.query_string}")
        return web.json_response({"detail": "no"}, status=500)

    app = web.Application()
    app.router.add_post("/agents/qa/runs", slow_run)
    app.router.add_post("/agents/qa/runs/{run}/cancel", cancel)
    base = await serve(app)
    agent = closing(create(f"{base}agents/qa", agent_settings()))
    ctx = ChatContext(session_id="sess-x", user="alice", message_id="m-1")
    assert await agent.cancel(ctx) is False  # no run for this message
    items = agent.events("q", ctx)
    task = asyncio.ensure_future(anext(items))  # the run starts; it never answers
    await asyncio.sleep(0)  # let it register before the POST (a cancel waits for RunStarted)
    assert await agent.cancel(ctx) is False  # waited for RunStarted, asked, was refused
    assert cancels == ["run-7?session_id=sess-x"]  # the run's id, with its session
    release.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, AgentError):
        await task
    await items.aclose()  # type: ignore[attr-defined]
