"""The Agno AgentOS backend against a local server that streams like AgentOS."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from qa_ws_cli.agents.agno import AgnoAgent, create, parse_target
from qa_ws_cli.agents.base import Agent
from qa_ws_cli.agents.bounded import BoundedAgent
from qa_ws_cli.agents.registry import load_agent
from qa_ws_cli.errors import AgentBusy, AgentError, AgentTimeout, ConfigError

from .conftest import (
    CONTEXT,
    Seen,
    Serve,
    agent_settings,
    agno_event,
    agno_run,
    consume,
    record,
    served,
    start_stream,
    stream_all,
    write_chunked,
)

Keep = Callable[[Any], Any]
KEY = "os-security-key-123"


def agno(base: URL, keep: Keep, path: str = "agents/qa", **overrides: Any) -> BoundedAgent:
    agent = create(f"{base}{path}", agent_settings(**overrides))
    assert isinstance(agent, BoundedAgent)
    assert isinstance(agent.inner, AgnoAgent)
    agent.inner.backoff_s = 0.01
    keep(agent)
    return agent


async def answer(agent: Agent) -> list[str]:
    return [piece async for piece in agent.stream("How do I test a login form?", CONTEXT)]


def app_with(handler: Any, path: str = "/agents/qa/runs") -> web.Application:
    app = web.Application()
    app.router.add_post(path, handler)
    return app


@pytest.mark.parametrize(("crlf", "keepalive"), [(False, False), (True, True), (False, True)])
async def test_streams_deltas_and_sends_the_session(
    serve: Serve, closing: Keep, monkeypatch: pytest.MonkeyPatch, crlf: bool, keepalive: bool
) -> None:
    monkeypatch.setenv("AGNO_API_KEY", KEY)
    seen: list[Seen] = []
    deltas = ["Cover valid ", "and ïnvalid ", "credentials ✓, ", "lockout and a11y."]

    async def runs(request: web.Request) -> web.StreamResponse:
        await record(request, seen)
        payload = served(agno_run(deltas), crlf=crlf, keepalive=keepalive)
        return await stream_all(request, payload, seed=len(payload))

    agent = agno(await serve(app_with(runs)), closing)
    assert await answer(agent) == deltas
    [request] = seen
    assert request.path == "/agents/qa/runs"
    assert request.form == {
        "message": "How do I test a login form?",
        "stream": "true",
        "session_id": "sess-1",
        "user_id": "alice",
    }
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["Accept"] == "text/event-stream"


async def test_each_delta_is_yielded_as_soon_as_it_arrives(serve: Serve, closing: Keep) -> None:
    gate = asyncio.Event()

    async def runs(request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        await response.write(agno_event("RunStarted") + agno_event("RunContent", content="one "))
        await gate.wait()  # the rest only once the client has shown the first delta
        await response.write(agno_event("RunContent", content="two"))
        await response.write(agno_event("RunCompleted", content="one two"))
        return response

    agent = agno(await serve(app_with(runs)), closing)
    pieces = agent.stream("q", CONTEXT)
    assert await asyncio.wait_for(anext(pieces), 2) == "one "
    gate.set()
    assert [piece async for piece in pieces] == ["two"]


async def test_team_answers_and_skips_member_events(serve: Serve, closing: Keep) -> None:
    seen: list[Seen] = []
    member = agno_event("RunContent", content="(member draft)") + agno_event(
        "RunCompleted", content="(member draft)"
    )
    run = agno_run(["Team ", "answer"], team=True)
    payload = run.replace(
        b"event: TeamRunContentCompleted", member + b"event: TeamRunContentCompleted"
    )

    async def runs(request: web.Request) -> web.StreamResponse:
        await record(request, seen)
        return await stream_all(request, payload)

    agent = agno(await serve(app_with(runs, "/teams/qa-team/runs")), closing, "teams/qa-team")
    assert await answer(agent) == ["Team ", "answer"]
    assert seen[0].form["session_id"] == "sess-1"


@pytest.mark.parametrize(
    ("deltas", "completed", "expected"),
    [
        ([], "The whole answer at once.", ["The whole answer at once."]),
        (["The whole "], "The whole answer.", ["The whole ", "answer."]),
        (["Streamed text"], "Rewritten by an output model", ["Streamed text"]),
    ],
)
async def test_run_completed_adds_only_what_the_deltas_lacked(
    serve: Serve, closing: Keep, deltas: list[str], completed: str, expected: list[str]
) -> None:
    async def runs(request: web.Request) -> web.StreamResponse:
        return await stream_all(request, agno_run(deltas, completed=completed))

    agent = agno(await serve(app_with(runs)), closing)
    assert await answer(agent) == expected


async def test_structured_content_and_unnamed_events(serve: Serve, closing: Keep) -> None:
    """An output schema makes ``content`` an object; an event without ``event:`` is named
    by its JSON."""
    unnamed = agno_event("RunContent", content={"verdict": "pass"})
    unnamed += agno_event("ToolCallStarted", tool={"tool_name": "search"})
    payload = unnamed.replace(b"event: RunContent\n", b"").replace(b"event: ToolCallStarted\n", b"")
    payload += agno_event("RunContent", content=None, reasoning_content="thinking...")
    payload += agno_event("RunCompleted", content={"verdict": "pass"})

    async def runs(request: web.Request) -> web.StreamResponse:
        return await stream_all(request, payload)

    agent = agno(await serve(app_with(runs)), closing)
    assert await answer(agent) == ['{"verdict": "pass"}']


async def test_run_error_is_safe_and_logged(
    serve: Serve, closing: Keep, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = "OpenAI API key sk-live-XYZ rejected by https://api.openai.com"

    async def runs(request: web.Request) -> web.StreamResponse:
        payload = agno_event("RunStarted") + agno_event("RunContent", content="Par")
        payload += agno_event("RunError", content=upstream, error_type="ModelProviderError")
        return await stream_all(request, payload)

    agent = agno(await serve(app_with(runs)), closing)
    pieces: list[str] = []
    with caplog.at_level(logging.WARNING, "qa_ws.agents"), pytest.raises(AgentError) as caught:
        await consume(agent.stream("q", CONTEXT), pieces)
    assert pieces == ["Par"]
    assert caught.value.message == "the agent reported an error"
    assert caught.value.code == "agent_error"
    assert upstream in caplog.text
    assert "ModelProviderError" in caplog.text


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ("RunCancelled", "the agent's run was cancelled by its server"),
        ("RunPaused", "the agent paused for a confirmation the gateway cannot give"),
    ],
)
async def test_runs_that_end_without_an_answer(
    serve: Serve, closing: Keep, event: str, message: str
) -> None:
    async def runs(request: web.Request) -> web.StreamResponse:
        return await stream_all(request, agno_event("RunStarted") + agno_event(event))

    agent = agno(await serve(app_with(runs)), closing)
    with pytest.raises(AgentError, match=message):
        await answer(agent)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"event: RunContent\ndata: {not json\n\n", "the agent sent a malformed answer"),
        (b'event: RunContent\ndata: ["a list"]\n\n', "the agent sent a malformed answer"),
        (agno_event("RunStarted") + agno_event("RunContent", content="cut"), "ended before"),
        (agno_run([], completed=""), "the agent returned an empty answer"),
        (b"data: {}\n\n" + b"event: message\ndata: []\n\n", "the agent sent a malformed answer"),
    ],
)
async def test_malformed_cut_off_and_empty_streams(
    serve: Serve, closing: Keep, payload: bytes, message: str
) -> None:
    async def runs(request: web.Request) -> web.StreamResponse:
        return await stream_all(request, payload)

    agent = agno(await serve(app_with(runs)), closing)
    with pytest.raises(AgentError, match=message) as caught:
        await answer(agent)
    assert type(caught.value) is AgentError


async def test_a_line_without_end_is_refused(serve: Serve, closing: Keep) -> None:
    async def runs(request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        await response.write(b"data: " + b"x" * (1 << 20) + b"x")
        await response.write(b"x" * 10)
        return response

    agent = agno(await serve(app_with(runs)), closing)
    with pytest.raises(AgentError, match="malformed"):
        await answer(agent)


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (401, AgentError, "the agent backend refused the gateway's credentials"),
        (403, AgentError, "the agent backend refused the gateway's credentials"),
        (404, AgentError, r"the agent backend failed \(HTTP 404\)"),
        (429, AgentBusy, "the agent is busy, retry shortly"),
        (500, AgentError, r"the agent backend failed \(HTTP 500\)"),
    ],
)
async def test_http_errors_are_safe_and_not_retried(
    serve: Serve,
    closing: Keep,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    status: int,
    error: type[AgentError],
    message: str,
) -> None:
    monkeypatch.setenv("QA_AGNO_KEY", KEY)
    seen: list[Seen] = []

    async def runs(request: web.Request) -> web.Response:
        await record(request, seen)
        echoed = request.headers.get("Authorization", "")
        return web.json_response(
            {"detail": f"Invalid authentication token {echoed}"}, status=status
        )

    base = await serve(app_with(runs))
    agent = agno(base, closing, retries=2, api_key_env="QA_AGNO_KEY")
    with (
        caplog.at_level(logging.WARNING, "qa_ws.agents"),
        pytest.raises(error, match=message) as caught,
    ):
        await answer(agent)
    assert len(seen) == 1
    assert seen[0].headers["Authorization"] == f"Bearer {KEY}"
    text = str(caught.value)
    assert "127.0.0.1" not in text
    assert KEY not in text
    assert "Invalid" not in text
    assert f"HTTP {status}" in caplog.text
    assert "Invalid authentication token" in caplog.text
    assert KEY not in caplog.text


async def test_error_body_that_breaks_off_is_still_mapped(closing: Keep) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 100\r\n\r\n")
        await writer.drain()
        writer.transport.abort()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        agent = agno(URL(f"http://127.0.0.1:{port}/"), closing)
        with pytest.raises(AgentError, match=r"HTTP 500"):
            await answer(agent)
    finally:
        server.close()
        await server.wait_closed()


async def test_503_is_retried_before_the_answer_begins(
    serve: Serve, closing: Keep, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Seen] = []

    async def runs(request: web.Request) -> web.StreamResponse:
        await record(request, seen)
        if len(seen) == 1:
            return web.Response(status=503, text="warming up")
        return await stream_all(request, agno_run(["Ready ", "now."]))

    agent = agno(await serve(app_with(runs)), closing)
    with caplog.at_level(logging.WARNING, "qa_ws.agents"):
        assert await answer(agent) == ["Ready ", "now."]
    assert len(seen) == 2
    assert "HTTP 503 before the answer began; retry 1/1" in caplog.text


async def test_retries_give_up_after_the_configured_count(serve: Serve, closing: Keep) -> None:
    seen: list[Seen] = []

    async def runs(request: web.Request) -> web.Response:
        await record(request, seen)
        return web.Response(status=502)

    agent = agno(await serve(app_with(runs)), closing, retries=2)
    with pytest.raises(AgentError, match=r"unavailable \(HTTP 502\)"):
        await answer(agent)
    assert len(seen) == 3


async def test_a_reset_before_the_response_is_retried(serve: Serve, closing: Keep) -> None:
    seen: list[Seen] = []

    async def runs(request: web.Request) -> web.StreamResponse:
        await record(request, seen)
        if len(seen) == 1:
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(5)
        return await stream_all(request, agno_run(["Second try."]))

    agent = agno(await serve(app_with(runs)), closing)
    assert await answer(agent) == ["Second try."]
    assert len(seen) == 2


async def test_a_reset_after_the_first_delta_is_not_retried(serve: Serve, closing: Keep) -> None:
    seen: list[Seen] = []

    async def runs(request: web.Request) -> web.StreamResponse:
        await record(request, seen)
        response = await start_stream(request)
        await write_chunked(
            response, agno_event("RunStarted") + agno_event("RunContent", content="Half")
        )
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(5)
        return response

    agent = agno(await serve(app_with(runs)), closing, retries=3)
    pieces: list[str] = []
    with pytest.raises(AgentError, match="the connection to the agent was lost mid-answer"):
        await consume(agent.stream("q", CONTEXT), pieces)
    assert pieces == ["Half"]
    assert len(seen) == 1


async def test_refused_connections_are_retried_then_reported(
    closing: Keep, refused_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    agent = agno(URL(f"http://127.0.0.1:{refused_port}/"), closing, retries=2)
    with caplog.at_level(logging.WARNING, "qa_ws.agents"), pytest.raises(AgentError) as caught:
        await answer(agent)
    assert caught.value.message == "the agent backend is unreachable"
    assert "retry 2/2" in caplog.text


@pytest.mark.skipif(
    sys.platform != "linux", reason="relies on Linux dropping SYNs to a full backlog"
)
async def test_connect_timeout_is_an_agent_timeout(closing: Keep, blackhole_port: int) -> None:
    agent = agno(
        URL(f"http://127.0.0.1:{blackhole_port}/"), closing, connect_timeout_s=0.1, retries=0
    )
    with pytest.raises(AgentTimeout):
        await answer(agent)


async def test_backoff_that_would_pass_the_deadline_times_out(serve: Serve, closing: Keep) -> None:
    async def runs(request: web.Request) -> web.Response:
        return web.Response(status=503)

    agent = agno(await serve(app_with(runs)), closing, timeout_s=0.3)
    agent.inner.backoff_s = 1.0  # type: ignore[attr-defined]
    with pytest.raises(AgentTimeout):
        await answer(agent)


@pytest.mark.parametrize("headers_first", [False, True])
async def test_an_upstream_that_hangs_times_out(
    serve: Serve, closing: Keep, headers_first: bool
) -> None:
    async def runs(request: web.Request) -> web.StreamResponse:
        if headers_first:
            response = await start_stream(request)
            await response.write(agno_event("RunStarted"))
        await asyncio.sleep(10)
        raise AssertionError("the client should have given up")

    agent = agno(await serve(app_with(runs)), closing, timeout_s=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AgentTimeout) as caught:
        await answer(agent)
    assert caught.value.code == "agent_timeout"
    assert loop.time() - started < 2


def endless(closed: asyncio.Event) -> Any:
    """A handler that streams until its client goes away, then sets ``closed``."""

    async def runs(request: web.Request) -> web.StreamResponse:
        return await _endless(request, closed)

    return runs


async def _endless(request: web.Request, closed: asyncio.Event) -> web.StreamResponse:
    response = await start_stream(request)
    try:
        await response.write(agno_event("RunStarted") + agno_event("RunContent", content="..."))
        while True:
            await asyncio.sleep(0.01)
            await response.write(b": keep-alive\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        closed.set()
        raise


async def test_cancelling_the_consumer_closes_the_upstream_stream(
    serve: Serve, closing: Keep
) -> None:
    closed = asyncio.Event()
    agent = agno(await serve(app_with(endless(closed))), closing)
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in agent.stream("q", CONTEXT):
            first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(first.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(closed.wait(), 2)
    assert (agent.running, agent.waiting) == (0, 0)


async def test_closing_the_generator_closes_the_upstream_stream(
    serve: Serve, closing: Keep
) -> None:
    closed = asyncio.Event()
    agent = agno(await serve(app_with(endless(closed))), closing)
    pieces = agent.stream("q", CONTEXT)
    assert await asyncio.wait_for(anext(pieces), 2) == "..."
    await pieces.aclose()  # type: ignore[attr-defined]
    await asyncio.wait_for(closed.wait(), 2)


async def test_check_uses_agentos_health(serve: Serve, closing: Keep, refused_port: int) -> None:
    status = {"code": 200}

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, status=status["code"])

    app = web.Application()
    app.router.add_get("/health", health)
    agent = agno(await serve(app), closing)
    assert await agent.check() is True
    status["code"] = 500
    assert await agent.check() is False
    status["code"] = 200
    assert await agent.check() is True
    assert await agent.check() is True  # no change: logged once, not on every probe
    down = agno(URL(f"http://127.0.0.1:{refused_port}/"), closing)
    assert await down.check() is False


async def test_the_session_is_pooled_and_made_again_after_aclose(
    serve: Serve, closing: Keep
) -> None:
    async def runs(request: web.Request) -> web.StreamResponse:
        return await stream_all(request, agno_run(["ok"]))

    agent = agno(await serve(app_with(runs)), closing)
    inner: AgnoAgent = agent.inner  # type: ignore[assignment]
    assert await answer(agent) == ["ok"]
    session = inner._session
    assert await answer(agent) == ["ok"]
    assert inner._session is session
    await agent.aclose()
    assert session is not None
    assert session.closed
    assert await answer(agent) == ["ok"]
    assert inner._session is not session
    await agent.aclose()
    await agent.aclose()  # twice is harmless
    assert inner._session is None


def test_spec_parsing() -> None:
    base, kind, component = parse_target("http://agents.local:7777/api/v1/teams/t-1/")
    assert (str(base), kind, component) == ("http://agents.local:7777/api/v1", "teams", "t-1")
    agent = AgnoAgent(base=base, kind=kind, component_id=component, settings=agent_settings())
    assert str(agent.runs_url) == "http://agents.local:7777/api/v1/teams/t-1/runs"
    assert agent.prefix == "Team"
    loaded = load_agent(agent_settings(spec="agno+https://os.example:443/agents/qa"))
    assert isinstance(loaded, BoundedAgent)
    assert isinstance(loaded.inner, AgnoAgent)
    assert str(loaded.inner.runs_url) == "https://os.example/agents/qa/runs"


@pytest.mark.parametrize(
    "target",
    [
        "ftp://host/agents/qa",
        "http:///agents/qa",
        "http://host:7777/",
        "http://host:7777/agents/",
        "http://host:7777/workflows/qa",
        "http://host:99999999/agents/qa",
    ],
)
def test_bad_specs_are_config_errors(target: str) -> None:
    with pytest.raises(ConfigError) as caught:
        create(target, agent_settings())
    assert caught.value.path == "websocket.agent.spec"
