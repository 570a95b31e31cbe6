"""Local stand-ins for the upstreams: aiohttp servers on 127.0.0.1 that write what Agno's
AgentOS and an OpenAI-compatible server write, byte for byte, in small random pieces."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from qa_ws_cli.agents.base import Agent, ChatContext, Turn
from qa_ws_cli.config import AgentSettings

Serve = Callable[[web.Application], Awaitable[URL]]
A = TypeVar("A", bound=Agent)

CONTEXT = ChatContext(
    session_id="sess-1",
    user="alice",
    message_id="m-1",
    history=(Turn("user", "What is a smoke test?"), Turn("assistant", "A quick check.")),
)


async def consume(pieces: AsyncIterator[str], into: list[str]) -> None:
    """Read an answer into ``into``, so a test sees what came before a failure."""
    async for piece in pieces:
        into.append(piece)


def agent_settings(**overrides: Any) -> AgentSettings:
    values: dict[str, Any] = {
        "timeout_s": 3.0,
        "connect_timeout_s": 1.0,
        "retries": 1,
        "max_concurrency": 4,
        "max_queue": 4,
    }
    values.update(overrides)
    return AgentSettings(**values)


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Start an app on an ephemeral port; every server stops when the test ends."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> URL:
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server(shutdown_timeout=0.2)
        servers.append(server)
        return server.make_url("/")

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def closing() -> AsyncIterator[Callable[[A], A]]:
    """Register an agent to be closed after the test (its pooled session with it)."""
    made: list[Agent] = []

    def keep(agent: A) -> A:
        made.append(agent)
        return agent

    yield keep
    for agent in made:
        await agent.aclose()


@pytest.fixture
def refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def blackhole_port() -> Iterator[int]:
    """A port whose accept queue is full, so a connect hangs until its timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(address)
        fillers.append(filler)
    yield address[1]
    for sock in (*fillers, listener):
        sock.close()


@dataclass
class Seen:
    """One request as the fake upstream received it."""

    path: str
    headers: dict[str, str]
    form: dict[str, str] = field(default_factory=dict)
    json: Any = None


async def record(request: web.Request, seen: list[Seen]) -> Seen:
    entry = Seen(path=request.path, headers=dict(request.headers))
    if request.content_type == "application/json":
        entry.json = await request.json()
    elif request.method == "POST":
        entry.form = {key: str(value) for key, value in (await request.post()).items()}
    seen.append(entry)
    return entry


def served(payload: bytes, *, crlf: bool = False, keepalive: bool = False) -> bytes:
    """The stream as a proxy or another server might pass it: ``\\r\\n`` and comments."""
    if keepalive:
        payload = b": keep-alive\n\n" + payload.replace(b"\n\n", b"\n\n: keep-alive\n\n", 2)
    if crlf:
        payload = payload.replace(b"\n", b"\r\n")
    return payload


async def start_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    return response


async def write_chunked(
    response: web.StreamResponse, payload: bytes, *, seed: int = 7, max_chunk: int = 9
) -> None:
    """Write in random small pieces, each drained, so events split at any byte."""
    rng = random.Random(seed)
    position = 0
    while position < len(payload):
        size = rng.randint(1, max_chunk)
        await response.write(payload[position : position + size])
        await asyncio.sleep(0)
        position += size


async def stream_all(request: web.Request, payload: bytes, **chunking: Any) -> web.StreamResponse:
    response = await start_stream(request)
    await write_chunked(response, payload, **chunking)
    await response.write_eof()
    return response


# --- Agno AgentOS: format_sse_event() in libs/agno/agno/os/utils.py ---------------------


def agno_event(name: str, *, team: bool = False, **fields: Any) -> bytes:
    owner = (
        {"team_id": "qa-team", "team_name": "QA Team"}
        if team
        else {"agent_id": "qa", "agent_name": "QA Helper"}
    )
    body = {"created_at": 1757348314, "event": name, **owner, "run_id": "run-1"}
    body["session_id"] = "sess-1"
    body.update(fields)
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return f"event: {name}\ndata: {data}\n\n".encode()


def agno_run(deltas: list[str], *, completed: str | None = None, team: bool = False) -> bytes:
    """A whole run as AgentOS streams it: started, content deltas, completed."""
    prefix = "Team" if team else ""
    parts = [agno_event(f"{prefix}RunStarted", team=team, model="gpt-4o", model_provider="OpenAI")]
    parts += [
        agno_event(f"{prefix}RunContent", team=team, content=delta, content_type="str")
        for delta in deltas
    ]
    parts.append(agno_event(f"{prefix}RunContentCompleted", team=team))
    whole = "".join(deltas) if completed is None else completed
    parts.append(agno_event(f"{prefix}RunCompleted", team=team, content=whole, content_type="str"))
    return b"".join(parts)


# --- OpenAI-compatible chat completions (as Ollama / vLLM / OpenAI write them) ----------


def openai_chunk(
    content: str | None = None, *, role: str | None = None, finish: str | None = None
) -> bytes:
    delta: dict[str, str] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    body = {
        "id": "chatcmpl-42",
        "object": "chat.completion.chunk",
        "created": 1757348314,
        "model": "qa-model",
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(body, ensure_ascii=False).encode() + b"\n\n"


def openai_stream(deltas: list[str], *, done: bool = True) -> bytes:
    parts = [openai_chunk("", role="assistant")]
    parts += [openai_chunk(delta) for delta in deltas]
    parts.append(openai_chunk(finish="stop"))
    usage = {"id": "chatcmpl-42", "object": "chat.completion.chunk", "choices": []}
    parts.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    if done:
        parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


# --- a model that calls a tool, as an OpenAI-compatible server writes it --------------------


def openai_tool_call(call_id: str, name: str, arguments: str) -> bytes:
    """A streamed tool call: the name first, the arguments in two pieces, then the finish."""
    half = len(arguments) // 2
    first = {"index": 0, "id": call_id, "type": "function"}
    first["function"] = {"name": name, "arguments": ""}  # type: ignore[assignment]
    pieces = [
        {"role": "assistant", "content": None, "tool_calls": [first]},
        {"tool_calls": [{"index": 0, "function": {"arguments": arguments[:half]}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": arguments[half:]}}]},
    ]
    chunks = []
    for delta in pieces:
        body = {
            "id": "chatcmpl-7",
            "object": "chat.completion.chunk",
            "created": 1757348314,
            "model": "qa-model",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        chunks.append(b"data: " + json.dumps(body).encode() + b"\n\n")
    end = {
        "id": "chatcmpl-7",
        "object": "chat.completion.chunk",
        "created": 1757348314,
        "model": "qa-model",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
    }
    chunks.append(b"data: " + json.dumps(end).encode() + b"\n\n")
    chunks.append(b"data: [DONE]\n\n")
    return b"".join(chunks)


@dataclass
class ModelCall:
    """What the stand-in model saw in one request."""

    body: dict[str, Any]
    saw_image: bool
    texts: list[str]
    tool_results: list[str]


@dataclass
class ToolModel:
    """An OpenAI-compatible model: with tools offered and no tool result yet, it calls
    ``lookup_test_plan`` (``feature`` "slow" when the question says so, else "login");
    otherwise it answers, saying whether the user's message held an image part."""

    calls: list[ModelCall] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        return app

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "qa-model"}]})

    def _read(self, body: dict[str, Any]) -> ModelCall:
        saw_image, texts, results = False, [], []
        for message in body.get("messages", []):
            content = message.get("content")
            if message.get("role") == "tool":
                results.append(str(content))
            elif message.get("role") == "user" and isinstance(content, list):
                for part in content:
                    saw_image = saw_image or part.get("type") == "image_url"
                    if part.get("type") == "text":
                        texts.append(part["text"])
            elif message.get("role") == "user" and isinstance(content, str):
                texts.append(content)
        return ModelCall(body, saw_image, texts, results)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        call = self._read(await request.json())
        self.calls.append(call)
        if call.body.get("tools") and not call.tool_results:
            feature = "slow" if any("slow" in text for text in call.texts) else "login"
            arguments = json.dumps({"feature": feature})
            return await stream_all(
                request, openai_tool_call("call_1", "lookup_test_plan", arguments)
            )
        seen = "yes" if call.saw_image else "no"
        result = call.tool_results[-1] if call.tool_results else "no tool"
        deltas = ["Here is ", "the plan. ", f"Tool said: {result}. ", f"Image seen: {seen}."]
        return await stream_all(request, openai_stream(deltas))
