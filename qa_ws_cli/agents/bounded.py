"""A concurrency cap with a bounded queue, in front of any agent.

A model server that is over-subscribed slows every answer down, and a queue without a bound
turns a burst into minutes of waiting. So at most ``max_concurrency`` answers run, up to
``max_queue`` more wait for a place, and the next one is refused at once with ``AgentBusy``
(the client hears "retry shortly" rather than a timeout). A place in the queue is given up
after ``queue_timeout_s``, also as ``AgentBusy``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.config import AgentSettings
from qa_ws_cli.errors import AgentBusy


class BoundedAgent(Agent):
    """Wraps ``inner``; ``check`` and ``aclose`` go straight through."""

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

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
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
                pieces = self.inner.stream(message, context)
                try:
                    async for piece in pieces:
                        yield piece
                finally:
                    # close the inner stream now, not at garbage collection: an HTTP
                    # backend's upstream response is released when its generator ends
                    aclose = getattr(pieces, "aclose", None)
                    if aclose is not None:
                        await aclose()
            finally:
                self._running -= 1
                self._slots.release()
        finally:
            self._admitted -= 1

    async def check(self) -> bool:
        return await self.inner.check()

    async def aclose(self) -> None:
        await self.inner.aclose()
