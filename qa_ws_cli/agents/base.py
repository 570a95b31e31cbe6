"""The Agent interface: what the gateway calls, whatever answers behind it.

The plan's contract is one coroutine, ``async def chat(self, message: str) -> str``. The gateway
streams, so the interface it calls is ``stream(message, context)``, an async iterator of text
pieces; an agent implements either and gets the other for free. ``check`` answers readiness.

A backend that knows more than text implements ``events(message, context)`` instead: text
pieces interleaved with the typed events of ``qa_ws_cli.agents.events`` (tool calls, reasoning,
status, produced files); ``stream`` then gives its text. ``cancel(context)`` asks the backend
to stop the run answering ``context.message_id`` for real, not only to stop being read.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal

from qa_ws_cli.agents.events import Attachment, Piece
from qa_ws_cli.lazy import LazyTuple


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "assistant"]
    content: str


class History(LazyTuple[Turn]):
    """A session's recent turns, ``(question, answer)`` pairs read as ``Turn``s, user then
    assistant. The ``Turn``s are made on first read: an agent that never looks at the history
    (an echo, a backend that keeps its own) costs the chat path nothing for it."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__()
        self._pairs = pairs

    def _make(self) -> tuple[Turn, ...]:
        return tuple(t for q, a in self._pairs for t in (Turn("user", q), Turn("assistant", a)))


@dataclass(frozen=True, slots=True)
class ChatContext:
    """Who is asking, in which conversation, with which files; backends pass these on."""

    session_id: str = "local"
    user: str = "anonymous"
    message_id: str = ""
    history: Sequence[Turn] = field(default_factory=tuple)
    attachments: Sequence[Attachment] = field(default_factory=tuple)


async def text_pieces(items: AsyncIterator[Piece]) -> AsyncGenerator[str, None]:
    """Only the text of a run, for callers that show nothing else."""
    try:
        async for item in items:
            if isinstance(item, str):
                yield item
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


class Agent:
    """Subclass and implement ``events`` (richest), ``stream`` or ``chat``; an agent that can
    have a whole answer without waiting also implements ``answer_at_once``."""

    name: str = "agent"

    def answer_at_once(self, message: str, context: ChatContext) -> str | None:
        """The whole answer when the agent has it without waiting for anything (a canned
        reply, a lookup, a cache hit), else None. The gateway asks it first: an answer here
        costs no task, no timer and no event-loop round, and None goes on to ``events``.
        It runs on the event loop, so it must not block; the default is None."""
        return None

    async def chat(self, message: str, context: ChatContext | None = None) -> str:
        ctx = context or ChatContext()
        return "".join([piece async for piece in self.stream(message, ctx)])

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        if type(self).events is not Agent.events:
            async with aclosing(text_pieces(self.events(message, context))) as pieces:
                async for piece in pieces:
                    yield piece
            return
        if type(self).chat is Agent.chat:
            raise NotImplementedError(f"{type(self).__name__} implements neither chat nor stream")
        yield await self.chat(message, context)

    async def events(self, message: str, context: ChatContext) -> AsyncIterator[Piece]:
        """Text pieces and typed events; by default the text of ``stream`` alone."""
        pieces = self.stream(message, context)
        try:
            async for piece in pieces:
                yield piece
        finally:
            aclose = getattr(pieces, "aclose", None)
            if aclose is not None:
                await aclose()

    async def cancel(self, context: ChatContext) -> bool:
        """Stop the backend's run for ``context.message_id``; True once the backend confirmed.

        The default has nothing to stop beyond the stream the gateway closes, so it is False.
        """
        return False

    async def check(self) -> bool:
        """True when the backend can answer; ``/readyz`` reports it."""
        return True

    async def aclose(self) -> None:
        """Release pooled connections; called once when the server stops."""
