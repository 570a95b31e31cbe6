"""The Redis rate limiter (one Lua script) counts exactly as ``MemoryRateLimiter`` does: the same
windows, the same rejections, the same ``retry_after``; and with Redis's own clock a user's
budget is one across instances."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from qa_ws_cli.config import RateLimitSettings
from qa_ws_cli.server.limits import RateLimiter
from qa_ws_cli.server.memory_limits import MemoryRateLimiter
from qa_ws_cli.server.redis_batch import AutoPipeline
from tests.redis_server import RedisServer


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.parametrize("seed", range(6))
async def test_the_redis_limiter_answers_as_the_memory_limiter_does(
    client: aioredis.Redis, seed: int
) -> None:
    rng = random.Random(seed)
    settings = RateLimitSettings(
        max_requests_per_minute=rng.randint(2, 12), burst=rng.randint(1, 4), abuse_factor=1
    )
    clock = [6_000_000.0 + rng.random() * 120]
    in_redis = RateLimiter(settings, client, AutoPipeline(client), clock=lambda: clock[0])
    in_memory = MemoryRateLimiter(settings, clock=lambda: clock[0])
    answers = 0
    for _ in range(400):  # over several minutes: bursts, pauses, a user coming back later
        clock[0] += rng.choice((0.0, 0.0, 0.01, 0.3, 0.7, 1.0, 4.0, 13.0, 45.0))
        user = rng.choice(("alice", "bob"))
        want = await in_memory.hit(user)
        assert await in_redis.hit(user) == want, (clock[0], user)
        if want is not None:
            assert await in_redis.abusive(user) == await in_memory.abusive(user)
            answers += 1
    assert answers > 10  # the sequence did reach the limits


async def test_retry_after_is_never_early_on_redis_time(client: aioredis.Redis) -> None:
    settings = RateLimitSettings(max_requests_per_minute=1000, burst=2, abuse_factor=1)
    limiter = RateLimiter(settings, client, AutoPipeline(client))  # Redis's clock
    assert await limiter.hit("carol") is None and await limiter.hit("carol") is None
    wait = await limiter.hit("carol")
    assert wait is not None and 0 < wait <= 1.0
    # the client's view: it got the refusal (Redis's time now, a moment after it was counted)
    # and waits exactly that long; rounded down, the wait would leave it early
    seconds, micros = await client.time()
    clock = [seconds + micros / 1e6 + wait]
    follower = RateLimiter(settings, client, AutoPipeline(client), clock=lambda: clock[0])
    assert await follower.hit("carol") is None


async def test_two_instances_share_one_budget_and_one_abuse_count(
    client: aioredis.Redis,
) -> None:
    settings = RateLimitSettings(max_requests_per_minute=3, burst=100, abuse_factor=1)
    a = RateLimiter(settings, client, AutoPipeline(client))
    b = RateLimiter(settings, client, AutoPipeline(client))
    assert [await a.hit("dave"), await b.hit("dave"), await a.hit("dave")] == [None] * 3
    assert await b.hit("dave") is not None
    assert await a.hit("erin") is None  # another user's budget is its own
    flags = [await (a if n % 2 else b).abusive("dave") for n in range(4)]
    assert flags == [False, False, False, True]  # the fourth rejection, on either instance
    # nothing is kept for good, and a minute's counts outlive the next minute (the TTL is set
    # by a minute's first message only)
    assert 60 < await client.ttl(a.key("dave")) <= 120
