"""Peers that misbehave at the transport: silent to pings, idle, or not reading at all.

Each runs beside a well-behaved client, which must keep getting its answers meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.server import connections
from tests.conftest import make_settings, run_gateway
from tests.server.wire import (
    WS_CLOSE,
    WS_PING,
    WS_PONG,
    WS_TEXT,
    RawPeer,
    chat,
    close_code,
    connect,
    eventually,
    metric,
    next_event,
    ping,
)

GENEROUS = {"max_requests_per_minute": 100_000, "burst": 10_000}


class Firehose(Agent):
    """``flood`` streams 16 KiB pieces until stopped; anything else is answered at once."""

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        if message != "flood":
            yield f"ok: {message}"
            return
        while True:
            yield "x" * 16384
            await asyncio.sleep(0.001)


class Sleepy(Agent):
    async def chat(self, message: str, context: ChatContext | None = None) -> str:
        if message == "slow":
            await asyncio.sleep(2.5)
        return f"ok: {message}"


# -- heartbeat ----------------------------------------------------------------------------


async def test_the_server_closes_a_peer_that_stops_answering_pings(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(tmp_path, limits={"heartbeat_s": 0.4})
    async with run_gateway(settings, Sleepy()) as gw:
        good, _ = await connect(http, gw, "good")
        reader = asyncio.create_task(good.receive())  # a reading client answers pings itself
        silent = await http.ws_connect(
            gw.url, headers={"Authorization": f"Bearer {gw.token('silent')}"}, autoping=False
        )

        async def silent_dropped() -> bool:  # 1006: no close frame, it would not read one
            return await metric(http, gw, 'qa_ws_closes_total{code="1006"}') == 1

        await eventually(silent_dropped, what="the silent peer dropped")
        assert [c.user for c in gw.gateway.connections] == ["good"]

        kinds = []  # what the silent peer had been sent: its welcome, then pings, then the end
        while (msg := await silent.receive(timeout=5)).type in (
            aiohttp.WSMsgType.TEXT,
            aiohttp.WSMsgType.PING,
        ):
            kinds.append(msg.type)
        assert kinds[0] is aiohttp.WSMsgType.TEXT and aiohttp.WSMsgType.PING in kinds

        await asyncio.sleep(1.0)  # several more heartbeats: the answering client stays
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await ping(good, "still-here")
        assert (await chat(good, "c1", "hi"))["content"] == "ok: hi"


async def test_a_raw_socket_that_goes_silent_after_the_upgrade_is_dropped(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, limits={"heartbeat_s": 0.4})
    async with run_gateway(settings, Sleepy()) as gw:
        peer = await RawPeer.open(gw, gw.token("silent"))
        try:
            frames = await peer.frames_until_eof(timeout=10)  # reads, never answers
        finally:
            peer.close()
        assert frames[0].opcode == WS_TEXT and b'"connected"' in frames[0].payload
        assert WS_PING in [f.opcode for f in frames]
        await eventually(lambda: len(gw.gateway.connections) == 0)


async def test_a_client_ping_is_answered_with_its_payload_and_counts_as_heard(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, limits={"heartbeat_s": 0.4})
    async with run_gateway(settings, Sleepy()) as gw:
        peer = await RawPeer.open(gw, gw.token("pinger"))
        try:
            assert (await peer.read_frame()) is not None  # connected
            for n in range(8):  # 1.6 s of pings and nothing else: never dropped
                peer.send_frame(WS_PING, f"beat {n}".encode())
                frame = await peer.read_frame()
                while frame is not None and frame.opcode == WS_PING:  # the server's own
                    peer.send_frame(WS_PONG, frame.payload)
                    frame = await peer.read_frame()
                assert frame is not None and (frame.opcode, frame.payload) == (
                    WS_PONG,
                    f"beat {n}".encode(),
                )
                await asyncio.sleep(0.2)
            assert len(gw.gateway.connections) == 1
        finally:
            peer.close()
        await eventually(lambda: len(gw.gateway.heartbeat.deadlines) == 0)


async def test_answering_the_heartbeat_does_not_keep_an_idle_connection_open(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """Pongs keep a connection from being dropped as dead, not from being idle."""
    settings = make_settings(tmp_path, limits={"heartbeat_s": 0.3, "idle_timeout_s": 1.0})
    async with run_gateway(settings, Sleepy()) as gw:
        ws, _ = await connect(http, gw, "quiet")  # aiohttp's client answers pings itself
        assert await close_code(ws, timeout=10) == 1000


async def test_no_heartbeat_when_it_is_turned_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits={"heartbeat_s": 0})
    async with run_gateway(settings, Sleepy()) as gw:
        peer = await RawPeer.open(gw, gw.token("silent"))
        try:
            assert (await peer.read_frame()) is not None  # connected
            assert len(gw.gateway.heartbeat.deadlines) == 0
            with pytest.raises(TimeoutError):  # no ping comes
                await asyncio.wait_for(peer.read_frame(), 1.0)
        finally:
            peer.close()


# -- idle timeout -------------------------------------------------------------------------


async def test_the_idle_timeout_closes_only_peers_with_nothing_going_on(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(tmp_path, limits={"idle_timeout_s": 1.0})
    async with run_gateway(settings, Sleepy()) as gw:
        silent, _ = await connect(http, gw, "silent")
        chatty, _ = await connect(http, gw, "chatty")
        waiting, _ = await connect(http, gw, "waiting")

        async def keep_pinging() -> None:
            for n in range(10):
                await ping(chatty, f"p{n}")
                await asyncio.sleep(0.3)

        async def wait_for_a_slow_answer() -> None:
            answer = await chat(waiting, "s1", "slow", timeout=10)
            assert answer["content"] == "ok: slow"

        silent_closed = asyncio.create_task(close_code(silent, timeout=10))
        await asyncio.gather(keep_pinging(), wait_for_a_slow_answer())
        assert await asyncio.wait_for(silent_closed, 10) == 1000
        assert not chatty.closed and not waiting.closed

        assert await close_code(waiting, timeout=10) == 1000  # idle once answered
        await ping(chatty, "last")


# -- slow consumers -----------------------------------------------------------------------


async def test_a_client_that_stops_reading_is_closed_with_1008_and_others_carry_on(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(
        tmp_path,
        limits={"send_queue_bytes": 65536},
        agent={"timeout_s": 5},
        shutdown={"drain_timeout_s": 0},
        security={"rate_limiting": GENEROUS},
    )
    async with run_gateway(settings, Firehose()) as gw:
        good, _ = await connect(http, gw, "good")
        slow, _ = await connect(http, gw, "slow")
        await slow.send_json({"type": "chat_message", "id": "f1", "content": "flood"})

        answers = 0

        async def overflowed() -> bool:
            nonlocal answers
            await ping(good, f"p{answers}")
            assert (await chat(good, f"c{answers}", "hi"))["content"] == "ok: hi"
            answers += 1
            return await metric(http, gw, "qa_ws_slow_consumer_closes_total") == 1

        await eventually(overflowed, timeout=30, what="the slow consumer was closed")
        await eventually(lambda: len(gw.gateway.connections) == 1, what="its handler ended")
        assert await metric(http, gw, 'qa_ws_closes_total{code="1008"}') == 1
        for n in range(3):
            assert (await chat(good, f"after{n}", "hi"))["content"] == "ok: hi"
        assert answers >= 1

        # reading at last, the slow client finds the deltas it was sent, then the 1008 close
        assert (await next_event(slow))["type"] == "agent_delta"
        assert await close_code(slow, timeout=10) == 1008


async def test_a_slow_consumer_that_never_reads_again_loses_its_socket(
    tmp_path: Path, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its close frame cannot be delivered; after the grace period the socket is aborted."""
    monkeypatch.setattr(connections, "CLOSE_GRACE_S", 0.3)
    settings = make_settings(
        tmp_path,
        limits={"send_queue_bytes": 65536},
        agent={"timeout_s": 5},
        shutdown={"drain_timeout_s": 0},
        security={"rate_limiting": GENEROUS},
    )
    async with run_gateway(settings, Firehose()) as gw:
        peer = await RawPeer.open(gw, gw.token("slow"), rcvbuf=4096)
        try:
            peer.send_text(json.dumps({"type": "chat_message", "id": "f1", "content": "flood"}))
            await eventually(lambda: len(gw.gateway.connections) == 1)
            await eventually(lambda: len(gw.gateway.connections) == 0, timeout=30)
            await asyncio.sleep(1.0)  # past the grace period
            frames = await peer.frames_until_eof(timeout=20)
        finally:
            peer.close()
        assert frames and frames[0].opcode == WS_TEXT
        assert WS_CLOSE not in [f.opcode for f in frames]  # dropped, not flushed
        assert await metric(http, gw, "qa_ws_slow_consumer_closes_total") == 1
