"""``RedisStore`` against a real ``redis-server``: two gateways share one Redis.

Each test starts its own ``redis-server`` on a free loopback port (no persistence), so a test
may kill it and start it again on the same port. Without the binary the tests are skipped,
unless ``QA_WS_REQUIRE_ALL=1`` asks for every test to run (CI), where they fail instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from qa_ws_cli.agents.builtin import EchoAgent
from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.config import load_settings
from qa_ws_cli.errors import ConfigError
from qa_ws_cli.server.redis_store import CHANNEL, RETRY_S, RedisStore, check_store_url
from qa_ws_cli.server.session_outputs import Answered, Claimed, Publish, RunningElsewhere
from tests.conftest import Running, ServerProcess, make_settings, run_gateway, server_env
from tests.redis_server import RedisServer
from tests.server.wire import chat, close_code, connect, eventually, next_event, ping, until


def cluster_settings(tmp_path: Path, **rate: Any) -> Any:
    return make_settings(
        tmp_path,
        security={"rate_limiting": {"burst": 1000, **rate}},
        agent={"spec": "echo"},
    )


@pytest.fixture
async def pair(
    tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[tuple[Running, Running, RedisStore, RedisStore]]:
    """Two gateways (A and B) in front of the same Redis, as two instances behind nginx."""
    settings = cluster_settings(tmp_path, max_requests_per_minute=4)
    store_a, store_b = RedisStore(redis_server.url), RedisStore(redis_server.url)
    async with (
        run_gateway(settings, EchoAgent(), store_a) as a,
        run_gateway(settings, EchoAgent(), store_b) as b,
    ):
        assert store_a.subscribed and store_b.subscribed  # start() waited for them
        yield a, b, store_a, store_b


async def post_broadcast(
    http: aiohttp.ClientSession, gw: Running, message: str
) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {gw.token('ops', scope='chat admin')}"}
    async with http.post(
        gw.http + "/admin/broadcast", json={"message": message}, headers=headers
    ) as response:
        return response.status, await response.json()


async def readyz(http: aiohttp.ClientSession, gw: Running) -> tuple[int, dict[str, Any]]:
    async with http.get(gw.http + "/readyz") as response:
        return response.status, await response.json()


def is_broadcast(message: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e.get("event") == "broadcast" and e.get("message") == message


async def test_a_users_rate_limit_is_counted_across_instances(
    pair: tuple[Running, Running, RedisStore, RedisStore], http: aiohttp.ClientSession
) -> None:
    a, b, _, _ = pair
    on_a, _ = await connect(http, a, "alice")
    on_b, _ = await connect(http, b, "alice")
    for n in range(2):
        assert (await chat(on_a, f"a{n}"))["type"] == "agent_response"
        assert (await chat(on_b, f"b{n}"))["type"] == "agent_response"

    refused = await chat(on_b, "b2")  # the fifth message in the minute, over both instances
    assert refused["type"] == "error" and refused["code"] == "rate_limited"
    # the sliding minute: the rest of this minute, then until it has faded to 3 of 4 (15 s)
    assert 0 < refused["retry_after"] <= 60 + 15
    assert (await chat(on_a, "a2"))["code"] == "rate_limited"
    bob, _ = await connect(http, a, "bob")  # another user has a budget of his own
    assert (await chat(bob, "c0", "hi"))["content"] == "hi"


async def test_claims_and_other_chats_share_one_budget_and_a_refused_chat_claims_nothing(
    pair: tuple[Running, Running, RedisStore, RedisStore],
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
) -> None:
    a, b, _, _ = pair
    on_a, hello = await connect(http, a, "alice")
    on_b, _ = await connect(http, b, "alice")
    assert (await chat(on_a, "a0"))["type"] == "agent_response"  # counted in its claim
    too_long = await chat(on_b, "b0", "x" * 9000)  # refused before any claim: counted apart
    assert too_long["code"] == "message_too_large"
    assert (await chat(on_b, "b1"))["type"] == "agent_response"
    assert (await chat(on_a, "a1"))["type"] == "agent_response"  # the fourth of four
    refused = await chat(on_a, "a2")
    assert refused["code"] == "rate_limited" and refused["retry_after"] > 0
    client = redis.Redis.from_url(redis_server.url)
    try:  # the refused chat left no claim behind: a resend after the wait runs it
        assert not client.hexists(f"qa-ws:s:{{{hello['session_id']}}}:c", "a2")
    finally:
        client.close()


async def test_a_user_who_keeps_sending_past_the_limit_is_closed_with_1008(
    pair: tuple[Running, Running, RedisStore, RedisStore], http: aiohttp.ClientSession
) -> None:
    a, _, _, _ = pair
    ws, _ = await connect(http, a, "mallory")
    for n in range(4):
        assert (await chat(ws, f"ok{n}"))["type"] == "agent_response"
    for n in range(8):  # up to the threshold (abuse_factor 2 x 4): refused, still connected
        assert (await chat(ws, f"spam{n}"))["code"] == "rate_limited"
    await ws.send_json({"type": "chat_message", "id": "one-too-many", "content": "x"})
    assert await close_code(ws) == 1008


async def test_a_broadcast_to_one_instance_reaches_the_clients_of_every_instance(
    pair: tuple[Running, Running, RedisStore, RedisStore], http: aiohttp.ClientSession
) -> None:
    a, b, _, _ = pair
    on_a, _ = await connect(http, a, "alice")
    on_b, _ = await connect(http, b, "bob")
    also_b, _ = await connect(http, b, "carol")

    status, body = await post_broadcast(http, a, "maintenance at noon")
    assert status == 202
    assert body == {"delivered_to": 3}  # the cluster's count: each instance reports its own
    for ws in (on_a, on_b, also_b):
        event = (await until(ws, is_broadcast("maintenance at noon")))[-1]
        assert event["type"] == "system_event" and isinstance(event["seq"], int)

    status, body = await post_broadcast(http, b, "from B")
    assert (status, body) == (202, {"delivered_to": 3})
    assert (await until(on_a, is_broadcast("from B")))[-1]["message"] == "from B"
    # A's own envelope came back over Redis and was ignored: one broadcast each, no echo
    await ping(on_a, "p1")
    await ping(on_b, "p2")
    for ws in (on_a, on_b):
        with pytest.raises(TimeoutError):
            await next_event(ws, timeout=0.3)


async def test_redis_going_away_fails_open_and_the_subscriber_comes_back(
    pair: tuple[Running, Running, RedisStore, RedisStore],
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a, b, store_a, store_b = pair
    status, body = await readyz(http, a)
    assert status == 200 and body["checks"]["store"] is True
    on_a, _ = await connect(http, a, "alice")
    on_b, _ = await connect(http, b, "bob")

    redis_server.stop()
    status, body = await readyz(http, a)
    assert status == 503 and body["checks"]["store"] is False
    with caplog.at_level(logging.WARNING, logger="qa_ws.server"):
        for n in range(6):  # past the limit of 4: Redis cannot count, so the limiter allows
            answer = await chat(on_a, f"down{n}", f"still here {n}")
            assert answer["type"] == "agent_response", answer
    # once per store, not once per message (the chats' claims count their rate limit). Both
    # instances' stores log here, in this one process: B's own housekeeping may have noticed too
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    outage_warnings = [w for w in warnings if not w.startswith("subscription")]
    noticed = [s for s in (store_a, store_b) if not s.available]
    assert store_a in noticed and len(outage_warnings) == len(noticed), warnings
    assert all("Redis unavailable" in w for w in outage_warnings), warnings
    status, body = await post_broadcast(http, a, "local only")
    assert (status, body) == (202, {"delivered_to": 1})  # this instance's clients still get it
    await until(on_a, is_broadcast("local only"))
    await eventually(lambda: not store_b.subscribed, what="B noticed the outage")

    redis_server.start()
    await eventually(lambda: store_a.subscribed and store_b.subscribed, what="resubscribed")
    status, body = await readyz(http, b)
    assert status == 200 and body["checks"]["store"] is True
    status, body = await post_broadcast(http, a, "back again")
    assert (status, body) == (202, {"delivered_to": 2})  # both instances count again
    await until(on_b, is_broadcast("back again"))
    assert (await chat(on_b, "up0"))["type"] == "agent_response"  # counting again


async def test_a_chat_whose_redis_goes_away_after_its_claim_is_kept_here_then_redis_again(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, timeout_s=0.3)
    answer = Publish('{"type":"agent_response","reply_to":"c1"}', "c1", answer=True, release=True)
    try:
        await store.create("s1", "alice")
        assert isinstance(await store.claim("s1", "c1", "here"), Claimed)
        redis_server.stop()  # between the claim and the append that keeps its answer
        kept = await store.append("s1", "alice", answer, 1)
        assert kept is not None and kept[0] == 1 and '"seq":1' in kept[1]
        assert not store.available
        assert await store.claim("s1", "c1", "here") == Answered(kept[1])  # from memory

        redis_server.start()
        await asyncio.sleep(RETRY_S + 0.1)  # past the outage's retry window: Redis is asked
        assert isinstance(await store.claim("s1", "c2", "here"), Claimed)
        assert store.available  # a call went through: writes go to Redis again
        second = Publish('{"type":"agent_response","reply_to":"c2"}', "c2", answer=True)
        assert (await store.append("s1", "alice", second, 2) or (0,))[0] >= 1
    finally:
        await store.aclose()


async def test_what_an_outage_kept_in_memory_is_written_back_once_redis_answers(
    redis_server: RedisServer,
) -> None:
    """Left in memory, the answer of c1 would be asked of the agent again, the session could
    not be resumed past seq 0, and c1's claim would lapse into agent_interrupted."""
    store = RedisStore(redis_server.url, timeout_s=0.3)
    other = RedisStore(redis_server.url)  # another instance
    answer = Publish('{"type":"agent_response","reply_to":"c1"}', "c1", answer=True, release=True)
    try:
        await store.create("s1", "alice")
        assert isinstance(await store.claim("s1", "c1", "here"), Claimed)
        redis_server.pause()  # a blackhole: Redis keeps its data
        kept = await store.append("s1", "alice", answer, 1)
        assert kept is not None and not store.available
        assert isinstance(await store.claim("s1", "c2", "here"), Claimed)  # runs on, here
        redis_server.resume()
        await asyncio.sleep(RETRY_S + 0.1)
        assert await store.ping()  # Redis answers: the outage is over
        await eventually(lambda: not store.local.records, what="written back")
        assert await other.claim("s1", "c1", "there") == Answered(kept[1])
        assert await other.claim("s1", "c2", "there") == RunningElsewhere("here")
        record = await other.resume("s1", 0)
        assert record is not None and (record.seq, record.frames) == (1, [kept[1]])
        assert (record.running, record.interrupted) == (["c2"], [])
        after = Publish('{"type":"agent_response","reply_to":"c2"}', "c2", answer=True)
        assert (await store.append("s1", "alice", after, 2) or (0,))[0] == 2
    finally:
        await store.aclose()
        await other.aclose()


async def test_an_id_answered_during_an_outage_is_not_asked_again_after_it(
    tmp_path: Path, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    agent = EchoAgent()
    store = RedisStore(redis_server.url, timeout_s=0.3)
    async with run_gateway(cluster_settings(tmp_path), agent, store) as gw:
        ws, hello = await connect(http, gw)
        redis_server.pause()
        first = await chat(ws, "w1", "during")
        assert first["seq"] == 1 and not store.available
        redis_server.resume()
        await asyncio.sleep(RETRY_S + 0.1)
        assert (await readyz(http, gw))[0] == 200  # asks Redis: the outage is over
        await eventually(lambda: not store.local.records, what="written back")
        assert await chat(ws, "w1", "during") == first  # the very frame, not a second answer
        await ws.close()
        params = {"session_id": hello["session_id"], "last_seq": "1"}
        again, resumed = await connect(http, gw, params=params)
        assert (resumed["resumed"], resumed["replayed"]) == (True, 0)
        assert (await chat(again, "w2", "after"))["seq"] == 2  # seq goes on past the outage


async def test_a_gateway_starts_while_redis_is_down_and_recovers_when_it_comes(
    tmp_path: Path, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    redis_server.stop()
    store = RedisStore(redis_server.url, timeout_s=0.5)
    async with run_gateway(cluster_settings(tmp_path), EchoAgent(), store) as gw:
        status, body = await readyz(http, gw)
        assert status == 503 and body["checks"] == {
            "accepting": True,
            "agent": True,
            "store": False,
        }
        ws, _ = await connect(http, gw)
        assert (await chat(ws, "m0", "works"))["content"] == "works"

        redis_server.start()
        await eventually(lambda: store.subscribed, what="subscribed once Redis came")
        assert (await readyz(http, gw))[0] == 200


async def test_a_hung_redis_is_noticed_and_costs_chats_little(
    tmp_path: Path, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    store = RedisStore(redis_server.url, timeout_s=0.3, health_check_s=0.2)
    settings = cluster_settings(tmp_path, max_requests_per_minute=1000)
    async with run_gateway(settings, EchoAgent(), store) as gw:
        ws, _ = await connect(http, gw)
        redis_server.pause()
        try:
            await eventually(lambda: not store.subscribed, what="the silent Redis noticed")
            assert (await readyz(http, gw))[0] == 503
            started = time.monotonic()
            for n in range(10):  # one of them waits for the timeout, the rest skip the storage
                assert (await chat(ws, f"h{n}"))["type"] == "agent_response"
            assert time.monotonic() - started < 3.0  # without the 1 s pause: 10 timeouts
        finally:
            redis_server.resume()
        await eventually(lambda: store.subscribed, what="subscribed again")
        assert (await readyz(http, gw))[0] == 200


async def test_a_served_process_uses_the_redis_store_from_the_environment(
    tmp_path: Path,
    redis_server: RedisServer,
    spawn_server: Callable[..., ServerProcess],
    http: aiohttp.ClientSession,
) -> None:
    env = server_env(tmp_path, WEBSOCKET_STORE__URL=redis_server.url)
    server = spawn_server("--agent", "echo", env=env)
    assert "store: redis" in server.output()
    base = server.url.removeprefix("ws").removesuffix("/ws")
    async with http.get("http" + base + "/readyz") as response:
        assert response.status == 200 and (await response.json())["checks"]["store"] is True
    token, _ = issue_token(make_settings(tmp_path), "dora")  # the secret server_env sets
    headers = {"Authorization": f"Bearer {token}"}
    async with http.ws_connect(server.url, headers=headers) as ws:
        assert (await next_event(ws))["event"] == "connected"
        assert (await chat(ws, "m1", "over redis"))["content"] == "over redis"
    client = redis.Redis.from_url(redis_server.url)
    try:
        assert client.keys("qa-ws:limits*")  # the counters live in Redis
    finally:
        client.close()
    assert server.stop() == 0
    assert "Traceback" not in server.output()


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379", "memcached://x:1"])
def test_a_store_url_with_another_scheme_is_refused_naming_the_setting(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(tmp_path, store={"url": url})
    assert caught.value.path == "websocket.store.url"
    assert "websocket.store.url" in str(caught.value) and "redis" in str(caught.value)
    with pytest.raises(ConfigError, match=r"websocket\.store\.url"):
        check_store_url(url)


def test_the_store_url_comes_from_the_environment_and_defaults_to_memory(tmp_path: Path) -> None:
    assert make_settings(tmp_path).store.url is None
    env = {"WEBSOCKET_STORE__URL": "rediss://cache.internal:6380/2"}
    loaded = load_settings(Path(os.devnull), environ=env)
    assert loaded.settings.store.url == "rediss://cache.internal:6380/2"
    assert loaded.origins["store.url"] == "environment"
    unix = make_settings(tmp_path, store={"url": "unix:///run/redis.sock?db=1"})
    assert unix.store.url == "unix:///run/redis.sock?db=1"
    assert make_settings(tmp_path, store={"url": ""}).store.url is None


async def test_aclose_ends_the_subscription_and_may_be_called_twice(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url)
    await store.start()
    assert store.subscribed and await store.ping() and store.prune() == 0
    await store.aclose()
    await store.aclose()
    client = redis.Redis.from_url(redis_server.url)
    try:
        await eventually(
            lambda: client.pubsub_numsub(CHANNEL) == [(CHANNEL.encode(), 0)],
            what="no subscriber left",
        )
    finally:
        client.close()


async def test_sessions_survive_a_restart_through_the_redis_store(
    tmp_path: Path,
    redis_server: RedisServer,
    spawn_server: Callable[..., ServerProcess],
    http: aiohttp.ClientSession,
) -> None:
    """SIGTERM with an answer in flight: it is answered before 1001, and an instance started
    afterwards replays it (from Redis) to the client that resumes."""
    env = server_env(tmp_path, WEBSOCKET_STORE__URL=redis_server.url)
    first = spawn_server("--demo-latency-ms", "1500", env=env)
    token, _ = issue_token(make_settings(tmp_path), "erin")
    headers = {"Authorization": f"Bearer {token}"}
    async with http.ws_connect(first.url, headers=headers) as ws:
        hello = await next_event(ws)
        await ws.send_json({"type": "chat_message", "id": "q1", "content": "login form?"})
        await until(ws, lambda f: f["type"] == "agent_delta")  # in flight (after its tool)
        first.proc.send_signal(signal.SIGTERM)
        frames = [msg.json() async for msg in ws if msg.type is aiohttp.WSMsgType.TEXT]
        assert ws.close_code == 1001
    answered = [f for f in frames if f["type"] == "agent_response"]
    assert len(answered) == 1 and "login form" in answered[0]["content"]
    assert first.proc.wait(20) == 0  # nothing to hand over: every event was written through

    second = spawn_server(env=env)
    params = {"session_id": hello["session_id"], "last_seq": "0"}
    async with http.ws_connect(second.url, headers=headers, params=params) as ws:
        again = await next_event(ws)
        assert again["resumed"] is True and again["session_id"] == hello["session_id"]
        replayed = [await next_event(ws) for _ in range(again["replayed"])]
        assert [f["seq"] for f in replayed] == list(range(1, again["replayed"] + 1))
        assert answered[0] in replayed  # the very frame, seq and all
        await ws.send_json({"type": "chat_message", "id": "q1", "content": "login form?"})
        assert (await next_event(ws)) == answered[0]  # answered: not asked again
    async with http.ws_connect(second.url, headers=headers, params=params) as ws:
        assert (await next_event(ws))["resumed"] is True  # now held by the second instance
    other = issue_token(make_settings(tmp_path), "mallory")[0]
    async with http.get(
        second.url.replace("ws://", "http://"),
        params=params,
        headers={
            "Authorization": f"Bearer {other}",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    ) as resp:
        assert resp.status == 403 and (await resp.json())["error"] == "session_forbidden"


async def test_a_slot_release_redis_does_not_answer_marks_the_store_down(
    redis_server: RedisServer,
) -> None:
    """The releases after it (every connection closing while Redis hangs) do not each wait a
    timeout for it: they are given back here, and their Redis leases lapse by themselves."""
    store = RedisStore(redis_server.url, timeout_s=0.3)
    try:
        assert await store.reserve_connection("alice", "k1", 5)
        assert await store.reserve_connection("alice", "k2", 5)
        redis_server.pause()
        try:
            await store.release_connection("alice", "k1")
            assert not store.available
            sent = store.batch.commands
            await store.release_connection("alice", "k2")
            assert store.batch.commands == sent  # not sent: the store is down
            assert store.local.users() == 0  # both given back on this instance
        finally:
            redis_server.resume()
    finally:
        await store.aclose()
