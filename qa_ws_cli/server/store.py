"""Shared state behind one small interface: rate-limit counters, broadcast fan-out, and the
hand-over of sessions across a restart.

``MemoryStore`` is the embedded default (one process); ``RedisStore`` (``redis_store.py``)
serves several instances. Nothing else knows which one runs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from limits.aio.storage import Storage

from qa_ws_cli.server.limits import MemoryLimitStorage

BroadcastHandler = Callable[[str], Awaitable[int]]
SessionSnapshot = dict[str, Any]  # Session.snapshot(): JSON-safe, see sessions.py


class Store(ABC):
    name: str

    @abstractmethod
    def limit_storage(self) -> Storage:
        """The ``limits`` storage the rate limiter counts in."""

    @abstractmethod
    def on_broadcast(self, handler: BroadcastHandler) -> None:
        """Register this instance's delivery of broadcasts (to its own connections)."""

    @abstractmethod
    async def broadcast(self, message: str) -> int:
        """Fan a broadcast out to every instance; returns the count delivered (as known)."""

    async def start(self) -> None:
        """Open what needs the running loop (a subscriber task); called once at app startup."""
        return None

    async def ping(self) -> bool:
        return True

    async def save_sessions(self, snapshots: Sequence[SessionSnapshot], ttl_s: float) -> int:
        """Keep sessions past this process (on a drain) for an instance that starts later;
        returns how many were kept. In memory nothing outlives the process."""
        return 0

    async def take_session(self, session_id: str) -> SessionSnapshot | None:
        """A kept session, handed over once (so two instances cannot both resume it)."""
        return None

    def prune(self) -> int:
        """Drop state of users who left; returns how many entries went."""
        return 0

    async def aclose(self) -> None:
        return None


class MemoryStore(Store):
    name = "memory"

    def __init__(self) -> None:
        self._limits = MemoryLimitStorage()
        self._handlers: list[BroadcastHandler] = []

    def limit_storage(self) -> MemoryLimitStorage:
        return self._limits

    def on_broadcast(self, handler: BroadcastHandler) -> None:
        self._handlers.append(handler)

    async def broadcast(self, message: str) -> int:
        delivered = 0
        for handler in self._handlers:
            delivered += await handler(message)
        return delivered

    def prune(self) -> int:
        return self._limits.prune()
