"""The Agent interface: what the gateway calls, whatever answers behind it.

The plan's contract is one coroutine, ``async def chat(self, message: str) -> str``. The gateway
streams, so the interface it calls is ``stream(message, context)``, an async iterator of text
pieces; an agent implements either and gets the other for free. ``check`` answers readiness.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "assistant"]
    content: str


@dataclass(frozen=True, slots=True)
class ChatContext:
    """Who is asking, in which conversation; backends pass these on to the agent."""

    session_id: str = "local"
    user: str = "anonymous"
    message_id: str = ""
    history: Sequence[Turn] = field(default_factory=tuple)


class Agent:
    """Subclass and implement ``stream`` (preferred) or ``chat``."""

    name: str = "agent"

    async def chat(self, message: str, context: ChatContext | None = None) -> str:
        ctx = context or ChatContext()
        return "".join([piece async for piece in self.stream(message, ctx)])

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        if type(self).chat is Agent.chat:
            raise NotImplementedError(f"{type(self).__name__} implements neither chat nor stream")
        yield await self.chat(message, context)

    async def check(self) -> bool:
        """True when the backend can answer; ``/readyz`` reports it."""
        return True

    async def aclose(self) -> None:
        """Release pooled connections; called once when the server stops."""
