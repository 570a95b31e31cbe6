"""Per-user connection slots in Redis, so ``max_connections_per_user`` counts every instance.

A mixin of ``RedisStore``; its calls go through the store's ``AutoPipeline``, so a handshake's
commands share round trips with the chats'. Each user's slots are a sorted set
(``qa-ws:conns:<sub>``): a member per connection, scored with the time its lease runs out.
Reserving drops the lapsed leases and counts what is left, in one script; the instance holding
a connection renews its lease every housekeeping round, so the slots of a crashed instance come
back by themselves after ``SLOT_LEASE_S``. While Redis is away the slots are this instance's
own (``MemoryStore``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from qa_ws_cli.server.redis_batch import REDIS_FAILURES

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

    from qa_ws_cli.server.redis_batch import AutoPipeline
    from qa_ws_cli.server.store import MemoryStore

SLOTS_PREFIX = "qa-ws:conns:"
SLOT_LEASE_S = 30.0  # renewed every housekeeping round trip of CONNECTION_RENEW_S
T = TypeVar("T")

RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return 1
"""


class RedisConnectionSlots:
    """Mixed into ``RedisStore``; what it needs from it is declared here for the type checker."""

    if TYPE_CHECKING:
        _redis: aioredis.Redis
        _reserve: AsyncScript  # ``RESERVE``, registered on ``_redis``
        batch: AutoPipeline
        _down: bool
        local: MemoryStore

        async def _guarded(
            self, call: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
        ) -> T: ...

    async def reserve_connection(self, user: str, key: str, max_per_user: int) -> bool:
        async def in_redis() -> bool:
            now_ms = int(time.time() * 1000)
            until = now_ms + int(SLOT_LEASE_S * 1000)
            args = (now_ms, until, max_per_user, key)
            return bool(await self.batch.script(self._reserve, (SLOTS_PREFIX + user,), args))

        return await self._guarded(
            in_redis, lambda: self.local.reserve_connection(user, key, max_per_user)
        )

    async def release_connection(self, user: str, key: str) -> None:
        """Given back here and in Redis; when Redis fails, the store is down (the releases
        after it do not wait for it too) and the slot's lease lapses by itself."""
        await self.local.release_connection(user, key)

        async def in_redis() -> None:
            await self.batch.execute("ZREM", SLOTS_PREFIX + user, key)

        async def lapses() -> None:
            return None

        await self._guarded(in_redis, lapses)

    async def renew_connections(self, slots: Iterable[tuple[str, str]]) -> None:
        held = list(slots)
        if not held or self._down:
            return
        until = int((time.time() + SLOT_LEASE_S) * 1000)
        with contextlib.suppress(*REDIS_FAILURES):
            async with self._redis.pipeline(transaction=False) as pipe:
                for user, key in held:
                    pipe.zadd(SLOTS_PREFIX + user, {key: until}, xx=True)
                    pipe.pexpireat(SLOTS_PREFIX + user, until)
                await pipe.execute()
