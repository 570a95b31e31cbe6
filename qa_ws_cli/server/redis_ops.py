"""The operator's requests on the Redis store: notifications, inboxes, connections, disconnects.

A mixin of ``RedisStore`` (it uses its client, its pub/sub channel and its fallback memory).

- A notification goes to this instance's connections, then over the channel to the others;
  each answers how many of its connections got it (the way a broadcast is counted).
- An offline user's inbox is a Redis list per user (``qa-ws:inbox:<sub>``): pushed and trimmed
  to ``inbox_size`` in one script (the oldest go first, the count of dropped comes back), taken
  by another (``LRANGE``, then ``DEL``) through the store's ``AutoPipeline`` with the other
  connects' and chats' commands, so exactly one connect gets what it held. The key
  lives ``ttl_s`` past its newest push; older entries are dropped when taken.
- "Who is connected" and "disconnect" are a request on the channel answered by every instance
  on a one-off list (as broadcast acks are). Chosen over a hash of connections each instance
  renews: nothing is written while nobody asks, and the answer is current (in-flight answers,
  frame counts), not as old as the last renewal. The cost: an instance that does not answer
  within ``ACK_WAIT_S`` is missing from that answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from qa_ws_cli.server.notifications import InboxLimits, Notification, Taken, split_expired
from qa_ws_cli.server.redis_batch import REDIS_FAILURES
from qa_ws_cli.server.store import InstanceReport, MemoryStore, OperatorPeer

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from qa_ws_cli.server.redis_batch import AutoPipeline

INBOX_PREFIX = "qa-ws:inbox:"
ACK_WAIT_S = 1.0
ACK_TTL_S = 10
T = TypeVar("T")
log = logging.getLogger("qa_ws.server")

_KEEP = """
redis.call('RPUSH', KEYS[1], ARGV[1])
local over = redis.call('LLEN', KEYS[1]) - tonumber(ARGV[2])
if over > 0 then redis.call('LTRIM', KEYS[1], over, -1) else over = 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return over
"""


# What an inbox held, and the inbox gone, in one step: exactly one connect gets it.
_TAKE = """
local held = redis.call('LRANGE', KEYS[1], 0, -1)
if #held > 0 then redis.call('DEL', KEYS[1]) end
return held
"""


class RedisOperatorOps:
    """Mixed into ``RedisStore``; what it needs from it is declared here for the type checker."""

    inbox_limits: InboxLimits = InboxLimits()
    _keep_script: Any = None
    _take_script: Any = None

    if TYPE_CHECKING:
        _redis: aioredis.Redis
        batch: AutoPipeline
        local: MemoryStore

        @property
        def subscribed(self) -> bool: ...

        async def _send(self, kind: str, **fields: Any) -> int: ...

        async def _acks(self, ack: str, expected: int) -> int: ...

        async def _guarded(
            self, call: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
        ) -> T: ...

    def attach_operator(self, peer: OperatorPeer) -> None:
        self.local.attach_operator(peer)  # this instance's own deliveries go through it

    def configure_inbox(self, limits: InboxLimits) -> None:
        self.inbox_limits = limits
        self.local.configure_inbox(limits)

    # -- notifications ---------------------------------------------------------------------------

    async def notify(self, user: str, note: Notification) -> int:
        delivered = await self.local.notify(user, note)
        ack = f"qa-ws:ack:{uuid.uuid4().hex}"
        heard = await self._send("notify", u=user, n=note.to_json(), ack=ack)
        return delivered + await self._acks(ack, self._others(heard))

    async def keep_notification(self, user: str, note: Notification) -> int:
        limits = self.inbox_limits

        async def in_redis() -> int:
            if self._keep_script is None:
                self._keep_script = self._redis.register_script(_KEEP)
            keep = self._keep_script
            ttl_ms = int(limits.ttl_s * 1000)
            dropped = await keep(
                keys=[INBOX_PREFIX + user], args=[note.to_json(), limits.size, ttl_ms]
            )
            return int(dropped)

        return await self._guarded(in_redis, lambda: self.local.keep_notification(user, note))

    async def take_notifications(self, user: str) -> Taken:
        async def in_redis() -> Taken:
            if self._take_script is None:
                self._take_script = self._redis.register_script(_TAKE)
            raw = await self.batch.script(self._take_script, (INBOX_PREFIX + user,), ())
            notes = [n for n in map(Notification.from_json, raw) if n is not None]
            taken = split_expired(notes, self.inbox_limits.ttl_s)
            held_here = await self.local.take_notifications(user)  # kept while Redis was away
            return Taken(held_here.notes + taken.notes, held_here.expired + taken.expired)

        return await self._guarded(in_redis, lambda: self.local.take_notifications(user))

    async def expire_notifications(self) -> int:
        return await self.local.expire_notifications()  # Redis expires its own keys

    # -- connections ------------------------------------------------------------------------------

    async def cluster_connections(self) -> list[InstanceReport]:
        reports = await self.local.cluster_connections()
        ack = f"qa-ws:ack:{uuid.uuid4().hex}"
        heard = await self._send("connections", ack=ack)
        for item in await self._ack_items(ack, self._others(heard)):
            with contextlib.suppress(ValueError, TypeError):
                report = json.loads(item)
                if isinstance(report, dict) and isinstance(report.get("connections"), list):
                    reports.append(report)
        return reports

    async def disconnect(self, user: str | None, connection_id: str | None) -> int:
        closed = await self.local.disconnect(user, connection_id)
        ack = f"qa-ws:ack:{uuid.uuid4().hex}"
        heard = await self._send("disconnect", u=user, c=connection_id, ack=ack)
        return closed + await self._acks(ack, self._others(heard))

    # -- the other instances' side ----------------------------------------------------------------

    async def _dispatch_operator(self, kind: str, msg: dict[str, Any]) -> bool:
        """Answer an operator's request from another instance; False if ``kind`` is not one."""
        if kind == "notify":
            note = Notification.from_json(str(msg["n"]))
            count = 0 if note is None else await self.local.notify(str(msg["u"]), note)
            await self._reply(str(msg["ack"]), str(count))
        elif kind == "connections":
            reports = await self.local.cluster_connections()
            for report in reports:
                await self._reply(str(msg["ack"]), json.dumps(report))
        elif kind == "disconnect":
            user = msg["u"] if isinstance(msg["u"], str) else None
            conn_id = msg["c"] if isinstance(msg["c"], str) else None
            closed = await self.local.disconnect(user, conn_id) if user or conn_id else 0
            await self._reply(str(msg["ack"]), str(closed))
        else:
            return False
        return True

    async def _reply(self, ack: str, value: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.rpush(ack, value)
            pipe.expire(ack, ACK_TTL_S)
            await pipe.execute()

    def _others(self, heard: int) -> int:
        return heard - 1 if self.subscribed else heard  # our own subscriber hears it too

    async def _ack_items(self, ack: str, expected: int) -> list[str]:
        """The answers of ``expected`` instances (those that answered within ``ACK_WAIT_S``)."""
        deadline = time.monotonic() + ACK_WAIT_S
        items: list[bytes | str] = []
        with contextlib.suppress(*REDIS_FAILURES):
            while expected > 0:
                items = await self._redis.lrange(ack, 0, -1)
                if len(items) >= expected or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            await self._redis.delete(ack)
        return [i.decode() if isinstance(i, bytes) else i for i in items]
