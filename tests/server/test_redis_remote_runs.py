"""A session's chats run by another instance, in a real ``redis-server``: what this instance
does when that instance's frame never reached it, or the run ended while a cancel was asked.

"Another instance" is a second ``RedisStore`` that claims and answers in Redis as an instance
would, without ever publishing its frames: as if the frame went out before this connection
attached, or to a connection of the other instance's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qa_ws_cli.agents.builtin import EchoAgent
from qa_ws_cli.config import SessionSettings
from qa_ws_cli.server.redis_store import RedisStore
from qa_ws_cli.server.session_core import error_body
from qa_ws_cli.server.session_outputs import Claimed, Publish
from tests.conftest import Running, make_settings, run_gateway
from tests.redis_server import RedisServer
from tests.server.wire import connect, next_event, until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def gateway(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Running]:
    settings = make_settings(tmp_path, agent={"spec": "echo"})
    async with run_gateway(settings, EchoAgent(), RedisStore(redis_server.url)) as running:
        yield running


@pytest.fixture
async def other(redis_server: RedisServer) -> AsyncIterator[RedisStore]:
    store = RedisStore(redis_server.url)
    store.configure(SessionSettings(run_lease_s=0.5))
    yield store
    await store.aclose()


async def resumed_with(
    http: aiohttp.ClientSession, gateway: Running, other: RedisStore, chat_ids: list[str]
) -> tuple[aiohttp.ClientWebSocketResponse, str]:
    """A session whose ``chat_ids`` the other instance claimed, resumed here."""
    ws, hello = await connect(http, gateway, "hana")
    session_id = hello["session_id"]
    for chat_id in chat_ids:
        assert isinstance(await other.claim(session_id, chat_id, "other"), Claimed)
    await ws.close()
    params = {"session_id": session_id, "last_seq": "0"}
    ws, hello = await connect(http, gateway, "hana", params=params)
    assert hello["resumed"] is True
    return ws, session_id


def answer(chat_id: str) -> Publish:
    body = f'{{"type":"agent_response","reply_to":"{chat_id}","content":"from the other one"}}'
    return Publish(body, chat_id, answer=True, release=True)


async def test_an_answer_whose_frame_never_came_is_sent_from_the_session(
    http: aiohttp.ClientSession, gateway: Running, other: RedisStore
) -> None:
    ws, session_id = await resumed_with(http, gateway, other, ["q1"])
    await other.append(session_id, "hana", answer("q1"))  # kept, never published
    (got,) = await until(ws, lambda e: e.get("reply_to") == "q1", timeout=5)
    assert (got["type"], got["seq"], got["content"]) == ("agent_response", 1, "from the other one")
    await ws.close()


async def test_a_cancel_of_a_run_that_ended_elsewhere_is_not_in_flight(
    http: aiohttp.ClientSession, gateway: Running, other: RedisStore
) -> None:
    ws, session_id = await resumed_with(http, gateway, other, ["q1", "q2"])
    failed = error_body("agent_error", "the agent failed to answer", "q1")
    await other.append(session_id, "hana", Publish(failed, "q1", release=True))
    await ws.send_json({"type": "cancel", "id": "c1", "target": "q1"})
    events: list[dict[str, Any]] = [await next_event(ws), await next_event(ws)]
    assert [(e.get("code"), e["reply_to"], e.get("seq")) for e in events] == [
        ("agent_error", "q1", 1),  # what the connection had missed, first
        ("not_in_flight", "c1", 2),
    ]
    await asyncio.sleep(0.6)  # q2's instance never renews its lease: it died
    await ws.send_json({"type": "cancel", "id": "c2", "target": "q2"})
    seen = await until(ws, lambda e: e.get("reply_to") == "c2", timeout=5)
    codes = [(e.get("code"), e["reply_to"]) for e in seen if e["type"] == "error"]
    assert codes == [("agent_interrupted", "q2"), ("not_in_flight", "c2")]
    await ws.close()
