"""The OpenAI-compatible backend against a local server that streams like Ollama / OpenAI."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.agents.bounded import BoundedAgent
from qa_ws_cli.agents.openai import OpenAIChatAgent, create
from qa_ws_cli.agents.registry import load_agent
from qa_ws_cli.errors import AgentError, ConfigError

from .conftest import (
    CONTEXT,
    Seen,
    Serve,
    agent_settings,
    consume,
    openai_chunk,
    openai_stream,
    record,
    served,
    start_stream,
    stream_all,
    write_chunked,
)

Keep = Callable[[Any], Any]
KEY = "sk-test-abc123"


def model(base: URL, keep: Keep, **overrides: Any) -> BoundedAgent:
    values: dict[str, Any] = {"model": "llama3.2"}
    values.update(overrides)
    agent = create(f"{base}v1", agent_settings(**values))
    assert isinstance(agent, BoundedAgent)
    assert isinstance(agent.inner, OpenAIChatAgent)
    agent.inner.backoff_s = 0.01
    keep(agent)
    return agent


async def answer(agent: Agent, context: ChatContext = CONTEXT) -> list[str]:
    return [piece async for piece in agent.stream("And a regression suite?", context)]


def app_with(handler: Any) -> web.Application:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    return app


@pytest.mark.parametrize("crlf", [False, True])
async def test_streams_deltas_with_history_system_prompt_and_user(
    serve: Serve, closing: Keep, monkeypatch: pytest.MonkeyPatch, crlf: bool
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    seen: list[Seen] = []
    deltas = ["Rank ", "by risk, ", "then by récent change."]

    async def completions(request: web.Request) -> web.StreamResponse:
        await record(request, seen)
        return await stream_all(request, served(openai_stream(deltas), crlf=crlf, keepalive=True))

    agent = model(await serve(app_with(completions)), closing, system_prompt="You are a QA coach.")
    assert await answer(agent) == deltas
    [request] = seen
    assert request.json == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "You are a QA coach."},
            {"role": "user", "content": "What is a smoke test?"},
            {"role": "assistant", "content": "A quick check."},
            {"role": "user", "content": "And a regression suite?"},
        ],
        "stream": True,
        "user": "alice",
    }
    assert request.headers["Authorization"] == f"Bearer {KEY}"


async def test_no_system_prompt_no_history_no_key(
    serve: Serve, closing: Keep, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seen: list[Seen] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        await record(request, seen)
        return await stream_all(request, openai_stream(["Hi."]))

    agent = model(await serve(app_with(completions)), closing)
    assert await answer(agent, ChatContext(user="bob")) == ["Hi."]
    assert seen[0].json["messages"] == [{"role": "user", "content": "And a regression suite?"}]
    assert "Authorization" not in seen[0].headers


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (openai_stream([]), "the agent returned an empty answer"),
        (openai_stream(["Half an answer"], done=False), "ended before it was complete"),
        (b"data: {oops}\n\n", "the agent sent a malformed answer"),
        (b"data: 42\n\n", "the agent sent a malformed answer"),
        (b'data: {"choices": {"0": {}}}\n\n', "the agent sent a malformed answer"),
        (b'data: {"choices": ["x"]}\n\ndata: [DONE]\n\n', "empty answer"),
        (
            openai_chunk("Par")
            + b'data: {"error": {"message": "CUDA out of memory", "type": "server_error"}}\n\n',
            "the model server reported an error",
        ),
        (b'data: {"object": "error", "message": "model not loaded"}\n\n', "reported an error"),
    ],
)
async def test_bad_streams_are_safe_agent_errors(
    serve: Serve, closing: Keep, payload: bytes, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def completions(request: web.Request) -> web.StreamResponse:
        return await stream_all(request, payload)

    agent = model(await serve(app_with(completions)), closing)
    with caplog.at_level(logging.WARNING, "qa_ws.agents"), pytest.raises(AgentError) as caught:
        await answer(agent)
    assert message in caught.value.message
    assert type(caught.value) is AgentError
    if b"CUDA" in payload:
        assert "CUDA" not in caught.value.message
        assert "CUDA out of memory" in caplog.text


async def test_unauthorized_is_safe(
    serve: Serve, closing: Keep, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("LLM_KEY", KEY)

    async def completions(request: web.Request) -> web.Response:
        body = {
            "error": {"message": f"Incorrect API key provided: {KEY}", "code": "invalid_api_key"}
        }
        return web.json_response(body, status=401)

    agent = model(await serve(app_with(completions)), closing, api_key_env="LLM_KEY")
    with caplog.at_level(logging.WARNING, "qa_ws.agents"), pytest.raises(AgentError) as caught:
        await answer(agent)
    assert caught.value.message == "the agent backend refused the gateway's credentials"
    assert "Incorrect API key provided: [redacted]" in caplog.text
    assert KEY not in caplog.text


async def test_retry_once_then_stream_and_no_retry_after_a_delta(
    serve: Serve, closing: Keep
) -> None:
    seen: list[Seen] = []

    async def completions(request: web.Request) -> web.StreamResponse:
        await record(request, seen)
        if len(seen) == 1:
            return web.Response(status=504)
        response = await start_stream(request)
        await write_chunked(response, openai_chunk("", role="assistant") + openai_chunk("Par"))
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.abort()
        await asyncio.sleep(5)
        return response

    agent = model(await serve(app_with(completions)), closing, retries=3)
    pieces: list[str] = []
    with pytest.raises(AgentError, match="lost mid-answer"):
        await consume(agent.stream("q", CONTEXT), pieces)
    assert pieces == ["Par"]
    assert len(seen) == 2


async def test_cancellation_closes_the_upstream_stream(serve: Serve, closing: Keep) -> None:
    closed = asyncio.Event()

    async def completions(request: web.Request) -> web.StreamResponse:
        response = await start_stream(request)
        try:
            await response.write(openai_chunk("tick "))
            while True:
                await asyncio.sleep(0.01)
                await response.write(openai_chunk("tick "))
        except (ConnectionResetError, asyncio.CancelledError):
            closed.set()
            raise

    agent = model(await serve(app_with(completions)), closing)
    got: list[str] = []

    async def consume() -> None:
        async for piece in agent.stream("q", CONTEXT):
            got.append(piece)

    task = asyncio.create_task(consume())
    while len(got) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(closed.wait(), 2)


async def test_check_lists_models_with_the_key(
    serve: Serve, closing: Keep, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    seen: list[Seen] = []

    async def models(request: web.Request) -> web.Response:
        entry = await record(request, seen)
        if entry.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"object": "list", "data": [{"id": "llama3.2"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    base = await serve(app)
    assert await model(base, closing).check() is True
    assert seen[0].path == "/v1/models"
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    assert await model(base, closing).check() is False


def test_model_is_required_and_urls_are_built() -> None:
    with pytest.raises(ConfigError) as caught:
        create("http://127.0.0.1:11434/v1", agent_settings())
    assert caught.value.path == "websocket.agent.model"
    with pytest.raises(ConfigError):
        create("unix:/tmp/sock", agent_settings(model="m"))
    agent = load_agent(agent_settings(spec="openai+http://127.0.0.1:11434/v1/", model="qwen2.5"))
    assert isinstance(agent, BoundedAgent)
    assert isinstance(agent.inner, OpenAIChatAgent)
    assert str(agent.inner.completions_url) == "http://127.0.0.1:11434/v1/chat/completions"
    assert agent.name == "openai"


def test_messages_are_plain_json() -> None:
    agent = OpenAIChatAgent(base=URL("http://h/v1"), model="m", settings=agent_settings())
    assert json.dumps(agent.messages("q", ChatContext())) == '[{"role": "user", "content": "q"}]'
