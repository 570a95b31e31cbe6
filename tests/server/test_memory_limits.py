"""``MemoryRateLimiter`` counts like ``limits``' strategies: a fixed one-second window, a
sliding minute (the previous minute weighted by its overlap), abuse per minute; and its
``retry_after`` is never early."""

from __future__ import annotations

from qa_ws_cli.config import RateLimitSettings
from qa_ws_cli.server.memory_limits import MemoryRateLimiter


def limiter(
    per_minute: int, burst: int, start: float = 6_000_000.0
) -> tuple[MemoryRateLimiter, list[float]]:
    clock = [start]
    settings = RateLimitSettings(max_requests_per_minute=per_minute, burst=burst, abuse_factor=1)
    return MemoryRateLimiter(settings, clock=lambda: clock[0]), clock


async def test_the_burst_window_resets_each_second_and_says_when() -> None:
    rl, clock = limiter(per_minute=100, burst=2, start=6_000_000.25)
    assert await rl.hit("a") is None and await rl.hit("a") is None
    assert await rl.hit("a") == 0.8  # 0.75 s to the next second, rounded up
    assert await rl.hit("b") is None  # per user
    clock[0] += 0.75
    assert await rl.hit("a") is None


async def test_the_minute_slides_and_retry_after_is_never_early() -> None:
    rl, clock = limiter(per_minute=4, burst=100, start=6_000_000.0)  # a minute boundary
    for _ in range(4):
        assert await rl.hit("a") is None
    wait = await rl.hit("a")
    assert wait is not None and wait > 59  # this minute is full: the next one, with 4 behind
    clock[0] += 30  # half of it still overlaps: 4 * 0.5 = 2 counted
    assert await rl.hit("a") is not None
    clock[0] += wait - 30  # exactly the wait: allowed
    assert await rl.hit("a") is None
    clock[0] += 0.001
    later = await rl.hit("a")
    assert later is None or later > 0


async def test_a_full_previous_minute_fades_as_limits_computes_it() -> None:
    rl, clock = limiter(per_minute=10, burst=100, start=6_000_000.0)
    for _ in range(10):
        await rl.hit("a")
    clock[0] += 60 + 30  # the next minute, halfway: 10 * 0.5 = 5 counted
    for _ in range(5):
        assert await rl.hit("a") is None
    wait = await rl.hit("a")
    assert wait is not None
    clock[0] += wait
    assert await rl.hit("a") is None  # the previous minute faded enough


async def test_abuse_counts_rejections_per_user_per_minute() -> None:
    rl, clock = limiter(per_minute=3, burst=100)
    assert [await rl.abusive("a") for _ in range(4)] == [False, False, False, True]
    assert await rl.abusive("b") is False
    clock[0] += 60
    assert await rl.abusive("a") is False
