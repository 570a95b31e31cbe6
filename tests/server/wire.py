"""Clients for the limit and hostile-input tests, all over real loopback sockets.

``connect`` opens an aiohttp WebSocket with a token and reads the ``connected`` event;
``RawPeer`` speaks WebSocket by hand on a bare TCP socket, for peers no library would
imitate: one that never answers pings, never reads, or sends bytes no client would send.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.conftest import Running

WS_TEXT, WS_BINARY, WS_CLOSE, WS_PING, WS_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
ERROR_CODES = frozenset(
    {
        "invalid_json",
        "invalid_message",
        "unsupported_frame",
        "message_too_large",
        "rate_limited",
        "agent_busy",
        "agent_timeout",
        "agent_error",
        "cancelled",
        "not_in_flight",
        "agent_interrupted",
        "internal_error",
    }
)


def bearer(running: Running, sub: str = "alice", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {running.token(sub, **claims)}"}


def cut(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Lose the connection the way a network does: no close frame."""
    ws._response.connection.transport.abort()  # type: ignore[union-attr]


async def connect(
    http: aiohttp.ClientSession,
    running: Running,
    sub: str = "alice",
    *,
    token: str | None = None,
    **options: Any,
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    """Open /ws as ``sub`` and read the ``connected`` event the protocol puts first."""
    headers = {"Authorization": f"Bearer {token or running.token(sub)}"}
    ws = await http.ws_connect(running.url, headers=headers, **options)
    first = await next_event(ws)
    assert first["type"] == "system_event" and first["event"] == "connected", first
    return ws, first


class Closed(AssertionError):
    def __init__(self, code: int | None) -> None:
        super().__init__(f"the connection closed with {code}")
        self.code = code


async def next_event(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    if msg.type is not aiohttp.WSMsgType.TEXT:
        raise Closed(msg.data if msg.type is aiohttp.WSMsgType.CLOSE else ws.close_code)
    event: dict[str, Any] = json.loads(msg.data)
    return event


async def until(
    ws: aiohttp.ClientWebSocketResponse,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 10.0,
) -> list[dict[str, Any]]:
    """Every event up to and including the first one ``done`` accepts."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            seen.append(await next_event(ws))
            if done(seen[-1]):
                return seen


def answer_to(msg_id: str) -> Callable[[dict[str, Any]], bool]:
    """The end of a chat's answer: its ``agent_response`` or ``error``."""
    return lambda e: e.get("reply_to") == msg_id and e["type"] in ("agent_response", "error")


async def chat(
    ws: aiohttp.ClientWebSocketResponse, msg_id: str, content: str = "hello", timeout: float = 10.0
) -> dict[str, Any]:
    await ws.send_json({"type": "chat_message", "id": msg_id, "content": content})
    return (await until(ws, answer_to(msg_id), timeout))[-1]


async def ping(ws: aiohttp.ClientWebSocketResponse, msg_id: str, timeout: float = 10.0) -> None:
    await ws.send_json({"type": "ping", "id": msg_id})
    await until(ws, lambda e: e["type"] == "pong" and e["reply_to"] == msg_id, timeout)


async def close_code(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> int | None:
    """Read (and drop) frames until the server closes; the code in its close frame.

    Not ``ws.close_code``: when the server's FIN comes in before aiohttp could answer the close
    frame, aiohttp reports 1006 there although the frame said otherwise.
    """
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type is aiohttp.WSMsgType.CLOSE:
                code: int = msg.data
                return code
            if msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return ws.close_code


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if not isinstance(outcome, bool):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or check}")
        await asyncio.sleep(0.05)


async def metric(http: aiohttp.ClientSession, running: Running, sample: str) -> float:
    """One sample of /metrics, e.g. ``qa_ws_closes_total{code="1008"}``; 0 when absent."""
    async with http.get(running.http + "/metrics") as response:
        text = await response.text()
    pattern = re.compile(rf"^{re.escape(sample)} (\S+)$", re.MULTILINE)
    found = pattern.search(text)
    return float(found.group(1)) if found else 0.0


# -- a WebSocket peer by hand ------------------------------------------------------------


@dataclass
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != WS_CLOSE or len(self.payload) < 2:
            return None
        code: int = struct.unpack("!H", self.payload[:2])[0]
        return code


class RawPeer:
    """A WebSocket client on a bare TCP socket: it does only what the test tells it to."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes = b""
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.head = head  # the server's 101 response, status line and headers

    @classmethod
    async def open(cls, running: Running, token: str, *, rcvbuf: int | None = None) -> RawPeer:
        return await cls.at(running.http, token, rcvbuf=rcvbuf)

    @classmethod
    async def at(cls, base: str, token: str, *, rcvbuf: int | None = None) -> RawPeer:
        """Upgrade at ``base`` (``http://HOST:PORT``) with ``token``."""
        host, port = base.removeprefix("http://").split(":")
        if rcvbuf is None:
            reader, writer = await asyncio.open_connection(host, int(port))
        else:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
            reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: qa-ws.v1\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer, head)

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        self.writer.write(self.encode_frame(opcode, payload, fin=fin))

    @staticmethod
    def encode_frame(
        opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True
    ) -> bytes:
        """A client frame, with any opcode and any payload (valid or not); ``masked=False``
        leaves the MASK bit clear and sends the payload as is, as no client may."""
        length = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        bit = 0x80 if masked else 0
        if length < 126:
            head += bytes([bit | length])
        elif length < 1 << 16:
            head += bytes([bit | 126]) + struct.pack("!H", length)
        else:
            head += bytes([bit | 127]) + struct.pack("!Q", length)
        if not masked:
            return head + payload
        mask = os.urandom(4)
        masked_payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return head + mask + masked_payload

    def send_text(self, text: str | bytes) -> None:
        self.send_frame(WS_TEXT, text.encode() if isinstance(text, str) else text)

    async def read_frame(self) -> Frame | None:
        """The next server frame, or None at EOF."""
        try:
            first, second = await self.reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return Frame(first & 0x0F, await self.reader.readexactly(length))
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def frames_until_eof(self, timeout: float = 10.0) -> list[Frame]:
        frames: list[Frame] = []
        async with asyncio.timeout(timeout):
            while (frame := await self.read_frame()) is not None:
                frames.append(frame)
        return frames

    def close(self) -> None:
        self.writer.transport.abort()
