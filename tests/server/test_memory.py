"""Memory stays bounded: what the server keeps for users who left is given back.

Thousands of users go through the rate limiter and the session manager directly (sockets
would only make it slow); a few hundred more come and go over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import unittest.mock
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from qa_ws_cli.agents.builtin import EchoAgent
from qa_ws_cli.config import RateLimitSettings, SessionSettings
from qa_ws_cli.protocol.codec import encode
from qa_ws_cli.protocol.events import SystemEvent
from qa_ws_cli.server import gateway as gateway_module
from qa_ws_cli.server.connections import Connection
from qa_ws_cli.server.memory_limits import MemoryRateLimiter
from qa_ws_cli.server.session_outputs import Publish
from qa_ws_cli.server.store import MemoryStore
from tests.conftest import make_settings, run_gateway
from tests.server.wire import chat, connect, eventually, metric

USERS = 3000


async def test_rate_limit_counters_of_thousands_of_users_are_dropped() -> None:
    clock = [1_000_000.5]
    limiter = MemoryRateLimiter(
        RateLimitSettings(max_requests_per_minute=2, burst=1), clock=lambda: clock[0]
    )
    for n in range(USERS):
        assert await limiter.hit(f"user-{n}") is None
    assert await limiter.hit("user-0") is not None  # the counters are live: a 2nd hit is over
    assert len(limiter) == 2 * USERS  # a one-second and a one-minute counter per user

    clock[0] += 3
    assert limiter.prune() == USERS  # the one-second windows go first
    clock[0] += 121
    assert limiter.prune() == USERS
    assert len(limiter) == 0
    assert await limiter.hit("user-0") is None  # a user who comes back starts afresh


async def test_sessions_of_thousands_of_users_who_left_are_dropped() -> None:
    store = MemoryStore()
    store.configure(SessionSettings(ttl_s=60))
    event = Publish(encode(SystemEvent(event="broadcast", message="x" * 200)))
    for n in range(USERS):
        await store.create(f"s{n}", f"user-{n}")
        await store.append(f"s{n}", f"user-{n}", event)
    await store.create("stayer", "stayer")
    assert len(store) == USERS + 1

    now = time.time()
    with mock_time(now + 30):
        await store.touch(["stayer"])  # an attached session is touched by the gateway
        assert store.sweep() == 0  # within the TTL: kept for a resume
    with mock_time(now + 61):
        assert store.sweep() == USERS
    assert len(store) == 1 and "stayer" in store.records
    assert sorted(store.expired_sessions()) == sorted(f"s{n}" for n in range(USERS))


@contextlib.contextmanager
def mock_time(at: float) -> Iterator[None]:
    """The store's clock (time.time) at ``at``: sweeping 60 s later without waiting 60 s."""
    with unittest.mock.patch("qa_ws_cli.server.session_store.time.time", return_value=at):
        yield


async def test_an_answer_still_running_when_its_session_expires_is_stopped(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_module, "HOUSEKEEPING_INTERVAL_S", 3600.0)  # we call it
    settings = make_settings(tmp_path, sessions={"ttl_s": 1}, agent={"demo_latency_ms": 60_000})
    async with run_gateway(settings) as gw:
        ws, hello = await connect(http, gw, "leaver")
        await ws.send_json({"type": "chat_message", "id": "m1", "content": "long one"})
        await eventually(lambda: gw.gateway.driver.inflight() == 1, what="the run started")
        await ws.close()
        await asyncio.sleep(1.2)  # past the session TTL
        gw.gateway.store.prune()
        await gw.gateway.housekeep()
        await eventually(lambda: gw.gateway.driver.inflight() == 0, what="the run stopped")
        assert hello["session_id"] not in gw.gateway.driver.local


async def test_hundreds_of_users_come_and_go_over_sockets_and_leave_nothing_behind(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_module, "HOUSEKEEPING_INTERVAL_S", 3600.0)  # we call it
    settings = make_settings(tmp_path, sessions={"ttl_s": 1})
    async with run_gateway(settings, EchoAgent()) as gw:
        stayer, hello = await connect(http, gw, "stayer")

        async def visit(n: int) -> None:
            ws, _ = await connect(http, gw, f"visitor-{n}")
            assert (await chat(ws, "m1", f"hi {n}"))["content"] == f"hi {n}"
            await ws.close()

        for start in range(0, 300, 50):
            await asyncio.gather(*(visit(n) for n in range(start, start + 50)))
        g = gw.gateway
        await eventually(lambda: len(g.connections) == 1, what="every visitor's handler ended")
        storage = g.limiter
        assert isinstance(storage, MemoryRateLimiter)
        store = g.store
        assert isinstance(store, MemoryStore)
        assert len(store) == 301 and len(storage) == 600 and store.users() == 1
        assert list(g.driver.local) == [hello["session_id"]]  # only the attached one is live

        await asyncio.sleep(1.2)  # past the session TTL
        await store.touch([hello["session_id"]])  # what the housekeeping does for attached ones
        await g.housekeep()
        assert len(store) == 1 and hello["session_id"] in store.records
        assert await metric(http, gw, "qa_ws_sessions") == 1
        storage.prune(now=time.time() + 121)  # past every rate-limit window
        assert len(storage) == 0
        gc.collect()
        left = [o for o in gc.get_objects() if isinstance(o, Connection)]
        assert [c.user for c in left if c.user.startswith("visitor-")] == []
        assert (await chat(stayer, "still", "here"))["content"] == "here"
