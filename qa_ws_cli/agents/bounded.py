"""A concurrency cap with a bounded queue, in front of any agent.

A model server that is over-subscribed slows every answer down, and a queue without a bound
turns a burst into minutes of waiting. So at most ``max_concurrency`` answers run, up to
``max_queue`` more wait for a place, and the next one is refused at once with ``AgentBusy``
(the client hears "retry shortly" rather than a timeout). A place in the queue is given up
after ``queue_timeout_s``, also as ``AgentBusy``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.agents.events import Piece
from qa_ws_cli.config import AgentSettings
from qa_ws_cli.errors import AgentBusy

T = TypeVar("T")


@contextlib.asynccontextmanager
async def _closing(items: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close ``items`` on leaving, not at garbage collection: an HTTP backend's upstream
    response is released when its generator ends."""
    try:
        yield items
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


class BoundedAgent(Agent):
    """Wraps ``inner``; ``cancel``, ``check`` and ``aclose`` go straight through."""

    def __init__(
        self,
        inner: Agent,
        *,
        max_concurrency: int,
        max_queue: int,
        queue_timeout_s: float | None = None,
    ) -> None:
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        self.inner = inner
        self.name = inner.name
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
        self._slots = asyncio.Semaphore(max_concurrency)
        self._admitted = 0
        self._running = 0

    @classmethod
    def from_settings(cls, inner: Agent, settings: AgentSettings) -> BoundedAgent:
        return cls(
            inner,
            max_concurrency=settings.max_concurrency,
            max_queue=settings.max_queue,
            queue_timeout_s=settings.timeout_s,
        )

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._admitted - self._running

    @contextlib.asynccontextmanager
    async def _place(self) -> AsyncIterator[None]:
        """Hold a place in the queue, then a running slot, for one answer."""
        if self._admitted >= self.max_concurrency + self.max_queue:
            raise AgentBusy()
        self._admitted += 1
        try:
            try:
                async with asyncio.timeout(self.queue_timeout_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise AgentBusy() from None
            self._running += 1
            try:
                yield
            finally:
                self._running -= 1
                self._slots.release()
        finally:
            self._admitted -= 1

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        async with self._place(), _closing(self.inner.stream(message, context)) as pieces:
            async for piece in pieces:
                yield piece

    async def events(self, message: str, context: ChatContext) -> AsyncIterator[Piece]:
        async with self._place(), _closing(self.inner.events(message, context)) as items:
            async for item in items:
                yield item

    async def cancel(self, context: ChatContext) -> bool:
        return await self.inner.cancel(context)

    async def check(self) -> bool:
        return await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()
