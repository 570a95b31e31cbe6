"""A connection lives no longer than its token: ``token_expiring`` first, then 4001."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.client import ClientOptions, QaWsClient
from tests.conftest import make_settings, run_gateway
from tests.server.wire import close_code, connect, eventually, next_event, until


class Slow(Agent):
    async def chat(self, message: str, context: ChatContext | None = None) -> str:
        if message == "slow":
            await asyncio.sleep(2.0)
        return f"answer: {message}"


def notice_settings(tmp_path: Path, notice_s: float = 1.0) -> Any:
    return make_settings(tmp_path, security={"authentication": {"expiring_notice_s": notice_s}})


async def test_token_expiring_comes_before_the_4001_close(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = notice_settings(tmp_path)
    async with run_gateway(settings, Slow()) as gw:
        token, claims = issue_token(settings, "alice", ttl_s=3)
        ws, _ = await connect(http, gw, token=token)
        notice = await next_event(ws, timeout=10)
        assert notice["type"] == "system_event" and notice["event"] == "token_expiring"
        expires_at = datetime.strptime(notice["expires_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
        assert expires_at.replace(tzinfo=UTC).timestamp() == claims["exp"]
        assert notice["seq"] == 1  # replayable: a resumed session gets it too
        assert not ws.closed
        assert await close_code(ws, timeout=10) == 4001
        await eventually(lambda: len(gw.gateway.connections) == 0)


async def test_a_token_shorter_than_the_notice_closes_without_one(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = notice_settings(tmp_path, notice_s=60)
    async with run_gateway(settings, Slow()) as gw:
        token, _ = issue_token(settings, "alice", ttl_s=2)
        ws, _ = await connect(http, gw, token=token)
        msg = await ws.receive(timeout=10)  # the very next frame is the close
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 4001


async def test_an_answer_in_flight_at_expiry_waits_for_the_resume(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """4001 says "refresh and resume": the answer must not be thrown away with the socket."""
    settings = notice_settings(tmp_path, notice_s=0)
    async with run_gateway(settings, Slow()) as gw:
        token, _ = issue_token(settings, "alice", ttl_s=2)
        ws, hello = await connect(http, gw, token=token)
        await ws.send_json({"type": "chat_message", "id": "m1", "content": "slow"})
        assert await close_code(ws, timeout=10) == 4001

        fresh = await http.ws_connect(
            gw.url,
            params={"session_id": hello["session_id"], "last_seq": "0"},
            headers={"Authorization": f"Bearer {gw.token('alice')}"},
        )
        resumed = await next_event(fresh)
        assert resumed["resumed"] is True
        answer = (await until(fresh, lambda e: e.get("reply_to") == "m1", timeout=10))[-1]
        assert answer["type"] == "agent_response" and answer["content"] == "answer: slow"


async def test_the_client_refreshes_its_token_and_carries_on(tmp_path: Path) -> None:
    settings = notice_settings(tmp_path, notice_s=0.5)
    async with run_gateway(settings, Slow()) as gw:
        options = ClientOptions(
            gw.url,
            token=issue_token(settings, "alice", ttl_s=2)[0],
            reconnect=True,
            backoff_base=0.05,
            token_factory=lambda: issue_token(settings, "alice", ttl_s=60)[0],
        )
        async with QaWsClient(options) as client:
            first = client.session_id
            assert (await client.ask("before", timeout=10)).content == "answer: before"
            async with asyncio.timeout(10):
                while client.reconnects == 0:
                    await asyncio.sleep(0.05)
            assert (await client.ask("after", timeout=10)).content == "answer: after"
            assert client.session_id == first  # resumed, not started over


async def test_a_closed_connection_leaves_no_token_deadline_behind(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = notice_settings(tmp_path, notice_s=60)
    async with run_gateway(settings, Slow()) as gw:
        deadlines = gw.gateway.token_deadlines
        sockets = [(await connect(http, gw, token=gw.token("alice")))[0] for _ in range(3)]
        assert len(deadlines) == 3  # one each: their notice, an hour less a minute away
        for ws in sockets:
            await ws.close()
        await eventually(lambda: len(deadlines) == 0)
