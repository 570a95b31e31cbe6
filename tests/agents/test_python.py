"""``python:module:attr`` agents, imported from this very module."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.agents.builtin import EchoAgent
from qa_ws_cli.agents.events import Attachment, Reasoning, ToolFinished, ToolStarted
from qa_ws_cli.agents.python import PythonAgent, create
from qa_ws_cli.agents.registry import load_agent
from qa_ws_cli.errors import AgentBusy, AgentError, AgentTimeout, ConfigError

from .conftest import CONTEXT, agent_settings, consume

HERE = __name__


def spec(attr: str) -> str:
    return f"python:{HERE}:{attr}"


def build(attr: str, **overrides: Any) -> Agent:
    return load_agent(agent_settings(spec=spec(attr), **overrides))


async def answer(agent: Agent, message: str = "hello") -> list[str]:
    return [piece async for piece in agent.stream(message, CONTEXT)]


# --- the objects a user might point the gateway at ---------------------------------------


class PlanAgent:
    """The plan's interface, exactly."""

    async def chat(self, message: str) -> str:
        return f"You asked: {message}"


plan_agent = PlanAgent()


class ContextAgent:
    async def chat(self, message: str, context: ChatContext) -> str:
        return f"{context.user}@{context.session_id}: {message}"


class StreamingAgent:
    def __init__(self) -> None:
        self.closed = False

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        try:
            for word in ("Step ", "by ", "step."):
                yield word
        finally:
            self.closed = True


class IteratorChat:
    def chat(self, message: str) -> AsyncIterator[str]:
        async def pieces() -> AsyncIterator[str]:
            yield "one "
            yield ""
            yield "two"

        return pieces()


class Countdown:
    """An async iterator that is not a generator: it has no ``aclose``."""

    def __init__(self) -> None:
        self.left = ["3 ", "2 ", "1"]

    def __aiter__(self) -> Countdown:
        return self

    async def __anext__(self) -> str:
        if not self.left:
            raise StopAsyncIteration
        return self.left.pop(0)


class CountdownChat:
    async def chat(self, message: str) -> Countdown:
        return Countdown()


class SyncChat:
    def chat(self, message: str) -> str:
        return message.upper()


def make_agent() -> PlanAgent:
    return PlanAgent()


def needs_arguments(model: str) -> PlanAgent:
    return PlanAgent()


def broken_factory() -> PlanAgent:
    raise RuntimeError("no model configured")


BUILDS: list[int] = []


async def async_factory() -> StreamingAgent:
    BUILDS.append(1)
    await asyncio.sleep(0.01)
    return StreamingAgent()


async def async_factory_of_nothing() -> object:
    return object()


async def async_factory_that_fails() -> PlanAgent:
    raise RuntimeError("db down")


async def async_factory_of_an_agent() -> Agent:
    return EchoAgent()


def factory_returning_awaitable() -> Awaitable[PlanAgent]:
    async def later() -> PlanAgent:
        return PlanAgent()

    return later()


class NoMethods:
    stream = True  # an attribute named like a method is not one


no_methods = NoMethods()
echo = EchoAgent()


class Failing:
    async def chat(self, message: str) -> str:
        if message == "busy":
            raise AgentBusy()
        raise RuntimeError(f"secret internals for {message}")


class Odd:
    async def chat(self, message: str) -> Any:
        return {"not": "text"} if message == "dict" else ""


class BadPieces:
    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[Any]:
        if message == "none":
            return
        yield "ok"
        yield 7


class Slow:
    async def chat(self, message: str) -> str:
        await asyncio.sleep(10)
        return "too late"


class SlowStream:
    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        yield "first"
        await asyncio.sleep(10)
        yield "never"


class Checked:
    def __init__(self, ready: Any) -> None:
        self.ready = ready
        self.closed = 0

    async def chat(self, message: str) -> str:
        return "ok"

    async def check(self) -> bool:
        if isinstance(self.ready, Exception):
            raise self.ready
        return bool(self.ready)

    async def aclose(self) -> None:
        self.closed += 1


class SyncClose:
    def __init__(self) -> None:
        self.closed = False

    async def chat(self, message: str) -> str:
        return "ok"

    def check(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class BadClose:
    async def chat(self, message: str) -> str:
        return "ok"

    def close(self) -> None:
        raise OSError("already closed")


# --- tests ---------------------------------------------------------------------------------


async def test_the_plans_interface() -> None:
    agent = build("plan_agent")
    assert isinstance(agent, PythonAgent)
    assert await answer(agent) == ["You asked: hello"]
    assert await agent.chat("hi") == "You asked: hi"
    assert await agent.check() is True


async def test_context_is_passed_when_accepted() -> None:
    assert await answer(build("ContextAgent")) == ["alice@sess-1: hello"]


async def test_streaming_objects_and_iterators_returned_by_chat() -> None:
    assert await answer(build("StreamingAgent")) == ["Step ", "by ", "step."]
    assert await answer(build("IteratorChat")) == ["one ", "two"]
    assert await answer(build("SyncChat")) == ["HELLO"]
    assert await answer(build("CountdownChat")) == ["3 ", "2 ", "1"]


async def test_classes_and_factories_are_built() -> None:
    assert await answer(build("make_agent")) == ["You asked: hello"]
    assert await answer(build("factory_returning_awaitable")) == ["You asked: hello"]


async def test_an_async_factory_runs_once_on_first_use() -> None:
    BUILDS.clear()
    agent = build("async_factory")
    assert BUILDS == []
    first, second, ready = await asyncio.gather(answer(agent), answer(agent), agent.check())
    assert first == second == ["Step ", "by ", "step."]
    assert ready is True
    assert BUILDS == [1]


async def test_an_async_factory_may_build_a_qa_ws_agent() -> None:
    agent = build("async_factory_of_an_agent")
    assert agent.answer_at_once("ping", CONTEXT) is None  # not built yet: the stream builds it
    assert await answer(agent, "ping") == ["ping"]
    assert agent.answer_at_once("pong", CONTEXT) == "pong"  # the built echo answers at once
    assert build("plan_agent").answer_at_once("hi", CONTEXT) is None  # an object: its method


@pytest.mark.parametrize("attr", ["async_factory_of_nothing", "async_factory_that_fails"])
async def test_an_async_factory_that_fails_is_an_agent_error(attr: str) -> None:
    agent = build(attr)
    with pytest.raises(AgentError, match="the agent could not be started"):
        await answer(agent)
    assert await agent.check() is False
    await agent.aclose()  # never built: nothing to close


async def test_an_async_factory_that_hangs_times_out() -> None:
    async def hang() -> object:
        await asyncio.sleep(10)
        return PlanAgent()

    agent = PythonAgent(build=hang, timeout_s=0.05)
    with pytest.raises(AgentTimeout):
        await answer(agent)


def test_qa_ws_agents_are_used_as_they_are() -> None:
    assert build("echo") is echo
    assert isinstance(build("EchoAgent"), EchoAgent)


async def test_the_users_stream_is_closed_when_the_consumer_stops() -> None:
    target = StreamingAgent()
    agent = PythonAgent(target)
    pieces = agent.stream("q", CONTEXT)
    assert await anext(pieces) == "Step "
    await pieces.aclose()  # type: ignore[attr-defined]
    assert target.closed


@pytest.mark.parametrize(
    ("attr", "problem"),
    [
        ("plan_agent", "expected python:package.module:attr"),
        ("no_such_attr", "has no attribute"),
        ("no_methods", "has no chat(message) or stream(message, context) method"),
        ("needs_arguments", "must take no arguments"),
        ("broken_factory", "building the agent"),
    ],
)
def test_config_errors_name_the_spec(attr: str, problem: str) -> None:
    target = f"{HERE}{attr}" if attr == "plan_agent" else f"{HERE}:{attr}"
    with pytest.raises(ConfigError) as caught:
        create(target, agent_settings())
    assert problem in caught.value.message
    assert caught.value.path == "websocket.agent.spec"


def test_import_errors_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"cannot import 'no_such_package\.agents'") as caught:
        create("no_such_package.agents:agent", agent_settings())
    assert caught.value.path == "websocket.agent.spec"
    with pytest.raises(ConfigError, match=r"expected python:package\.module:attr"):
        create(":agent", agent_settings())
    with pytest.raises(ConfigError, match="has no chat"):
        create(
            "builtins:dict", agent_settings()
        )  # a class without a signature: built, then refused


async def test_failures_are_safe_agent_errors(caplog: pytest.LogCaptureFixture) -> None:
    agent = build("Failing")
    with caplog.at_level(logging.WARNING, "qa_ws.agents"), pytest.raises(AgentError) as caught:
        await answer(agent, "password")
    assert caught.value.message == "the agent failed to answer"
    assert "secret internals for password" in caplog.text
    with pytest.raises(AgentBusy):
        await answer(agent, "busy")


@pytest.mark.parametrize(
    ("attr", "message", "problem"),
    [
        ("Odd", "dict", "the agent answered without text"),
        ("Odd", "empty", "the agent returned an empty answer"),
        ("BadPieces", "q", "the agent answered without text"),
        ("BadPieces", "none", "the agent returned an empty answer"),
    ],
)
async def test_answers_without_text(attr: str, message: str, problem: str) -> None:
    with pytest.raises(AgentError, match=problem):
        await answer(build(attr), message)


async def test_slow_agents_time_out() -> None:
    with pytest.raises(AgentTimeout):
        await answer(build("Slow", timeout_s=0.05))
    pieces: list[str] = []
    with pytest.raises(AgentTimeout):
        await consume(build("SlowStream", timeout_s=0.1).stream("q", CONTEXT), pieces)
    assert pieces == ["first"]


async def test_check_and_aclose_reach_the_object(caplog: pytest.LogCaptureFixture) -> None:
    ready = Checked(ready=True)
    agent = PythonAgent(ready)
    assert await agent.check() is True
    ready.ready = False
    assert await agent.check() is False
    ready.ready = RuntimeError("probe failed")
    with caplog.at_level(logging.WARNING, "qa_ws.agents"):
        assert await agent.check() is False
    assert "readiness check failed" in caplog.text
    await agent.aclose()
    assert ready.closed == 1

    sync = SyncClose()
    agent = PythonAgent(sync)
    assert await agent.check() is True
    await agent.aclose()
    assert sync.closed

    with caplog.at_level(logging.WARNING, "qa_ws.agents"):
        await PythonAgent(BadClose()).aclose()
    assert "closing it failed" in caplog.text
    await PythonAgent(PlanAgent()).aclose()


def test_target_or_build_not_both() -> None:
    async def make() -> object:
        return PlanAgent()

    with pytest.raises(ValueError, match="not both"):
        PythonAgent(PlanAgent(), build=make)
    with pytest.raises(ValueError, match="not both"):
        PythonAgent()


class ToolUser:
    """Yields typed events between its text, reads its attachments, and can be cancelled."""

    def __init__(self) -> None:
        self.cancelled: list[str] = []

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[object]:
        names = ", ".join(f"{a.name} ({a.mime}, {len(a.data)} B)" for a in context.attachments)
        yield ToolStarted("t1", "read_files", {"count": len(context.attachments)})
        yield ToolFinished("t1", "read_files", names, 3.0)
        yield Reasoning("the files look fine")
        yield f"I read: {names}"
        yield Attachment("summary.txt", "text/plain", b"all good")

    async def cancel(self, context: ChatContext) -> bool:
        self.cancelled.append(context.message_id)
        return True


tool_user = ToolUser()


async def test_typed_events_and_attachments_pass_through() -> None:
    agent = build("tool_user")
    ctx = ChatContext(
        session_id="s",
        user="alice",
        message_id="m-7",
        attachments=(Attachment("shot.png", "image/png", b"\x89PNG"),),
    )
    items = [item async for item in agent.events("look", ctx)]
    assert items == [
        ToolStarted("t1", "read_files", {"count": 1}),
        ToolFinished("t1", "read_files", "shot.png (image/png, 4 B)", 3.0),
        Reasoning("the files look fine"),
        "I read: shot.png (image/png, 4 B)",
        Attachment("summary.txt", "text/plain", b"all good"),
    ]
    assert await answer(agent) == ["I read: "]  # the text path sees only text
    assert await agent.cancel(ctx) is True
    assert tool_user.cancelled == ["m-7"]
    assert await build("plan_agent").cancel(ctx) is False  # no cancel hook: nothing to stop
