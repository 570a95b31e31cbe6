"""``AutoPipeline`` against a real ``redis-server``: many callers, one round trip, each its own
reply or error; Redis going away mid-batch fails every waiting caller, and none hangs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from qa_ws_cli.server.redis_batch import IDLE_CHECK_S, AutoPipeline, batch_client
from tests.redis_server import RedisServer

FAILS = "if ARGV[1] == 'fail' then return redis.error_reply('refused ' .. KEYS[1]) end\n"
ECHO = FAILS + "redis.call('RPUSH', 'order', ARGV[1]) return {KEYS[1], ARGV[1]}"


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=0.5)
    try:
        yield client
    finally:
        await client.aclose()


async def test_concurrent_callers_share_round_trips_and_each_gets_its_own_reply(
    client: aioredis.Redis,
) -> None:
    batch = AutoPipeline(client)
    echo = client.register_script(ECHO)
    await client.script_load(ECHO)  # else the first batch is sent twice (NOSCRIPT, then again)
    replies = await asyncio.gather(*(batch.script(echo, [f"k{n}"], [n]) for n in range(300)))
    assert replies == [[f"k{n}".encode(), str(n).encode()] for n in range(300)]
    assert batch.commands == 300 and batch.batches <= 3  # not one round trip each
    # issued in order, run in that order
    assert await client.lrange("order", 0, -1) == [str(n).encode() for n in range(300)]
    counts = await asyncio.gather(*(batch.execute("INCR", "counter") for _ in range(50)))
    assert sorted(counts) == list(range(1, 51))


async def test_an_error_in_one_command_fails_that_caller_only(client: aioredis.Redis) -> None:
    batch = AutoPipeline(client)
    echo = client.register_script(ECHO)
    await client.set("text", "not a number")
    calls = [
        batch.script(echo, ["a"], ["ok"]),
        batch.script(echo, ["b"], ["fail"]),
        batch.execute("INCR", "text"),
        batch.execute("INCR", "n"),
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] == [b"a", b"ok"] and results[3] == 1
    assert isinstance(results[1], ResponseError) and "refused b" in str(results[1])
    assert isinstance(results[2], ResponseError)
    assert batch.commands == 4 + 2  # the first use of the script: NOSCRIPT, loaded, sent again


async def test_an_argument_redis_cannot_carry_fails_its_own_caller_only(
    client: aioredis.Redis,
) -> None:
    batch = AutoPipeline(client)
    calls = [
        batch.execute("SET", "a", "before"),
        batch.execute("SET", "b", "\ud800"),  # a lone surrogate has no UTF-8 form
        batch.execute("SET", "c", "after"),
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] == results[2] == b"OK"
    assert isinstance(results[1], UnicodeEncodeError)
    assert await client.mget("a", "b", "c") == [b"before", None, b"after"]


async def test_a_script_redis_forgot_is_loaded_again_and_runs_once(
    client: aioredis.Redis,
) -> None:
    batch = AutoPipeline(client)
    echo = client.register_script(ECHO)
    await client.script_flush()  # as after a restart: EVALSHA answers NOSCRIPT
    replies = await asyncio.gather(*(batch.script(echo, ["k"], [n]) for n in range(20)))
    assert replies == [[b"k", str(n).encode()] for n in range(20)]
    assert await client.lrange("order", 0, -1) == [str(n).encode() for n in range(20)]


async def test_redis_going_away_mid_batch_fails_every_waiting_caller(
    client: aioredis.Redis, redis_server: RedisServer
) -> None:
    batch = AutoPipeline(client)
    echo = client.register_script(ECHO)
    assert await batch.execute("PING")
    redis_server.pause()  # the next batch goes out and waits for an answer
    try:
        in_flight = [batch.script(echo, ["k"], [n]) for n in range(10)]
        await asyncio.sleep(0.1)  # now on the wire, not answered
        queued = [batch.execute("INCR", "n") for _ in range(10)]  # behind it
        await asyncio.sleep(0.05)
    finally:
        redis_server.stop()  # killed while the batch waits for its replies
    async with asyncio.timeout(10):  # nobody hangs
        results = await asyncio.gather(*in_flight, *queued, return_exceptions=True)
    outage = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
    assert all(isinstance(r, outage) for r in results), results

    redis_server.start()  # back on the same port: the next command goes through
    assert await batch.execute("INCR", "n") == 1
    assert await batch.script(echo, ["k"], ["back"]) == [b"k", b"back"]


async def test_the_first_batch_after_a_quiet_redis_restart_goes_through(
    redis_server: RedisServer,
) -> None:
    client = batch_client(redis_server.url, 1.0)
    batch = AutoPipeline(client, timeout_s=1.0)
    try:
        assert await batch.execute("INCR", "n") == 1
        redis_server.stop()  # nothing is sent while it is away: the socket goes stale unseen
        redis_server.start()
        await asyncio.sleep(IDLE_CHECK_S + 0.2)
        assert await batch.execute("INCR", "n") == 1  # a fresh Redis, reached at once
    finally:
        await client.aclose()


class HangsBeforeLoading(aioredis.Redis):
    """A client whose Redis stops answering (SIGSTOP) just as a forgotten script is loaded."""

    server: RedisServer

    async def script_load(self, script: str) -> str:
        self.server.pause()
        return await super().script_load(script)


async def test_redis_hanging_while_a_forgotten_script_is_loaded_costs_one_timeout(
    redis_server: RedisServer,
) -> None:
    client = HangsBeforeLoading.from_url(redis_server.url, socket_timeout=None)
    client.server = redis_server
    batch = AutoPipeline(client, timeout_s=0.3)
    script = client.register_script(ECHO)  # not loaded: the first EVALSHA meets NOSCRIPT
    try:
        async with asyncio.timeout(5):  # the load is bounded as a batch is, not left hanging
            with pytest.raises((RedisTimeoutError, TimeoutError)):
                await batch.script(script, ["k"], ["x"])
            queued = batch.execute("PING")  # and what comes next is not stuck behind it
            redis_server.resume()
            assert await queued == b"PONG"
    finally:
        redis_server.resume()
        await batch.aclose()
        await client.aclose()


async def test_a_caller_that_gives_up_does_not_disturb_the_others(
    client: aioredis.Redis,
) -> None:
    batch = AutoPipeline(client)
    gone = asyncio.ensure_future(batch.execute("INCR", "n"))
    kept = batch.execute("INCR", "n")
    await asyncio.sleep(0)
    gone.cancel()
    assert await kept in (1, 2)
    assert int(await client.get("n") or 0) == 2  # sent all the same: a batch is not unsent


async def test_aclose_fails_what_is_queued(client: aioredis.Redis) -> None:
    batch = AutoPipeline(client)
    waiting = batch.execute("PING")
    await batch.aclose()
    with pytest.raises((RedisConnectionError, asyncio.CancelledError)):
        await waiting
