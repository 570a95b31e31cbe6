"""Per-user rate limits on chat messages, with the ``limits`` library's async API.

Two windows are checked per message: ``burst`` per second and ``max_requests_per_minute`` per
minute, both per token ``sub`` across all of that user's connections. With the Redis store the
counters live in ``limits``' Redis storage (one budget whichever instance a message lands on);
in one process ``MemoryRateLimiter`` (``memory_limits.py``) counts the same way, cheaper.
When the Redis storage fails (Redis down), the limiter fails open: messages are allowed, the storage
is not asked again for ``STORAGE_RETRY_S`` (a hung Redis must not add its timeout to every
chat), and a warning is logged at most every ``STORAGE_WARNING_INTERVAL_S``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

from limits import RateLimitItemPerMinute, RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import FixedWindowRateLimiter, SlidingWindowCounterRateLimiter
from limits.errors import StorageError

from qa_ws_cli.config import RateLimitSettings

STORAGE_WARNING_INTERVAL_S = 10.0
STORAGE_RETRY_S = 1.0


class Limiter(Protocol):
    """What the frame handler asks: ``RateLimiter`` (``limits``, shared through Redis) or
    ``MemoryRateLimiter`` (one process, the same rules in plain dicts)."""

    async def hit(self, user: str) -> float | None: ...

    async def abusive(self, user: str) -> bool: ...


class RateLimiter:
    def __init__(self, settings: RateLimitSettings, storage: Storage) -> None:
        self.settings = settings
        self.per_minute = RateLimitItemPerMinute(settings.max_requests_per_minute)
        self.per_second = RateLimitItemPerSecond(settings.burst)
        self.windows = (  # the burst window first: it is the cheap one and the first to trip
            (FixedWindowRateLimiter(storage), self.per_second),  # one second needs no sliding
            (SlidingWindowCounterRateLimiter(storage), self.per_minute),
        )
        self.abuse_threshold = int(settings.abuse_factor * settings.max_requests_per_minute)
        self.abuse = RateLimitItemPerMinute(max(1, self.abuse_threshold))
        self._abuse_window = FixedWindowRateLimiter(storage)
        self._warned_at = -STORAGE_WARNING_INTERVAL_S
        self._open_until = 0.0

    async def hit(self, user: str) -> float | None:
        """Count one message; None when allowed, else the seconds after which to retry."""
        if self._open_until and time.monotonic() < self._open_until:
            return None  # failing open: the storage failed a moment ago
        try:
            for strategy, item in self.windows:
                if not await strategy.hit(item, user):
                    stats = await strategy.get_window_stats(item, user)
                    # rounded up: a client that waits exactly this long must not be early
                    return max(0.1, math.ceil((stats.reset_time - time.time()) * 10) / 10)
        except StorageError as exc:  # fail open: a storage outage must not stop every chat
            now = time.monotonic()
            self._open_until = now + STORAGE_RETRY_S
            if now - self._warned_at >= STORAGE_WARNING_INTERVAL_S:
                self._warned_at = now
                logging.getLogger("qa_ws.server").warning(
                    "rate-limit storage unavailable, allowing messages: %s", exc.storage_error
                )
        return None

    async def abusive(self, user: str) -> bool:
        """Count one rejection of ``user``'s; True once a minute holds more than the abuse
        threshold. Per user, in the same storage as the limits: a new connection (or another
        instance) does not start the count afresh."""
        if self._open_until and time.monotonic() < self._open_until:
            return False
        try:
            return not await self._abuse_window.hit(self.abuse, "abuse", user)
        except StorageError:
            return False  # the storage is away: hit() fails open and says so
