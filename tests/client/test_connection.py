"""The client library against real servers on loopback sockets: what a caller of
``QaWsClient`` notices when a question is abandoned, a reconnect is refused, a server never
says `connected`, or nobody reads the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve

from qa_ws_cli.agents.builtin import DemoAgent
from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.client import ClientOptions, QaWsClient
from qa_ws_cli.config import Settings
from qa_ws_cli.errors import ClientTimeout, HandshakeRefused, ServerError
from qa_ws_cli.protocol.events import AgentResponse
from qa_ws_cli.server.app import create_app
from tests.conftest import Running, free_port, make_settings, run_gateway

pytestmark = pytest.mark.timeout(60)


async def frames_received(running: Running, kind: str) -> int:
    """The server's own count of client frames of one type, from /metrics."""
    async with aiohttp.ClientSession() as http, http.get(f"{running.http}/metrics") as answer:
        text = await answer.text()
    match = re.search(rf'qa_ws_frames_received_total{{type="{kind}"}} (\d+)', text)
    return int(float(match.group(1))) if match else 0


async def reconnected(client: QaWsClient, before: Any) -> None:
    while not (client.state == "connected" and client.connected is not before):
        await asyncio.sleep(0.02)


def reconnecting(running: Running, **options: Any) -> QaWsClient:
    return QaWsClient(
        ClientOptions(
            running.url, token=running.token(), reconnect=True, backoff_base=0.05, **options
        )
    )


async def test_a_timed_out_question_is_not_resent_after_a_reconnect(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, agent={"demo_latency_ms": 3000})
    async with run_gateway(settings) as running, reconnecting(running) as client:
        with pytest.raises(ClientTimeout, match=r"no answer within 0\.2 s"):
            await client.ask("how do I test a login form?", timeout=0.2)
        assert client.pending_ids() == []
        before = client.connected
        await client.drop()
        await asyncio.wait_for(reconnected(client, before), 20)
        await client.ping()  # every frame sent before it has reached the server
        assert await frames_received(running, "chat_message") == 1
        assert await frames_received(running, "cancel") == 1  # the server was told to stop


async def test_a_cancelled_future_is_forgotten(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, agent={"demo_latency_ms": 3000})
    async with run_gateway(settings) as running, reconnecting(running) as client:
        future = await client.send_chat("how do I test a login form?")
        future.cancel()  # what the repl does when a cancel is never confirmed
        await asyncio.sleep(0)
        assert client.pending_ids() == []
        before = client.connected
        await client.drop()
        await asyncio.wait_for(reconnected(client, before), 20)
        await client.ping()
        assert await frames_received(running, "chat_message") == 1


async def test_an_unconfirmed_cancel_is_resent_not_the_question(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, agent={"demo_latency_ms": 3000})
    async with run_gateway(settings) as running, reconnecting(running) as client:
        future = await client.send_chat("how do I test a login form?")
        await client.ping()  # the question is in flight on the server
        before = client.connected
        await client.drop()
        await client.cancel(future_id := client.pending_ids()[0])  # lost with the connection
        await asyncio.wait_for(reconnected(client, before), 20)
        with pytest.raises(ServerError) as ended:
            await asyncio.wait_for(future, 20)
        assert ended.value.code == "cancelled" and ended.value.reply_to == future_id
        assert await frames_received(running, "chat_message") == 1
        assert await frames_received(running, "cancel") == 1
        assert client.pending_ids() == []


@contextlib.asynccontextmanager
async def gateway_on(port: int, settings: Settings) -> AsyncIterator[str]:
    app = create_app(settings, DemoAgent(latency_ms=20))
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


async def test_a_refused_reconnect_says_so_not_connection_lost(tmp_path: Path) -> None:
    """A restart with another secret: the reason is the refused token, not the close 1001."""
    port = free_port()
    first = make_settings(tmp_path)
    other = make_settings(tmp_path, security={"secret_key": "another-secret-" + "y" * 40})
    token = issue_token(first, "alice")[0]
    options = ClientOptions(
        f"ws://127.0.0.1:{port}/ws", token=token, reconnect=True, backoff_base=0.2
    )
    client = QaWsClient(options)
    async with gateway_on(port, first):
        await client.connect()
    async with gateway_on(port, other):
        with pytest.raises(HandshakeRefused) as refused:
            async for _ in client.events():
                pass
    assert refused.value.status == 401 and refused.value.error == "invalid_token"
    assert refused.value.message.startswith("reconnecting was refused: HTTP 401 invalid_token")
    assert client.state == "disconnected"
    await client.close()


async def test_a_server_that_never_answers_the_upgrade_times_out_and_is_hung_up_on() -> None:
    hung_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the upgrade request, never answered
        if await reader.read() == b"":
            hung_up.set()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        client = QaWsClient(ClientOptions(f"ws://127.0.0.1:{port}/ws", connect_timeout=0.5))
        with pytest.raises(ClientTimeout, match=r"no WebSocket handshake from 127\.0\.0\.1"):
            await client.connect()
        await asyncio.wait_for(hung_up.wait(), 10)
        assert client.state == "disconnected"


async def test_a_server_that_never_says_connected_times_out_and_is_hung_up_on() -> None:
    closed = asyncio.Event()

    async def mute(ws: ServerConnection) -> None:
        await ws.wait_closed()  # upgrade accepted, no `connected` event ever
        closed.set()

    async with serve(mute, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = QaWsClient(ClientOptions(f"ws://127.0.0.1:{port}/ws", connect_timeout=0.5))
        with pytest.raises(ClientTimeout, match=r"sent no 'connected' event within 0\.5 s"):
            await client.connect()
        await asyncio.wait_for(closed.wait(), 10)
        assert client.state == "disconnected"


async def test_events_nobody_reads_are_bounded_and_the_newest_are_kept(
    gateway: Running,
) -> None:
    options = ClientOptions(gateway.url, token=gateway.token(), max_events=4)
    async with QaWsClient(options) as client:
        answers = [await client.ask(f"question {n}", timeout=20) for n in range(3)]
        assert client.events_dropped > 0
        kept = []
        async for event in client.events():
            kept.append(event)
            if len(kept) == 4:
                break
    assert kept[-1] == answers[-1] and isinstance(kept[-1], AgentResponse)
    assert [getattr(e, "reply_to", None) for e in kept[:-1]] == [answers[-1].reply_to] * 3
    async for _ in client.events():  # after close() the stream ends instead of waiting
        raise AssertionError("no event after close")


async def test_a_session_resumes_by_hand_from_its_id_and_last_seq(gateway: Running) -> None:
    async with QaWsClient(ClientOptions(gateway.url, token=gateway.token())) as first:
        await first.ask("how do I test a login form?", timeout=20)
        session_id, last_seq = first.session_id, first.last_seq
    later = QaWsClient(ClientOptions(gateway.url, token=gateway.token()))
    later.session_id, later.last_seq = session_id, last_seq
    async with later:
        assert later.connected is not None and later.connected.resumed
        assert later.session_id == session_id and later.last_seq == last_seq
