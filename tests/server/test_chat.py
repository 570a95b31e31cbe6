"""Frames on a live connection: bad input answered and survived, ping, cancel, streaming."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.agents.builtin import EchoAgent
from tests.conftest import Running, make_settings, run_gateway


async def open_ws(
    http: aiohttp.ClientSession, running: Running, sub: str = "alice", **params: str
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await http.ws_connect(
        running.url,
        params=params or None,
        headers={"Authorization": f"Bearer {running.token(sub)}"},
    )
    hello = await ws.receive_json(timeout=5)
    assert hello["event"] == "connected"
    return ws, hello


async def until(
    ws: aiohttp.ClientWebSocketResponse, kind: str, timeout: float = 10
) -> dict[str, Any]:
    while True:
        frame = await ws.receive_json(timeout=timeout)
        if frame["type"] == kind:
            return frame


async def test_invalid_json_then_a_valid_chat_on_the_same_connection(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    ws, _ = await open_ws(http, gateway)
    await ws.send_str("{oops")
    error = await ws.receive_json(timeout=5)
    assert (
        error["type"] == "error" and error["code"] == "invalid_json" and error["reply_to"] is None
    )
    await ws.send_json({"type": "chat_message", "id": "q1", "content": "how do I test an API?"})
    answer = await until(ws, "agent_response")
    assert answer["reply_to"] == "q1" and "API" in answer["content"] and answer["seq"] == 1
    await ws.close()


async def test_every_bad_frame_gets_an_error_and_the_connection_stays(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    ws, _ = await open_ws(http, gateway)
    cases = [
        ('{"type":"teleport","id":"t1"}', "invalid_message", "t1"),
        ('{"type":"chat_message","id":"m1"}', "invalid_message", "m1"),
        ('{"type":"chat_message","id":"bad id","content":"x"}', "invalid_message", None),
        ("[]", "invalid_message", None),
    ]
    for frame, code, reply_to in cases:
        await ws.send_str(frame)
        error = await ws.receive_json(timeout=5)
        assert (error["code"], error["reply_to"]) == (code, reply_to)
        assert ("seq" in error) == (reply_to is not None)
    await ws.send_bytes(b"\x00\x01")
    assert (await ws.receive_json(timeout=5))["code"] == "unsupported_frame"
    await ws.send_json({"type": "ping", "id": "p1"})
    pong = await ws.receive_json(timeout=5)
    assert pong == {"type": "pong", "reply_to": "p1", "ts": pong["ts"]}
    await ws.close()


async def test_too_long_content_is_refused_and_the_connection_stays(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(tmp_path, limits={"max_content_chars": 10})
    async with run_gateway(settings, EchoAgent()) as running:
        ws, _ = await open_ws(http, running)
        await ws.send_json({"type": "chat_message", "id": "long", "content": "x" * 11})
        error = await ws.receive_json(timeout=5)
        assert (error["code"], error["reply_to"]) == ("message_too_large", "long")
        await ws.send_json({"type": "chat_message", "id": "ok", "content": "x" * 10})
        assert (await until(ws, "agent_response"))["content"] == "x" * 10
        await ws.close()


async def test_a_bad_frame_reusing_the_id_of_a_chat_in_flight_leaves_it_one_final_frame(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(
        tmp_path, limits={"max_content_chars": 40}, agent={"demo_latency_ms": 400}
    )
    async with run_gateway(settings) as running:
        ws, hello = await open_ws(http, running)
        await ws.send_json({"type": "chat_message", "id": "X", "content": "login form?"})
        await ws.send_json({"type": "chat_message", "id": "X", "content": ""})
        await ws.send_json({"type": "chat_message", "id": "X", "content": "x" * 41})
        errors = [await until(ws, "error"), await until(ws, "error")]
        assert [(e["code"], e["reply_to"], "seq" in e) for e in errors] == [
            ("invalid_message", None, False),
            ("message_too_large", None, False),
        ]
        answer = await until(ws, "agent_response")
        assert (answer["reply_to"], answer["seq"]) == ("X", 1)
        await ws.close()
        again, resumed = await open_ws(http, running, session_id=hello["session_id"], last_seq="0")
        assert resumed["replayed"] == 1  # the answer alone: no error about X was kept
        assert (await again.receive_json(timeout=5))["type"] == "agent_response"
        await again.close()


async def test_echo_answers_without_deltas(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    async with run_gateway(make_settings(tmp_path), EchoAgent()) as running:
        ws, _ = await open_ws(http, running)
        await ws.send_json({"type": "chat_message", "id": "e", "content": "same"})
        frame = await ws.receive_json(timeout=5)
        assert frame["type"] == "agent_response" and frame["content"] == "same"
        await ws.close()


class Slow(Agent):
    """Streams a piece every 50 ms, forever, and records whether it was closed."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        try:
            while True:
                await asyncio.sleep(0.05)
                yield "more "
        finally:
            self.closed.set()


async def test_cancel_stops_the_answer_in_flight(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    agent = Slow()
    async with run_gateway(make_settings(tmp_path), agent) as running:
        ws, _ = await open_ws(http, running)
        await ws.send_json({"type": "chat_message", "id": "long", "content": "go"})
        await until(ws, "agent_delta")
        await ws.send_json({"type": "cancel", "id": "c1", "target": "long"})
        error = await until(ws, "error")
        assert (error["code"], error["reply_to"]) == ("cancelled", "long")
        await asyncio.wait_for(agent.closed.wait(), 5)
        await ws.send_json({"type": "cancel", "id": "c2", "target": "long"})  # over already
        assert (await until(ws, "error"))["code"] == "not_in_flight"
        await ws.send_json({"type": "ping", "id": "after"})
        assert (await until(ws, "pong"))["reply_to"] == "after"
        await ws.close()


class SlowEcho(Agent):
    async def chat(self, message: str, context: ChatContext | None = None) -> str:
        await asyncio.sleep(0.4)
        return message


@pytest.mark.parametrize("code", [1000, 1001])
async def test_a_close_of_any_kind_leaves_the_answer_running_into_the_session(
    tmp_path: Path, http: aiohttp.ClientSession, code: int
) -> None:
    """A browser reload closes with 1001, a client's ``close()`` with 1000: neither is a
    cancel. The answer completes into the session and the resume replays it once."""
    async with run_gateway(make_settings(tmp_path), SlowEcho()) as running:
        ws, hello = await open_ws(http, running)
        await ws.send_json({"type": "chat_message", "id": "q1", "content": "still wanted"})
        await asyncio.sleep(0.1)
        await ws.close(code=code)
        await asyncio.sleep(0.6)  # it completes while nobody is connected
        ws2, hello2 = await open_ws(http, running, session_id=hello["session_id"], last_seq="0")
        assert hello2["resumed"] is True and hello2["replayed"] == 1
        answer = await ws2.receive_json(timeout=5)
        assert (answer["type"], answer["reply_to"], answer["seq"]) == ("agent_response", "q1", 1)
        assert answer["content"] == "still wanted"
        await ws2.send_json({"type": "ping", "id": "p"})
        assert (await ws2.receive_json(timeout=5))["type"] == "pong"  # nothing replayed twice
        await ws2.close()


async def test_a_cancel_of_an_id_not_in_flight_is_answered_not_in_flight(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    ws, _ = await open_ws(http, gateway)
    await ws.send_json({"type": "cancel", "id": "c9", "target": "nothing"})
    error = await ws.receive_json(timeout=5)
    assert (error["type"], error["code"], error["reply_to"]) == ("error", "not_in_flight", "c9")
    assert error["seq"] == 1
    await ws.close()
