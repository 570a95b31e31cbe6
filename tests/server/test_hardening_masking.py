"""Issue 11, point 9: an unmasked client frame is closed with 1002 (RFC 6455 5.1), over a real
socket to a real ``qa-ws serve`` process; masked frames, however split, are untouched."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from pathlib import Path

import aiohttp
import pytest

from qa_ws_cli.auth.tokens import issue_token
from tests.conftest import ServerProcess, make_settings
from tests.server.hostile import port_of, start_server
from tests.server.wire import WS_CLOSE, WS_TEXT, Frame, RawPeer

REASON = b"protocol error: unmasked frame"


@pytest.fixture
def server(tmp_path: Path) -> ServerProcess:
    return start_server(
        tmp_path,
        env={
            "WEBSOCKET_LIMITS__MAX_MESSAGE_BYTES": "200000",
            "WEBSOCKET_LIMITS__MAX_CONTENT_CHARS": "100000",
        },
    )


def token(tmp_path: Path, sub: str = "alice") -> str:
    return issue_token(make_settings(tmp_path), sub)[0]


async def peer(server: ServerProcess, tmp_path: Path, sub: str = "alice") -> RawPeer:
    raw = await RawPeer.at(f"http://127.0.0.1:{port_of(server)}", token(tmp_path, sub))
    connected = await text_event(raw)
    assert connected["event"] == "connected", connected
    return raw


async def text_event(raw: RawPeer) -> dict[str, object]:
    frame = await asyncio.wait_for(raw.read_frame(), 10)
    assert frame is not None and frame.opcode == WS_TEXT, frame
    event: dict[str, object] = json.loads(frame.payload)
    return event


async def answer(raw: RawPeer, msg_id: str) -> dict[str, object]:
    while True:
        event = await text_event(raw)
        if event.get("reply_to") == msg_id and event["type"] in ("agent_response", "error"):
            return event


def chat_frame(msg_id: str, content: str = "hello") -> bytes:
    body = json.dumps({"type": "chat_message", "id": msg_id, "content": content}).encode()
    return RawPeer.encode_frame(WS_TEXT, body)


def assert_refused(frames: list[Frame]) -> None:
    """The last frame before EOF is the server's close: 1002 with its reason."""
    assert frames, "no close frame before EOF"
    assert frames[-1].opcode == WS_CLOSE and frames[-1].close_code == 1002, frames[-1]
    assert frames[-1].payload[2:] == REASON


async def test_an_unmasked_text_frame_is_closed_with_1002(
    server: ServerProcess, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token(tmp_path, 'bob')}"}
        async with http.ws_connect(server.url, headers=headers) as other:  # unaffected
            await other.receive_json(timeout=10)
            raw = await peer(server, tmp_path)
            raw.writer.write(
                RawPeer.encode_frame(WS_TEXT, b'{"type":"ping","id":"p"}', masked=False)
            )
            frames = await raw.frames_until_eof()
            assert_refused(frames)
            assert all(f.opcode != WS_TEXT for f in frames)  # the ping was never answered
            await other.send_json({"type": "ping", "id": "still"})
            assert (await other.receive_json(timeout=10))["type"] == "pong"
    log = server.output()
    assert log.count("unmasked_frame") == 1 and "Traceback" not in log, log
    disconnects = [line for line in log.splitlines() if "disconnect" in line and "alice" in line]
    assert disconnects and "1002" in disconnects[-1], disconnects


async def test_an_unmasked_frame_after_masked_ones_in_the_same_write(
    server: ServerProcess, tmp_path: Path
) -> None:
    raw = await peer(server, tmp_path)
    raw.writer.write(
        RawPeer.encode_frame(WS_TEXT, b"x" * 300)  # a masked 126-form frame first
        + RawPeer.encode_frame(WS_TEXT, b'{"type":"ping","id":"p"}', masked=False)
    )
    assert_refused(await raw.frames_until_eof())


async def test_an_unmasked_frame_in_the_same_write_as_the_upgrade_request(
    server: ServerProcess, tmp_path: Path
) -> None:
    """The bytes that come with the request reach aiohttp's reader inside ``set_parser``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: qa-ws.v1\r\nAuthorization: Bearer {token(tmp_path)}\r\n\r\n"
        ).encode()
        + RawPeer.encode_frame(WS_TEXT, b'{"type":"ping","id":"p"}', masked=False)
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    frames = await RawPeer(reader, writer).frames_until_eof()
    assert_refused(frames)
    assert all(f.opcode != WS_TEXT or b'"pong"' not in f.payload for f in frames)
    assert "Traceback" not in server.output(), server.output()


async def test_a_masked_frame_split_at_every_byte_still_works(
    server: ServerProcess, tmp_path: Path
) -> None:
    raw = await peer(server, tmp_path)
    for size in (10, 300, 70_000):  # the 7-bit, 16-bit and 64-bit length forms
        frame = chat_frame(f"split-{size}", "y" * size)
        cuts = [*range(1, 16), len(frame) // 2, len(frame) - 1]  # every header byte
        start = 0
        for cut in cuts:
            raw.writer.write(frame[start:cut])
            await raw.writer.drain()
            await asyncio.sleep(0.002)  # separate reads on the server, as far as it goes
            start = cut
        raw.writer.write(frame[start:])
        assert (await answer(raw, f"split-{size}"))["type"] == "agent_response"
    # and one byte per write for a whole small frame
    frame = chat_frame("bytewise")
    for i in range(len(frame)):
        raw.writer.write(frame[i : i + 1])
        await raw.writer.drain()
    assert (await answer(raw, "bytewise"))["type"] == "agent_response"
    raw.close()


async def test_large_masked_frames_and_many_in_one_write_still_work(
    server: ServerProcess, tmp_path: Path
) -> None:
    raw = await peer(server, tmp_path)
    raw.writer.write(chat_frame("big16", "z" * 40_000) + chat_frame("big64", "w" * 90_000))
    assert (await answer(raw, "big16"))["type"] == "agent_response"
    assert (await answer(raw, "big64"))["type"] == "agent_response"
    pings = b"".join(
        RawPeer.encode_frame(WS_TEXT, json.dumps({"type": "ping", "id": f"p{i}"}).encode())
        for i in range(20)
    )
    raw.writer.write(pings)
    seen = 0
    while seen < 20:
        if (await text_event(raw))["type"] == "pong":
            seen += 1
    raw.close()
