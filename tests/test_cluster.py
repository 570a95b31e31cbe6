"""Two real ``qa-ws serve`` processes on one real Redis: what survives a crash, a close and an
outage of Redis itself.

The agent is ``tests/cluster_agent.py``: ``sleep=N …`` messages take N seconds on instance A
and 0.2 s on instance B (``QA_TEST_NO_SLEEP=1``), so a run can hang on A and be answered on B.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from typer.testing import CliRunner

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.cli.main import app
from tests.conftest import ServerProcess, make_settings, server_env
from tests.redis_server import RedisServer
from tests.server.wire import answer_to, chat, close_code, cut, eventually, next_event, until

pytestmark = pytest.mark.timeout(90)

REPO = Path(__file__).resolve().parents[1]
AGENT = "python:tests.cluster_agent:agent"
Spawn = Callable[..., ServerProcess]


def instance(
    spawn_server: Spawn, tmp_path: Path, redis_url: str, name: str, **env: str
) -> ServerProcess:
    environ = server_env(
        tmp_path,
        WEBSOCKET_STORE__URL=redis_url,
        WEBSOCKET_SERVER__NAME=name,
        WEBSOCKET_SESSIONS__RUN_LEASE_S="2",
        PYTHONPATH=str(REPO),
        **env,
    )
    return spawn_server("--agent", AGENT, env=environ)


def headers(tmp_path: Path, sub: str = "erin") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(make_settings(tmp_path), sub)[0]}"}


async def frames_for(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    return [await next_event(ws) for _ in range(count)]


@pytest.fixture
def pair(
    spawn_server: Spawn, tmp_path: Path, redis_server: RedisServer
) -> tuple[ServerProcess, ServerProcess]:
    a = instance(spawn_server, tmp_path, redis_server.url, "qa-ws-a")
    b = instance(spawn_server, tmp_path, redis_server.url, "qa-ws-b", QA_TEST_NO_SLEEP="1")
    return a, b


async def test_kill_9_replays_the_finished_answer_and_interrupts_the_one_in_flight(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    a, b = pair
    auth = headers(tmp_path)
    async with http.ws_connect(a.url, headers=auth) as ws:
        hello = await next_event(ws)
        await ws.send_json({"type": "chat_message", "id": "done", "content": "quick one"})
        await ws.send_json({"type": "chat_message", "id": "hung", "content": "sleep=60 slow"})
        await until(ws, lambda e: e["type"] == "agent_delta" and e["reply_to"] == "hung")
        cut(ws)  # unread
    await asyncio.sleep(0.6)  # "done" completes into the session while nobody reads it
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)

    params = {"session_id": hello["session_id"], "last_seq": "0"}
    async with http.ws_connect(b.url, headers=auth, params=params) as ws:
        again = await next_event(ws)
        assert again["resumed"] is True and again["server"]["name"] == "qa-ws-b"
        assert again["replayed"] == 1
        (replayed,) = await frames_for(ws, 1)
        assert (replayed["type"], replayed["reply_to"]) == ("agent_response", "done")
        # the lease of "hung" lapses (2 s here): B says so once, and a resend runs it on B
        interrupted = (await until(ws, answer_to("hung"), timeout=15))[-1]
        assert (interrupted["type"], interrupted["code"]) == ("error", "agent_interrupted")
        assert interrupted["retry_after"] > 0
        answer = await chat(ws, "hung", "sleep=60 slow")
        assert answer["type"] == "agent_response" and answer["content"].endswith("slow")
        assert await chat(ws, "hung", "sleep=60 slow") == answer  # answered once: stored
        await ws.send_json({"type": "ping", "id": "p1"})
        events = await until(ws, lambda e: e["type"] == "pong")
        assert [e["type"] for e in events] == ["pong"]  # nothing else: no second interruption


async def test_a_close_1001_mid_answer_is_replayed_on_the_other_instance(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """A browser reload: close 1001 while the answer streams; 2 s later, another instance."""
    a, b = pair
    auth = headers(tmp_path, "frank")
    async with http.ws_connect(a.url, headers=auth) as ws:
        hello = await next_event(ws)
        await ws.send_json({"type": "chat_message", "id": "q1", "content": "sleep=1 reload"})
        assert (await next_event(ws))["type"] == "agent_delta"
        await ws.close(code=1001)
    await asyncio.sleep(2)
    params = {"session_id": hello["session_id"], "last_seq": "0"}
    async with http.ws_connect(b.url, headers=auth, params=params) as ws:
        again = await next_event(ws)
        assert (again["resumed"], again["replayed"]) == (True, 1)
        (answer,) = await frames_for(ws, 1)
        assert (answer["type"], answer["reply_to"], answer["seq"]) == ("agent_response", "q1", 1)
        assert answer["content"] == "answer to: sleep=1 reload"
        assert (await chat(ws, "q2", "next"))["seq"] == 2  # seq carries on, on B


async def test_a_session_resumed_elsewhere_while_its_answer_runs_gets_that_answer(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """The client moved to B while A answers: A closes the old connection (as a second one
    on A would close it), the answer reaches B, a cancel of it is not_in_flight and a resend
    gets it again. (The old connection stayed open and got the answer alone; on B the chat
    stayed "running elsewhere" forever: no answer, and silence for its cancel and resend.)"""
    a, b = pair
    auth = headers(tmp_path, "gina")
    async with http.ws_connect(a.url, headers=auth) as old:
        hello = await next_event(old)
        await old.send_json({"type": "chat_message", "id": "q1", "content": "sleep=1.5 moved"})
        assert (await next_event(old))["type"] == "agent_delta"
        params = {"session_id": hello["session_id"], "last_seq": "0"}
        async with http.ws_connect(b.url, headers=auth, params=params) as ws:
            assert (await next_event(ws))["resumed"] is True
            assert await close_code(old) == 1000
            (answer,) = await until(ws, answer_to("q1"), timeout=8)
            assert (answer["type"], answer["seq"]) == ("agent_response", 1)
            await ws.send_json({"type": "cancel", "id": "c1", "target": "q1"})
            refused = await next_event(ws)
            assert (refused["code"], refused["reply_to"]) == ("not_in_flight", "c1")
            assert await chat(ws, "q1", "sleep=1.5 moved") == answer
            assert (await chat(ws, "q2", "next"))["seq"] == 3


async def test_redis_restarted_mid_run_degrades_and_recovers(
    pair: tuple[ServerProcess, ServerProcess],
    tmp_path: Path,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    a, b = pair
    auth = headers(tmp_path, "gina")
    http_a = a.url.replace("ws://", "http://").removesuffix("/ws")

    async def ready() -> int:
        async with http.get(http_a + "/readyz") as response:
            return response.status

    assert await ready() == 200
    async with http.ws_connect(a.url, headers=auth) as ws:
        hello = await next_event(ws)
        await ws.send_json({"type": "chat_message", "id": "q1", "content": "sleep=1.5 across"})
        await until(ws, lambda e: e["type"] == "agent_delta")
        redis_server.stop()  # mid-run
        assert await ready() == 503
        answer = (await until(ws, answer_to("q1")))[-1]
        assert answer["type"] == "agent_response"  # served from A's memory meanwhile
        assert (await chat(ws, "q2", "during"))["type"] == "agent_response"
        redis_server.start()
        await eventually(lambda: _ready_is(http, http_a, 200), what="ready again", timeout=20)
        after = await chat(ws, "q3", "after")
        assert after["type"] == "agent_response" and after["seq"] > answer["seq"]
        last_seq = after["seq"]
    client = redis.Redis.from_url(redis_server.url)
    try:  # written through again (q3), and what A kept in memory meanwhile written back
        key = f"qa-ws:s:{{{hello['session_id']}}}:a"
        assert client.hexists(key, "q3") and client.hexists(key, "q1")
    finally:
        client.close()
    params = {"session_id": hello["session_id"], "last_seq": "0"}
    async with http.ws_connect(b.url, headers=auth, params=params) as ws:
        again = await next_event(ws)  # the restarted Redis lost nothing A had answered
        assert (again["resumed"], again["replayed"]) == (True, last_seq)
    params = {"session_id": hello["session_id"], "last_seq": str(last_seq)}
    async with http.ws_connect(b.url, headers=auth, params=params) as ws:
        again = await next_event(ws)
        assert (again["resumed"], again["replayed"]) == (True, 0)
        assert (await chat(ws, "q3", "after"))["seq"] == last_seq  # stored, not run again
    for server in (a, b):
        assert "Traceback" not in server.output()
        assert server.output().count("Redis unavailable") <= 1  # once, not per message


async def _ready_is(http: aiohttp.ClientSession, base: str, status: int) -> bool:
    async with http.get(base + "/readyz") as response:
        return response.status == status


async def test_a_revocation_closes_connections_on_every_instance_and_refuses_handshakes(
    pair: tuple[ServerProcess, ServerProcess],
    tmp_path: Path,
    http: aiohttp.ClientSession,
    redis_server: RedisServer,
) -> None:
    a, b = pair
    token = issue_token(make_settings(tmp_path), "hank")[0]
    other = headers(tmp_path, "iris")  # another user: untouched
    auth = {"Authorization": f"Bearer {token}"}
    async with (
        http.ws_connect(b.url, headers=auth) as on_b,
        http.ws_connect(b.url, headers=other) as bystander,
    ):
        await next_event(on_b)
        await next_event(bystander)
        result = CliRunner().invoke(
            app, ["token", "revoke", token, "--redis-url", redis_server.url]
        )
        assert result.exit_code == 0, result.output
        assert "Redis" in result.output
        started = time.monotonic()
        assert await close_code(on_b, timeout=5) == 4003
        assert time.monotonic() - started < 2.5  # pub/sub, not the 5 s re-read
        assert (await chat(bystander, "still", "here"))["type"] == "agent_response"
    for server in (a, b):
        async with http.get(server.url, headers=auth) as refused:
            assert refused.status == 401
            assert (await refused.json())["error"] == "token_revoked"
    async with http.ws_connect(a.url, headers=other) as ws:  # other tokens still work
        assert (await next_event(ws))["event"] == "connected"


async def test_the_per_user_connection_cap_counts_every_instance(
    spawn_server: Spawn, tmp_path: Path, http: aiohttp.ClientSession, redis_server: RedisServer
) -> None:
    env = server_env(tmp_path, WEBSOCKET_SERVER__MAX_CONNECTIONS_PER_USER="2")
    a = spawn_server("--agent", "echo", "--redis-url", redis_server.url, env=env)
    b = spawn_server("--agent", "echo", "--redis-url", redis_server.url, env=env)
    assert "store: redis" in a.output() and "store: redis" in b.output()  # the flag's doing
    auth = headers(tmp_path, "uma")
    async with http.ws_connect(a.url, headers=auth) as one, http.ws_connect(b.url, headers=auth):
        await next_event(one)
        for server in (a, b):  # a third one, on either instance
            async with http.get(server.url, headers=auth) as refused:
                assert refused.status == 429
                assert (await refused.json())["error"] == "too_many_connections"
    async with http.ws_connect(b.url, headers=auth) as again:  # slots given back on close
        assert (await next_event(again))["event"] == "connected"
