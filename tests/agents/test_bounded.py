"""The concurrency cap and its bounded queue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.agents.bounded import BoundedAgent
from qa_ws_cli.errors import AgentBusy

from .conftest import CONTEXT, agent_settings


class Gated(Agent):
    """Answers only when the test opens the gate; counts what it sees."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0
        self.finished = 0
        self.closed = 0
        self.ready = True

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        self.started += 1
        try:
            yield f"{message}:"
            await self.gate.wait()
            yield "done"
            self.finished += 1
        finally:
            self.closed += 1

    async def check(self) -> bool:
        return self.ready

    async def aclose(self) -> None:
        self.ready = False


async def drain(agent: Agent, message: str) -> str:
    return "".join([piece async for piece in agent.stream(message, CONTEXT)])


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def test_busy_at_once_when_running_and_queue_are_full_then_the_queue_drains() -> None:
    inner = Gated()
    agent = BoundedAgent(inner, max_concurrency=2, max_queue=1)
    tasks = [asyncio.create_task(drain(agent, f"q{i}")) for i in range(3)]
    await until(lambda: agent.running == 2 and agent.waiting == 1)
    assert inner.started == 2

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AgentBusy) as caught:
        await drain(agent, "one too many")
    assert loop.time() - started < 0.1
    assert caught.value.code == "agent_busy"

    inner.gate.set()
    assert await asyncio.gather(*tasks) == ["q0:done", "q1:done", "q2:done"]
    assert (agent.running, agent.waiting, inner.finished) == (0, 0, 3)
    assert await drain(agent, "again") == "again:done"


async def test_no_queue_means_busy_as_soon_as_every_slot_runs() -> None:
    inner = Gated()
    agent = BoundedAgent(inner, max_concurrency=1, max_queue=0)
    task = asyncio.create_task(drain(agent, "a"))
    await until(lambda: agent.running == 1)
    with pytest.raises(AgentBusy):
        await drain(agent, "b")
    inner.gate.set()
    assert await task == "a:done"


async def test_a_place_in_the_queue_is_given_up_after_the_queue_timeout() -> None:
    inner = Gated()
    agent = BoundedAgent(inner, max_concurrency=1, max_queue=5, queue_timeout_s=0.05)
    task = asyncio.create_task(drain(agent, "a"))
    await until(lambda: agent.running == 1)
    with pytest.raises(AgentBusy):
        await drain(agent, "b")
    assert agent.waiting == 0
    inner.gate.set()
    await task


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    inner = Gated()
    agent = BoundedAgent(inner, max_concurrency=1, max_queue=1)
    running = asyncio.create_task(drain(agent, "a"))
    await until(lambda: agent.running == 1)
    waiting = asyncio.create_task(drain(agent, "b"))
    await until(lambda: agent.waiting == 1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert agent.waiting == 0
    inner.gate.set()
    assert await running == "a:done"


async def test_closing_early_closes_the_inner_stream_and_frees_the_slot() -> None:
    inner = Gated()
    agent = BoundedAgent(inner, max_concurrency=1, max_queue=0)
    pieces = agent.stream("q", CONTEXT)
    assert await anext(pieces) == "q:"
    assert agent.running == 1
    await pieces.aclose()  # type: ignore[attr-defined]
    assert inner.closed == 1
    assert (agent.running, agent.waiting) == (0, 0)


async def test_inner_streams_without_aclose_are_fine() -> None:
    class Plain(Agent):
        async def chat(self, message: str, context: ChatContext | None = None) -> str:
            return "plain"

        def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
            return aiter(Pieces())

    class Pieces:
        def __init__(self) -> None:
            self.left = ["a", "b"]

        def __aiter__(self) -> Pieces:
            return self

        async def __anext__(self) -> str:
            if not self.left:
                raise StopAsyncIteration
            return self.left.pop(0)

    agent = BoundedAgent(Plain(), max_concurrency=1, max_queue=0)
    assert await drain(agent, "q") == "ab"


async def test_check_aclose_and_name_delegate() -> None:
    inner = Gated()
    agent = BoundedAgent.from_settings(inner, agent_settings(max_concurrency=3, max_queue=7))
    assert (agent.name, agent.max_concurrency, agent.max_queue) == ("gated", 3, 7)
    assert agent.queue_timeout_s == 3.0
    assert await agent.check() is True
    await agent.aclose()
    assert await agent.check() is False
    inner.gate.set()
    assert await agent.chat("via chat") == "via chat:done"


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        BoundedAgent(Gated(), max_concurrency=0, max_queue=0)
    with pytest.raises(ValueError, match="max_queue"):
        BoundedAgent(Gated(), max_concurrency=1, max_queue=-1)
