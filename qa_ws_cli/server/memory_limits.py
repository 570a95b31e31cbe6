"""The rate limiter of one process: the same windows as ``RateLimiter`` (Redis), in plain dicts.

The ``limits`` library's generic storage cost tens of microseconds a message (locks, key
strings, expiry bookkeeping) on the hot path of every chat. This class keeps the rules of its
strategies, counted the way ``limits`` counts them, with a few integer operations per message
(``limits.py`` counts the same in one Lua script for the Redis store):

- the burst: a fixed one-second window of ``burst`` messages;
- the minute: a sliding window counter (``limits``' ``SlidingWindowCounterRateLimiter``: the
  previous minute's count weighted by how much of it still overlaps the last 60 s, plus this
  minute's) of ``max_requests_per_minute``;
- abuse: rejections per user in a fixed one-minute window, past ``abuse_factor`` x the limit.

State of users who left is dropped by ``prune`` (the housekeeping calls it every second).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from qa_ws_cli.config import RateLimitSettings

MINUTE = 60.0


def round_retry(seconds: float) -> float:
    """Rounded up to a tenth: a client that waits exactly this long must not be early."""
    return max(0.1, math.ceil(seconds * 10) / 10)


class MemoryRateLimiter:
    def __init__(self, settings: RateLimitSettings, clock: Callable[[], float] = time.time) -> None:
        self.burst = settings.burst
        self.per_minute = settings.max_requests_per_minute
        self.abuse_threshold = int(settings.abuse_factor * settings.max_requests_per_minute)
        self.clock = clock
        self._seconds: dict[str, tuple[int, int]] = {}  # user: (second, count in it)
        self._minutes: dict[str, tuple[int, int, int]] = {}  # user: (minute, count, previous)
        self._abuse: dict[str, tuple[int, int]] = {}  # user: (minute, rejections in it)

    def __len__(self) -> int:
        return len(self._seconds) + len(self._minutes) + len(self._abuse)

    async def hit(self, user: str) -> float | None:
        """Count one message; None when allowed, else the seconds after which to retry."""
        return self.count(user)

    def count(self, user: str) -> float | None:
        """``hit``, for a caller that need not await (the memory store's counted claim)."""
        now = self.clock()
        second = int(now)
        at, count = self._seconds.get(user, (second, 0))
        if at != second:
            count = 0
        if count >= self.burst:
            return round_retry(second + 1 - now)
        self._seconds[user] = (second, count + 1)
        minute = int(now // MINUTE)
        at, current, previous = self._minutes.get(user, (minute, 0, 0))
        if at != minute:
            previous, current = (current if at == minute - 1 else 0), 0
        elapsed = now - minute * MINUTE
        if previous * (MINUTE - elapsed) / MINUTE + current + 1 > self.per_minute:
            self._minutes[user] = (minute, current, previous)
            return round_retry(self._wait(elapsed, current, previous))
        self._minutes[user] = (minute, current + 1, previous)
        return None

    def _wait(self, elapsed: float, current: int, previous: int) -> float:
        """How long until one more message fits the sliding minute."""
        limit = self.per_minute
        if current + 1 <= limit and previous:  # within this minute, as the previous one fades
            return max(0.0, MINUTE - MINUTE * (limit - current - 1) / previous - elapsed)
        # in the next minute, when this one (then the previous) has faded enough
        fade = MINUTE - MINUTE * (limit - 1) / current if current else 0.0
        return MINUTE - elapsed + max(0.0, fade)

    async def abusive(self, user: str) -> bool:
        """Count one rejection of ``user``'s; True once a minute holds more than the threshold."""
        minute = int(self.clock() // MINUTE)
        at, count = self._abuse.get(user, (minute, 0))
        count = count + 1 if at == minute else 1
        self._abuse[user] = (minute, count)
        return count > self.abuse_threshold

    def prune(self, now: float | None = None) -> int:
        """Drop the counters that no longer count; returns how many went."""
        now = self.clock() if now is None else now
        second, minute = int(now), int(now // MINUTE)
        gone = [u for u, (at, _) in self._seconds.items() if at < second]
        for user in gone:
            del self._seconds[user]
        stale = [u for u, (at, _, _) in self._minutes.items() if at < minute - 1]
        for user in stale:
            del self._minutes[user]
        old = [u for u, (at, _) in self._abuse.items() if at < minute]
        for user in old:
            del self._abuse[user]
        return len(gone) + len(stale) + len(old)
