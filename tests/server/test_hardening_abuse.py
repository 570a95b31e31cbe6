"""After the upgrade (issue 11, points 3, 6, 7, 8), against a real server process: a frame
budget over every frame type, resends counted like chats, an abuse close that reaches the
flooding client, an abuse count that follows the user, and cleanup whatever fails."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from pathlib import Path

import aiohttp

from qa_ws_cli.agents.builtin import EchoAgent
from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.server.store import MemoryStore
from tests.conftest import ServerProcess, make_settings, run_gateway
from tests.server.hostile import log_lines, start_server
from tests.server.wire import WS_CLOSE, WS_PING, WS_PONG, WS_TEXT, RawPeer, eventually, metric

STRICT = {
    "WEBSOCKET_SECURITY__RATE_LIMITING__MAX_REQUESTS_PER_MINUTE": "10",
    "WEBSOCKET_SECURITY__RATE_LIMITING__BURST": "10",
    "WEBSOCKET_LIMITS__MAX_FRAMES_PER_SECOND": "50",
}


def base(server: ServerProcess) -> str:
    return server.url.replace("ws://", "http://").removesuffix("/ws")


def token(tmp_path: Path, sub: str = "mallory") -> str:
    return issue_token(make_settings(tmp_path), sub)[0]


async def flood_until_closed(peer: RawPeer, frame: bytes) -> tuple[list[dict[str, object]], int]:
    """Keep writing ``frame`` while reading; answer the server's close like a library would.
    Returns the events read and the close code received (or -1 for a reset / EOF without one)."""
    events: list[dict[str, object]] = []
    stop = asyncio.Event()

    async def flood() -> None:
        for _ in range(200):  # bounded: at most 200 bursts of 100 frames
            if stop.is_set():
                return
            peer.writer.write(frame * 100)
            await asyncio.sleep(0.01)

    flooding = asyncio.create_task(flood())
    try:
        async with asyncio.timeout(20):
            while (got := await peer.read_frame()) is not None:
                if got.opcode == WS_CLOSE:
                    stop.set()
                    await flooding
                    peer.send_frame(WS_CLOSE, struct.pack("!H", 1000))
                    return events, got.close_code or -1
                if got.opcode == WS_TEXT:
                    events.append(json.loads(got.payload))
        return events, -1
    finally:
        stop.set()
        flooding.cancel()


async def test_a_ping_flood_is_rate_limited_then_closed_with_1008_that_arrives(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path, "--agent", "echo", env=STRICT)
    peer = await RawPeer.at(base(server), token(tmp_path))
    try:
        await peer.read_frame()  # connected
        ping = RawPeer.encode_frame(WS_TEXT, b'{"type":"ping","id":"p"}')
        events, code = await flood_until_closed(peer, ping)
    finally:
        peer.close()
    assert code == 1008  # the close frame reached the client: no reset before it
    limited = [e for e in events if e.get("code") == "rate_limited"]
    pongs = [e for e in events if e.get("type") == "pong"]
    assert limited and len(pongs) < 200  # not every ping of the thousands sent was answered
    assert len(log_lines(server, "abuse")) == 1  # once per connection, not per frame
    assert "Traceback" not in server.output()


async def test_websocket_pings_count_in_the_frame_budget(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--agent", "echo", env=STRICT)
    peer = await RawPeer.at(base(server), token(tmp_path))
    pongs = 0
    try:
        await peer.read_frame()  # connected
        peer.writer.write(RawPeer.encode_frame(WS_PING, b"p") * 500)  # one burst: 1 or 2 seconds
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.5):
                while (got := await peer.read_frame()) is not None:
                    pongs += got.opcode == WS_PONG
    finally:
        peer.close()
    assert 0 < pongs <= 2 * 50  # the budget (50 a second) answered; the rest got no pong
    assert "Traceback" not in server.output()


async def test_resending_an_answered_id_counts_against_the_rate_limit(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--agent", "echo", env=STRICT)
    auth = {"Authorization": f"Bearer {token(tmp_path, 'rita')}"}
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url, headers=auth) as ws:
        await ws.receive_json(timeout=10)
        codes = []
        for _ in range(14):
            await ws.send_json({"type": "chat_message", "id": "same", "content": "again"})
            event = await ws.receive_json(timeout=10)
            codes.append(event.get("code") or event["type"])
    assert codes[:10] == ["agent_response"] * 10  # the first answer, then the stored one
    assert set(codes[10:]) == {"rate_limited"}


async def test_the_abuse_count_follows_the_user_to_a_new_connection(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--agent", "echo", env=STRICT)
    tok = token(tmp_path, "sam")
    peer = await RawPeer.at(base(server), tok)
    try:
        await peer.read_frame()
        chat = RawPeer.encode_frame(WS_TEXT, b'{"type":"chat_message","id":"c","content":"x"}')
        _, code = await flood_until_closed(peer, chat)
        assert code == 1008
    finally:
        peer.close()
    auth = {"Authorization": f"Bearer {tok}"}
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url, headers=auth) as ws:
        await ws.receive_json(timeout=10)
        await ws.send_json({"type": "chat_message", "id": "n1", "content": "hello"})
        assert (await ws.receive_json(timeout=10))["code"] == "rate_limited"
        closing = await ws.receive(timeout=10)  # at once: the count did not start afresh
        assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 1008


class FailingStore(MemoryStore):
    """A store whose session creation fails: the shape of any error after the upgrade."""

    async def create(self, session_id: str, user: str) -> None:
        raise RuntimeError("the store broke")


async def test_a_failure_after_the_upgrade_still_cleans_up(tmp_path: Path) -> None:
    """Whatever raises after prepare() (it was a token expiry no timer could hold), the client
    gets 1011 and no ghost is left: not in the registry, not in /readyz, not in the metrics."""
    async with (
        run_gateway(make_settings(tmp_path), EchoAgent(), FailingStore()) as gw,
        aiohttp.ClientSession() as http,
    ):
        auth = {"Authorization": f"Bearer {gw.token('tom')}"}
        async with http.ws_connect(gw.url, headers=auth) as ws:
            closing = await ws.receive(timeout=10)
            assert closing.type is aiohttp.WSMsgType.CLOSE and closing.data == 1011
        await eventually(lambda: len(gw.gateway.connections) == 0, what="no ghost connection")
        async with http.get(gw.http + "/readyz") as ready:
            assert (await ready.json())["connections"] == 0
        assert await metric(http, gw, "qa_ws_connections") == 0
        assert gw.gateway.driver.local == {}
