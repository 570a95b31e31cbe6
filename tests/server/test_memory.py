"""Memory stays bounded: what the server keeps for users who left is given back.

Thousands of users go through the rate limiter and the session manager directly (sockets
would only make it slow); a few hundred more come and go over real sockets.
"""

from __future__ import annotations

import asyncio
import gc
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qa_ws_cli.agents.builtin import EchoAgent
from qa_ws_cli.config import RateLimitSettings, SessionSettings
from qa_ws_cli.protocol.events import SystemEvent
from qa_ws_cli.server import gateway as gateway_module
from qa_ws_cli.server.connections import Connection
from qa_ws_cli.server.limits import MemoryLimitStorage, RateLimiter
from qa_ws_cli.server.sessions import ChatRun, SessionManager
from tests.conftest import make_settings, run_gateway
from tests.server.wire import chat, connect, eventually, metric

USERS = 3000


async def test_rate_limit_counters_of_thousands_of_users_are_dropped() -> None:
    storage = MemoryLimitStorage()
    limiter = RateLimiter(RateLimitSettings(max_requests_per_minute=2, burst=1), storage)
    for n in range(USERS):
        assert await limiter.hit(f"user-{n}") is None
    assert await limiter.hit("user-0") is not None  # the counters are live: a 2nd hit is over
    assert len(storage) == 2 * USERS  # a one-second and a one-minute counter per user

    now = time.time()
    assert storage.prune(now=now + 3) == USERS  # the one-second windows go first
    assert storage.prune(now=now + 121) == USERS
    assert len(storage) == 0 and not storage.expirations and not storage.locks
    assert await limiter.hit("user-0") is None  # a user who comes back starts afresh


class Attached:
    """Stands in for a live connection: a session attached to it is not the sweep's."""

    def __init__(self) -> None:
        self.session: Any = None
        self.sent: list[str] = []

    def send(self, frame: str) -> None:
        self.sent.append(frame)


async def test_sessions_of_thousands_of_users_who_left_are_dropped() -> None:
    manager = SessionManager(SessionSettings(ttl_s=60))
    for n in range(USERS):
        session = manager.create(f"user-{n}")
        session.publish(lambda seq: SystemEvent(event="broadcast", message="x" * 200, seq=seq))
        session.remember_answer("m1", "{}")
    running = manager.create("left-mid-answer")
    task = asyncio.create_task(asyncio.sleep(3600))
    running.inflight["m1"] = ChatRun(task=task, started=0.0)
    stayer = manager.create("stayer")
    manager.attach(stayer, Attached())  # type: ignore[arg-type]
    assert len(manager) == USERS + 2

    now = time.monotonic()
    assert manager.sweep(now=now + 30) == 0  # within the TTL: kept for a resume
    assert manager.sweep(now=now + 61) == USERS + 1
    assert len(manager) == 1 and manager.get(stayer.id) is stayer
    await asyncio.sleep(0)
    assert task.cancelled()  # the agent run of a user who left is stopped too


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
        storage = g.store.limit_storage()
        assert isinstance(storage, MemoryLimitStorage)
        assert len(g.sessions) == 301 and len(storage) == 600 and g.connections.users() == 1

        await asyncio.sleep(1.2)  # past the session TTL
        g.housekeep()
        assert len(g.sessions) == 1 and g.sessions.get(hello["session_id"]) is not None
        assert await metric(http, gw, "qa_ws_sessions") == 1
        storage.prune(now=time.time() + 121)  # past every rate-limit window
        assert len(storage) == 0 and not storage.locks
        gc.collect()
        left = [o for o in gc.get_objects() if isinstance(o, Connection)]
        assert [c.user for c in left if c.user.startswith("visitor-")] == []
        assert (await chat(stayer, "still", "here"))["content"] == "here"
