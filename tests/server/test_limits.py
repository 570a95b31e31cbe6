"""Every limit of issue 3 over real sockets: rate, abuse, caps, sizes, in-flight answers.

Heartbeats, idle peers and slow consumers are in ``test_peers.py``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qa_ws_cli.agents.base import Agent, ChatContext
from tests.conftest import Running, make_settings, run_gateway
from tests.server.wire import (
    WS_CLOSE,
    RawPeer,
    chat,
    close_code,
    connect,
    eventually,
    metric,
    next_event,
    ping,
    until,
)


class CountingEcho(Agent):
    """Echoes, and remembers every message that reached it."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def chat(self, message: str, context: ChatContext | None = None) -> str:
        self.seen.append(message)
        return f"echo: {message}"


class Gate(Agent):
    """Holds every answer until the test opens the gate."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.started = 0

    async def chat(self, message: str, context: ChatContext | None = None) -> str:
        self.started += 1
        await self.opened.wait()
        return f"done: {message}"


def rate_settings(tmp_path: Path, **rate: Any) -> Any:
    return make_settings(tmp_path, security={"rate_limiting": {"burst": 1000, **rate}})


async def refused_handshake(
    http: aiohttp.ClientSession, running: Running, sub: str
) -> tuple[int, dict[str, Any], str | None]:
    """A plain upgrade request: a refusal comes back as HTTP with the protocol's JSON body."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Authorization": f"Bearer {running.token(sub)}",
    }
    async with http.get(running.url, headers=headers) as response:
        return response.status, await response.json(), response.headers.get("Retry-After")


# -- rate limit ---------------------------------------------------------------------------


async def test_the_rate_limit_counts_a_users_messages_across_connections(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    agent = CountingEcho()
    async with run_gateway(rate_settings(tmp_path, max_requests_per_minute=5), agent) as gw:
        first, _ = await connect(http, gw, "alice")
        second, _ = await connect(http, gw, "alice")
        for n in range(3):
            assert (await chat(first, f"a{n}", f"one-{n}"))["type"] == "agent_response"
        for n in range(2):
            assert (await chat(second, f"b{n}", f"two-{n}"))["type"] == "agent_response"

        refused = await chat(second, "b2", "two-2")
        assert refused["type"] == "error" and refused["code"] == "rate_limited"
        assert refused["reply_to"] == "b2" and isinstance(refused["seq"], int)
        # the sliding minute: the rest of this minute, then until it has faded to 4 of 5 (12 s)
        assert 0 < refused["retry_after"] <= 60 + 12
        again = await chat(first, "a3", "one-3")  # the other connection shares the budget
        assert again["code"] == "rate_limited"
        assert agent.seen == ["one-0", "one-1", "one-2", "two-0", "two-1"]

        await ping(second, "still-there")  # a rate-limited connection stays open
        await ping(first, "me-too")
        bob, _ = await connect(http, gw, "bob")  # another user has a budget of his own
        assert (await chat(bob, "c0", "bob"))["content"] == "echo: bob"


async def test_a_burst_beyond_the_allowance_is_refused_until_retry_after(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    agent = CountingEcho()
    settings = make_settings(
        tmp_path, security={"rate_limiting": {"max_requests_per_minute": 60, "burst": 3}}
    )
    async with run_gateway(settings, agent) as gw:
        ws, _ = await connect(http, gw)
        await asyncio.sleep(1.05 - time.time() % 1)  # all six inside one second's window
        for n in range(6):  # all at once, without waiting for answers
            await ws.send_json({"type": "chat_message", "id": f"m{n}", "content": f"q{n}"})
        ends: dict[str, dict[str, Any]] = {}
        async with asyncio.timeout(10):
            while len(ends) < 6:
                event = await next_event(ws)
                if event["type"] in ("agent_response", "error"):
                    ends[event["reply_to"]] = event
        answered = sorted(k for k, e in ends.items() if e["type"] == "agent_response")
        limited = [e for e in ends.values() if e.get("code") == "rate_limited"]
        assert answered == ["m0", "m1", "m2"] and len(limited) == 3
        assert agent.seen == ["q0", "q1", "q2"]
        retry_after = max(e["retry_after"] for e in limited)
        assert 0 < retry_after <= 2  # the one-second window, not the minute

        await asyncio.sleep(retry_after)
        assert (await chat(ws, "later", "after the wait"))["type"] == "agent_response"


@pytest.mark.parametrize(("factor", "threshold"), [(None, 6), (0.5, 1)])
async def test_a_client_that_keeps_sending_past_the_limit_is_closed_with_1008(
    tmp_path: Path, http: aiohttp.ClientSession, factor: float | None, threshold: int
) -> None:
    rate: dict[str, Any] = {"max_requests_per_minute": 3}
    if factor is not None:
        rate["abuse_factor"] = factor
    agent = CountingEcho()
    async with run_gateway(rate_settings(tmp_path, **rate), agent) as gw:
        ws, _ = await connect(http, gw, "mallory")
        for n in range(3):
            assert (await chat(ws, f"ok{n}"))["type"] == "agent_response"
        for n in range(threshold):  # up to the threshold: refused, but still connected
            assert (await chat(ws, f"spam{n}"))["code"] == "rate_limited"
        await ping(ws, "not-yet")

        await ws.send_json({"type": "chat_message", "id": "one-too-many", "content": "x"})
        assert await close_code(ws) == 1008
        assert len(agent.seen) == 3
        assert await metric(http, gw, 'qa_ws_closes_total{code="1008"}') == 1

        bob, _ = await connect(http, gw, "bob")
        assert (await chat(bob, "fine"))["type"] == "agent_response"


# -- connection caps ----------------------------------------------------------------------


async def test_the_server_wide_cap_refuses_with_503_server_full(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(tmp_path, server={"max_connections": 2})
    async with run_gateway(settings, CountingEcho()) as gw:
        alice, _ = await connect(http, gw, "alice")
        bob, _ = await connect(http, gw, "bob")
        status, body, retry_after = await refused_handshake(http, gw, "carol")
        assert status == 503 and body["error"] == "server_full" and body["detail"]
        assert retry_after is not None and int(retry_after) > 0
        await ping(alice, "unaffected")
        await ping(bob, "unaffected")

        await alice.close()  # a slot comes back when a connection ends
        await until_connects(http, gw, "carol")
        assert await metric(http, gw, 'qa_ws_handshakes_refused_total{error="server_full"}') >= 1


async def test_the_per_user_cap_refuses_with_429_too_many_connections(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(tmp_path, server={"max_connections_per_user": 2})
    async with run_gateway(settings, CountingEcho()) as gw:
        first, _ = await connect(http, gw, "alice")
        second, _ = await connect(http, gw, "alice")
        status, body, retry_after = await refused_handshake(http, gw, "alice")
        assert status == 429 and body["error"] == "too_many_connections"
        assert retry_after is not None and int(retry_after) > 0
        bob, _ = await connect(http, gw, "bob")  # others are not counted against alice
        await ping(second, "unaffected")
        await ping(bob, "unaffected")

        await first.close()
        await until_connects(http, gw, "alice")


async def until_connects(http: aiohttp.ClientSession, gw: Running, sub: str) -> None:
    """The slot is released when the server's handler ends, just after the close."""
    async with asyncio.timeout(5):
        while True:
            try:
                await connect(http, gw, sub)
                return
            except aiohttp.WSServerHandshakeError:
                await asyncio.sleep(0.05)


# -- sizes --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "binary"])
async def test_a_frame_above_max_message_bytes_closes_with_1009(
    tmp_path: Path, http: aiohttp.ClientSession, kind: str
) -> None:
    settings = make_settings(tmp_path, limits={"max_message_bytes": 1024})
    async with run_gateway(settings, CountingEcho()) as gw:
        bystander, _ = await connect(http, gw, "bob")
        ws, _ = await connect(http, gw)
        head = '{"type":"ping","id":"p","pad":"'
        exactly = head + "x" * (1024 - len(head) - 2) + '"}'
        assert len(exactly.encode()) == 1024
        await ws.send_str(exactly)  # at the limit: served
        assert (await next_event(ws))["type"] == "pong"
        if kind == "text":
            await ws.send_str(exactly.replace('"}', 'x"}'))  # one byte above
        else:
            await ws.send_bytes(b"\0" * 1024)  # at the limit: answered, not closed
            assert (await next_event(ws))["code"] == "unsupported_frame"
            await ws.send_bytes(b"\0" * 1025)
        assert await close_code(ws) == 1009
        await ping(bystander, "fine")
        again, _ = await connect(http, gw)  # the server keeps accepting
        await ping(again, "fine")
        # counted (and logged) as the code it sent, not as 1006
        assert await metric(http, gw, 'qa_ws_closes_total{code="1009"}') == 1


async def test_a_frame_that_is_not_utf8_closes_with_1007_counted_as_1007(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with run_gateway(make_settings(tmp_path), CountingEcho()) as gw:
        peer = await RawPeer.open(gw, gw.token())
        peer.send_text(b'{"type":"ping","id":"\xff"}')
        frames = await peer.frames_until_eof()
        assert [f.close_code for f in frames if f.opcode == WS_CLOSE] == [1007]
        peer.close()

        async def counted() -> bool:
            return await metric(http, gw, 'qa_ws_closes_total{code="1007"}') == 1

        await eventually(counted)


async def test_content_over_max_chars_is_refused_and_the_connection_stays(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    agent = CountingEcho()
    settings = make_settings(tmp_path, limits={"max_content_chars": 10})
    async with run_gateway(settings, agent) as gw:
        ws, hello = await connect(http, gw)
        assert hello["limits"]["max_content_chars"] == 10
        refused = await chat(ws, "long", "x" * 11)
        assert refused["type"] == "error" and refused["code"] == "message_too_large"
        assert refused["reply_to"] == "long"
        answered = await chat(ws, "fits", "é" * 10)  # characters, not bytes
        assert answered["content"] == "echo: " + "é" * 10
        assert agent.seen == ["é" * 10]


# -- answers in flight --------------------------------------------------------------------


async def test_more_chats_in_flight_than_allowed_get_agent_busy(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    agent = Gate()
    settings = make_settings(tmp_path, limits={"max_inflight_per_connection": 2})
    async with run_gateway(settings, agent) as gw:
        ws, _ = await connect(http, gw)
        for n in range(3):
            await ws.send_json({"type": "chat_message", "id": f"m{n}", "content": f"q{n}"})
        busy = (await until(ws, lambda e: e["type"] == "error"))[-1]
        assert busy["code"] == "agent_busy" and busy["reply_to"] == "m2"
        assert busy["retry_after"] > 0
        assert agent.started == 2

        other, _ = await connect(http, gw)  # the cap is per connection
        await other.send_json({"type": "chat_message", "id": "o1", "content": "other"})
        await eventually(lambda: agent.started == 3, what="the other connection's chat started")

        agent.opened.set()
        answered: set[str] = set()
        async with asyncio.timeout(10):
            while answered != {"m0", "m1"}:
                event = await next_event(ws)
                assert event["type"] == "agent_response", event
                answered.add(event["reply_to"])
        assert (await chat(ws, "m3", "after"))["content"] == "done: after"  # slots came back
