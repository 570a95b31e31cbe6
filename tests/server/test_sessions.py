"""Sessions survive reconnects: resume and replay, idempotent ids, ownership, client reconnect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qa_ws_cli.agents.base import ChatContext
from qa_ws_cli.agents.builtin import DemoAgent, EchoAgent
from qa_ws_cli.agents.events import Piece
from qa_ws_cli.client import ClientOptions, QaWsClient
from qa_ws_cli.server.redis_store import RedisStore
from tests.conftest import Running, make_settings, run_gateway
from tests.server.test_chat import open_ws, until
from tests.server.wire import cut


class Counting(DemoAgent):
    def __init__(self, latency_ms: float) -> None:
        super().__init__(latency_ms=latency_ms, chunks=5)
        self.calls: list[ChatContext] = []

    async def events(self, message: str, context: ChatContext) -> AsyncIterator[Piece]:
        self.calls.append(context)
        async for piece in super().events(message, context):
            yield piece


async def drain_frames(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(await ws.receive_json(timeout=seconds))
    except (TimeoutError, TypeError):
        return frames


async def test_cut_mid_stream_then_resume_gets_the_answer_exactly_once(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    agent = Counting(latency_ms=600)
    async with run_gateway(make_settings(tmp_path), agent) as running:
        ws, hello = await open_ws(http, running)
        await ws.send_json({"type": "chat_message", "id": "q1", "content": "login form?"})
        await until(ws, "agent_delta")
        cut(ws)
        await asyncio.sleep(0.9)  # the answer completes while the client is away
        ws2, hello2 = await open_ws(http, running, session_id=hello["session_id"], last_seq="0")
        assert hello2["resumed"] is True and hello2["replayed"] == 1
        assert hello2["session_id"] == hello["session_id"]
        frames = await drain_frames(ws2, 0.5)
        responses = [f for f in frames if f["type"] == "agent_response"]
        assert len(responses) == 1 and responses[0]["reply_to"] == "q1" and responses[0]["seq"] == 1
        assert "login form" in responses[0]["content"]
        assert len(agent.calls) == 1
        assert agent.calls[0].session_id == hello["session_id"] and agent.calls[0].user == "alice"
        await ws2.close()


async def test_resume_during_the_answer_receives_the_rest_live(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    agent = Counting(latency_ms=800)
    async with run_gateway(make_settings(tmp_path), agent) as running:
        ws, hello = await open_ws(http, running)
        await ws.send_json({"type": "chat_message", "id": "q1", "content": "api?"})
        await until(ws, "agent_delta")
        cut(ws)
        ws2, hello2 = await open_ws(http, running, session_id=hello["session_id"], last_seq="0")
        assert hello2["resumed"] is True and hello2["replayed"] == 0
        await ws2.send_json(
            {"type": "chat_message", "id": "q1", "content": "api?"}
        )  # resend: attached
        frames = await drain_frames(ws2, 1.5)
        assert [f["reply_to"] for f in frames if f["type"] == "agent_response"] == ["q1"]
        assert len(agent.calls) == 1
        await ws2.close()


async def test_resend_of_an_answered_id_gets_the_stored_answer(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    agent = Counting(latency_ms=10)
    async with run_gateway(make_settings(tmp_path), agent) as running:
        ws, _ = await open_ws(http, running)
        await ws.send_json({"type": "chat_message", "id": "q1", "content": "flaky tests?"})
        first = await until(ws, "agent_response")
        await ws.send_json({"type": "chat_message", "id": "q1", "content": "flaky tests?"})
        again = await until(ws, "agent_response")
        assert again == first and len(agent.calls) == 1
        await ws.send_json({"type": "chat_message", "id": "q2", "content": "and releases?"})
        second = await until(ws, "agent_response")
        assert second["seq"] == 2 and len(agent.calls) == 2
        assert [t.role for t in agent.calls[1].history] == ["user", "assistant"]
        await ws.close()


@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_bad_resend_of_an_answered_id_leaves_it_its_one_answer(
    tmp_path: Path, http: aiohttp.ClientSession, request: pytest.FixtureRequest, store: str
) -> None:
    """Oversize, empty or over the rate limit, the resend's error names no chat and is not
    kept: a resume still replays the answer alone, and a good resend still gets it."""
    settings = make_settings(
        tmp_path,
        limits={"max_content_chars": 40},
        security={"rate_limiting": {"max_requests_per_minute": 3, "burst": 10}},
    )
    backing = None
    if store == "redis":
        backing = RedisStore(request.getfixturevalue("redis_server").url)
    async with run_gateway(settings, EchoAgent(), backing) as running:
        ws, hello = await open_ws(http, running)
        await ws.send_json({"type": "chat_message", "id": "X", "content": "login form?"})
        answer = await until(ws, "agent_response")
        bad = [{"content": "x" * 41}, {"content": ""}, {"content": "ok"}, {"content": "ok"}]
        for fields in bad:  # rate-limited: the oversize one counted, not the invalid one
            await ws.send_json({"type": "chat_message", "id": "X", **fields})
        frames = [await ws.receive_json(timeout=5) for _ in bad]
        assert [(f.get("code"), f["reply_to"], "seq" in f) for f in frames] == [
            ("message_too_large", None, False),
            ("invalid_message", None, False),
            (None, "X", True),  # the third chat: the stored answer again
            ("rate_limited", None, False),
        ]
        assert frames[2] == answer
        await ws.close()
        again, resumed = await open_ws(http, running, session_id=hello["session_id"], last_seq="0")
        assert resumed["replayed"] == 1
        assert await again.receive_json(timeout=5) == answer
        await again.close()


async def test_another_users_resume_is_refused(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    ws, hello = await open_ws(http, gateway, sub="alice")
    async with http.get(
        gateway.url,
        params={"session_id": hello["session_id"], "last_seq": "0"},
        headers={
            "Authorization": f"Bearer {gateway.token('mallory')}",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    ) as resp:
        assert resp.status == 403 and (await resp.json())["error"] == "session_forbidden"
    await ws.close()


async def test_a_gap_that_cannot_be_filled_starts_a_fresh_session(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(tmp_path, sessions={"buffer_events": 1}, agent={"demo_latency_ms": 0})
    async with run_gateway(settings) as running:
        ws, hello = await open_ws(http, running)
        for n in range(3):
            await ws.send_json({"type": "chat_message", "id": f"q{n}", "content": "x"})
            await until(ws, "agent_response")
        await ws.close()
        for last_seq in ("0", "99", "-1", "abc", "²", "\u0661"):  # not ASCII digits: never a 500
            ws2, hello2 = await open_ws(
                http, running, session_id=hello["session_id"], last_seq=last_seq
            )
            assert hello2["resumed"] is False and hello2["session_id"] != hello["session_id"]
            await ws2.close()
        ws3, hello3 = await open_ws(http, running, session_id=hello["session_id"], last_seq="2")
        assert hello3["resumed"] is True and hello3["replayed"] == 1
        assert (await ws3.receive_json(timeout=5))["seq"] == 3
        await ws3.close()
        ws4, hello4 = await open_ws(http, running, session_id="no-such-session", last_seq="0")
        assert hello4["resumed"] is False
        await ws4.close()


async def test_resuming_on_a_second_connection_closes_the_first(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    ws, hello = await open_ws(http, gateway)
    ws2, hello2 = await open_ws(http, gateway, session_id=hello["session_id"], last_seq="0")
    assert hello2["resumed"] is True
    msg = await ws.receive(timeout=5)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1000
    await ws2.close()


async def test_the_client_library_reconnects_resumes_and_resends(tmp_path: Path) -> None:
    agent = Counting(latency_ms=600)
    async with run_gateway(make_settings(tmp_path), agent) as running:
        states: list[str] = []
        client = QaWsClient(
            ClientOptions(running.url, token=running.token(), reconnect=True, backoff_base=0.05)
        )
        client.on_state = states.append
        await client.connect()
        first_session = client.session_id
        pending = await client.send_chat("how do I test a login form?")
        await asyncio.sleep(0.2)
        await client.drop()
        answer = await asyncio.wait_for(pending, 10)
        assert "login form" in answer.content
        assert client.session_id == first_session and client.reconnects == 1
        assert "disconnected" in states and states[-1] == "connected"
        assert len(agent.calls) == 1
        await client.close()


async def test_the_client_gives_up_on_final_closes(tmp_path: Path) -> None:
    async with run_gateway(make_settings(tmp_path)) as running:
        client = QaWsClient(
            ClientOptions(running.url, token=running.token(), reconnect=True, backoff_base=0.05)
        )
        await client.connect()
        local = running.gateway.driver.local.get(client.session_id or "")
        assert local is not None and local.core.attached is not None
        conn = running.gateway.connections.get(local.core.attached)
        assert conn is not None
        await conn.close(1008, "policy")
        with pytest.raises(Exception, match="policy violation"):
            async for _ in client.events():
                pass
        await client.close()
