"""Shared state behind one interface: sessions, rate-limit counters, per-user connection
slots, and the messages instances send each other (broadcasts, session frames, cancels).

``MemoryStore`` is the embedded default (one process); ``RedisStore`` (``redis_store.py``)
serves several instances. Nothing else knows which one runs.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from typing import Protocol

from limits.aio.storage import Storage

from qa_ws_cli.server.limits import MemoryLimitStorage
from qa_ws_cli.server.session_store import MemorySessionStore, SessionStore


class ClusterPeer(Protocol):
    """What a store delivers to this instance (the gateway implements it)."""

    async def deliver_broadcast(self, message: str) -> int: ...

    def deliver_frame(self, session_id: str, seq: int, frame: str, reply_to: str | None) -> None:
        """A replayable frame another instance published into a session."""

    def deliver_cancel(self, session_id: str, target: str, cancel_id: str) -> None:
        """A client's ``cancel``, relayed by the instance it is connected to."""

    def deliver_revocation(self) -> None:
        """Somebody revoked a token or a user: read the shared revocations again."""


class Store(SessionStore):
    name: str

    @abstractmethod
    def limit_storage(self) -> Storage:
        """The ``limits`` storage the rate limiter counts in."""

    @abstractmethod
    def attach_peer(self, peer: ClusterPeer) -> None:
        """Register this instance's deliveries (of broadcasts, frames, cancels)."""

    @abstractmethod
    async def broadcast(self, message: str) -> int:
        """Fan a broadcast out to every instance; returns how many connections received it."""

    async def publish_frame(
        self, session_id: str, seq: int, frame: str, reply_to: str | None
    ) -> None:
        """Offer a session's frame to the instance that holds its connection, if another."""
        return None

    async def relay_cancel(self, session_id: str, target: str, cancel_id: str) -> None:
        """Ask the instance running ``target`` to stop it."""
        return None

    async def revocations(self) -> tuple[dict[str, float], dict[str, float]] | None:
        """Revocations shared by every instance (jti -> exp, sub -> before); None: not kept
        here (the revocation list file is the only one)."""
        return None

    @abstractmethod
    async def reserve_connection(self, user: str, key: str, max_per_user: int) -> bool:
        """Take one of ``user``'s connection slots (across instances); False when all are held."""

    @abstractmethod
    async def release_connection(self, user: str, key: str) -> None: ...

    async def renew_connections(self, slots: Iterable[tuple[str, str]]) -> None:
        """Keep this instance's slots held (a crashed instance's slots come back by themselves)."""
        return None

    async def start(self) -> None:
        """Open what needs the running loop (a subscriber task); called once at app startup."""
        return None

    @property
    def available(self) -> bool:
        """False while the store is unreachable and this instance serves from its memory."""
        return True

    async def ping(self) -> bool:
        return True

    def prune(self) -> int:
        """Drop state of users who left; returns how many entries went."""
        return 0

    async def aclose(self) -> None:
        return None


class MemoryStore(MemorySessionStore, Store):
    name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self._limits = MemoryLimitStorage()
        self._peers: list[ClusterPeer] = []
        self._slots: dict[str, set[str]] = {}

    def limit_storage(self) -> MemoryLimitStorage:
        return self._limits

    def attach_peer(self, peer: ClusterPeer) -> None:
        self._peers.append(peer)

    async def broadcast(self, message: str) -> int:
        delivered = 0
        for peer in self._peers:
            delivered += await peer.deliver_broadcast(message)
        return delivered

    async def reserve_connection(self, user: str, key: str, max_per_user: int) -> bool:
        held = self._slots.setdefault(user, set())
        if len(held) >= max_per_user:
            if not held:
                del self._slots[user]
            return False
        held.add(key)
        return True

    async def release_connection(self, user: str, key: str) -> None:
        held = self._slots.get(user)
        if held is not None:
            held.discard(key)
            if not held:
                del self._slots[user]

    def users(self) -> int:
        """How many distinct users hold a connection slot."""
        return len(self._slots)

    def prune(self) -> int:
        return self._limits.prune() + self.sweep()
