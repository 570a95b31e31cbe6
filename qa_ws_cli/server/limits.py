"""Per-user rate limits on chat messages, shared by every instance through Redis.

Two windows are checked per message, both per token ``sub`` across all of that user's
connections: ``burst`` per second (a fixed one-second window) and ``max_requests_per_minute``
(a sliding window counter: the previous minute's count weighted by how much of it still
overlaps the last 60 s, plus this minute's), the rules ``MemoryRateLimiter``
(``memory_limits.py``) applies in one process, counted the same way and rounded the same way.
Rejections are counted per user per minute for the abuse threshold.

In Redis, one hash per user (``qa-ws:limits:{<sub>}``) holds both windows and the abuse count;
one Lua script checks and counts a message in one round trip, with Redis's own clock (``TIME``),
so instances whose clocks differ still share one budget, and ``retry_after`` is measured from
the moment Redis counted. The scripts go through the store's ``AutoPipeline``, batched with
the other chats' commands. This replaced ``limits``' Redis storage, which made two round trips
a message (one per window) outside the batches: docs/performance.md has the figures.

When Redis fails, the limiter fails open: messages are allowed, Redis is not asked again for
``STORAGE_RETRY_S`` (a hung Redis must not add its timeout to every chat), and a warning is
logged at most every ``STORAGE_WARNING_INTERVAL_S``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from qa_ws_cli.config import RateLimitSettings
from qa_ws_cli.server.memory_limits import round_retry
from qa_ws_cli.server.redis_batch import REDIS_FAILURES

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from qa_ws_cli.server.redis_batch import AutoPipeline

STORAGE_WARNING_INTERVAL_S = 10.0
STORAGE_RETRY_S = 1.0
KEY_TTL_S = 120  # the minute window needs the previous minute's count, no older

# The time is given ('' for Redis's own clock, ``TIME``) so tests can set it.
_NOW = """
local function clock(given)
  if given ~= '' then return tonumber(given) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

# ``rate_hit(key, burst, per minute, key TTL, the time)`` counts one message; it returns false
# when allowed, else the wait in seconds, as a string of every digit (Redis would truncate a Lua
# number to an integer; fewer digits could round a wait down before it is rounded up). The key's
# TTL (120 s) is set by the first message of each minute only: a minute's counts are needed
# until the next minute ends, and that key lives at least that long or is set again by the
# next minute's first message (one call fewer a message: 0.7 µs of Redis's CPU). It is
# also the first step of the session store's counted claim (``redis_sessions.py``), so a chat
# costs one script, not two.
HIT_FUNCTION = (
    _NOW
    + """
local function rate_hit(key, burst, limit, ttl, given)
  local now = clock(given)
  local sec = math.floor(now)
  burst, limit = tonumber(burst), tonumber(limit)
  local v = redis.call('HMGET', key, 's', 'sc', 'm', 'mc', 'mp')
  local count = 0
  if tonumber(v[1]) == sec then count = tonumber(v[2]) end
  if count >= burst then return string.format('%.17g', sec + 1 - now) end
  local minute = math.floor(sec / 60)
  local at, current, previous = tonumber(v[3]), 0, 0
  if at == minute then
    current, previous = tonumber(v[4]), tonumber(v[5])
  elseif at == minute - 1 then
    previous = tonumber(v[4])
  end
  local elapsed = now - minute * 60
  local over = previous * (60 - elapsed) / 60 + current + 1 > limit
  local counted = current
  if not over then counted = current + 1 end
  redis.call('HSET', key, 's', sec, 'sc', count + 1, 'm', minute, 'mc', counted, 'mp', previous)
  if at ~= minute then redis.call('EXPIRE', key, ttl) end
  if not over then return false end
  if current + 1 <= limit and previous > 0 then
    return string.format('%.17g', math.max(0, 60 - 60 * (limit - current - 1) / previous - elapsed))
  end
  local fade = 0
  if current > 0 then fade = math.max(0, 60 - 60 * (limit - 1) / current) end
  return string.format('%.17g', 60 - elapsed + fade)
end
"""
)

_HIT = HIT_FUNCTION + "return rate_hit(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4])\n"

# ARGV: key TTL, the time. Returns the rejections counted in this minute, this one included.
_ABUSE = (
    _NOW
    + """
local minute = math.floor(clock(ARGV[2]) / 60)
local v = redis.call('HMGET', KEYS[1], 'a', 'ac')
local count = 1
if tonumber(v[1]) == minute then count = tonumber(v[2]) + 1 end
redis.call('HSET', KEYS[1], 'a', minute, 'ac', count)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return count
"""
)


class Limiter(Protocol):
    """What the frame handler asks: ``RateLimiter`` (shared through Redis) or
    ``MemoryRateLimiter`` (one process, the same rules in plain dicts)."""

    async def hit(self, user: str) -> float | None: ...

    async def abusive(self, user: str) -> bool: ...


class RateLimiter:
    def __init__(
        self,
        settings: RateLimitSettings,
        client: aioredis.Redis,
        batch: AutoPipeline,
        key_prefix: str = "qa-ws:limits",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.key_prefix = key_prefix
        self.abuse_threshold = int(settings.abuse_factor * settings.max_requests_per_minute)
        self._args = (settings.burst, settings.max_requests_per_minute, KEY_TTL_S)
        self.clock = clock  # None: Redis's clock, one for every instance (another: tests)
        self._batch = batch
        self._hit = client.register_script(_HIT)
        self._abuse = client.register_script(_ABUSE)
        self._warned_at = -STORAGE_WARNING_INTERVAL_S
        self._open_until = 0.0

    def key(self, user: str) -> str:
        """The user's hash; the braces make it its own hash tag (one slot in a Cluster)."""
        return f"{self.key_prefix}:{{{user}}}"

    def script_args(self) -> tuple[int | str, ...]:
        """``rate_hit``'s arguments after the key: burst, per minute, key TTL, the time."""
        return (*self._args, self._now())

    async def hit(self, user: str) -> float | None:
        """Count one message; None when allowed, else the seconds after which to retry."""
        if self._open_until and time.monotonic() < self._open_until:
            return None  # failing open: Redis failed a moment ago
        try:
            args = self.script_args()
            wait = await self._batch.script(self._hit, [self.key(user)], args)
        except REDIS_FAILURES as exc:  # fail open: a Redis outage must not stop every chat
            self._failed(exc)
            return None
        # rounded up: a client that waits exactly this long must not be early
        return None if wait is None else round_retry(float(wait))

    def _now(self) -> str:
        return "" if self.clock is None else repr(self.clock())

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._open_until = now + STORAGE_RETRY_S
        if now - self._warned_at >= STORAGE_WARNING_INTERVAL_S:
            self._warned_at = now
            logging.getLogger("qa_ws.server").warning(
                "rate-limit storage unavailable, allowing messages: %s", type(exc).__name__
            )

    async def abusive(self, user: str) -> bool:
        """Count one rejection of ``user``'s; True once a minute holds more than the abuse
        threshold. Per user, in Redis with the limits: a new connection (or another
        instance) does not start the count afresh."""
        if self._open_until and time.monotonic() < self._open_until:
            return False
        try:
            args = (KEY_TTL_S, self._now())
            count = await self._batch.script(self._abuse, [self.key(user)], args)
        except REDIS_FAILURES:
            return False  # Redis is away: hit() fails open and says so
        return int(count) > self.abuse_threshold
