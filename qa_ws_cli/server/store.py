"""Shared state behind one interface: sessions, rate-limit counters, per-user connection
slots, and the messages instances send each other (broadcasts, session frames, cancels).

``MemoryStore`` is the embedded default (one process); ``RedisStore`` (``redis_store.py``)
serves several instances. Nothing else knows which one runs.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable
from typing import Any, Protocol

from qa_ws_cli.config import RateLimitSettings
from qa_ws_cli.server.limits import Limiter
from qa_ws_cli.server.memory_limits import MemoryRateLimiter
from qa_ws_cli.server.notifications import InboxLimits, MemoryInbox, Notification, Taken
from qa_ws_cli.server.session_outputs import ClaimResult, RateLimited
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

    def deliver_attach(self, session_id: str, conn_id: str) -> None:
        """A connection of another instance resumed a session: one here lets it go."""


InstanceReport = dict[str, Any]
"""One instance's answer to "who is connected": ``instance``, ``name``, ``version`` and
``connections`` (a list of dicts, see ``Operator.report``); JSON, as it crosses instances."""


class OperatorPeer(Protocol):
    """What an operator's requests reach on each instance (``server/operator.py``)."""

    async def deliver_notification(self, user: str, note: Notification) -> int:
        """Send ``note`` to ``user``'s live connections here; returns how many."""

    def report(self) -> InstanceReport: ...

    def disconnect(self, user: str | None, connection_id: str | None) -> int:
        """Close the matching connections here with 4002; returns how many."""


class Store(SessionStore):
    name: str

    @abstractmethod
    def rate_limiter(self, settings: RateLimitSettings) -> Limiter:
        """The per-user rate limiter, counting where this store keeps its state."""

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

    async def announce_attach(self, session_id: str, conn_id: str) -> None:
        """Tell the other instances a connection here resumed the session: one of theirs
        that still holds it (half-open, say) is closed, as a second one here would be."""
        return None

    async def revocations(self) -> tuple[dict[str, float], dict[str, float]] | None:
        """Revocations shared by every instance (jti -> exp, sub -> before); None: not kept
        here (the revocation list file is the only one)."""
        return None

    # -- the operator's requests (notify, inbox, connections, disconnect) ---------------------

    @abstractmethod
    def attach_operator(self, peer: OperatorPeer) -> None: ...

    @abstractmethod
    def configure_inbox(self, limits: InboxLimits) -> None: ...

    @abstractmethod
    async def notify(self, user: str, note: Notification) -> int:
        """Deliver to ``user``'s live connections on every instance; returns how many."""

    @abstractmethod
    async def keep_notification(self, user: str, note: Notification) -> int:
        """Keep ``note`` in ``user``'s inbox; returns how many older ones were dropped."""

    @abstractmethod
    async def take_notifications(self, user: str) -> Taken:
        """Empty ``user``'s inbox atomically: what it held goes to exactly one caller."""

    async def expire_notifications(self) -> int:
        """Drop kept notifications past their age; returns how many (where it can count)."""
        return 0

    @abstractmethod
    async def cluster_connections(self) -> list[InstanceReport]:
        """Every instance's report of its live connections (this one's first)."""

    @abstractmethod
    async def disconnect(self, user: str | None, connection_id: str | None) -> int:
        """Close matching connections on every instance with 4002; returns how many."""

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
        self.limiter: MemoryRateLimiter | None = None
        self._peers: list[ClusterPeer] = []
        self._slots: dict[str, set[str]] = {}
        self._operators: list[OperatorPeer] = []
        self.inbox = MemoryInbox()

    def rate_limiter(self, settings: RateLimitSettings) -> MemoryRateLimiter:
        if self.limiter is None:
            self.limiter = MemoryRateLimiter(settings)
        return self.limiter

    async def claim(
        self, session_id: str, chat_id: str, instance: str, rate_user: str | None = None
    ) -> ClaimResult:
        return self.claim_counted(session_id, chat_id, instance, rate_user)

    def claim_counted(
        self, session_id: str, chat_id: str, instance: str, rate_user: str | None = None
    ) -> ClaimResult:
        """``claim`` for a caller that need not await (the driver, on the memory store)."""
        if rate_user is not None and self.limiter is not None:
            retry_after = self.limiter.count(rate_user)
            if retry_after is not None:
                return RateLimited(retry_after)
        return self.claim_now(session_id, chat_id, instance)

    def attach_peer(self, peer: ClusterPeer) -> None:
        self._peers.append(peer)

    async def broadcast(self, message: str) -> int:
        delivered = 0
        for peer in self._peers:
            delivered += await peer.deliver_broadcast(message)
        return delivered

    def attach_operator(self, peer: OperatorPeer) -> None:
        self._operators.append(peer)

    def configure_inbox(self, limits: InboxLimits) -> None:
        self.inbox.limits = limits

    async def notify(self, user: str, note: Notification) -> int:
        delivered = 0
        for peer in self._operators:
            delivered += await peer.deliver_notification(user, note)
        return delivered

    async def keep_notification(self, user: str, note: Notification) -> int:
        return self.inbox.push(user, note)

    async def take_notifications(self, user: str) -> Taken:
        return self.inbox.take(user)

    async def expire_notifications(self) -> int:
        return self.inbox.prune()

    async def cluster_connections(self) -> list[InstanceReport]:
        return [peer.report() for peer in self._operators]

    async def disconnect(self, user: str | None, connection_id: str | None) -> int:
        return sum(peer.disconnect(user, connection_id) for peer in self._operators)

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
        pruned = self.limiter.prune() if self.limiter is not None else 0
        return pruned + self.sweep()
