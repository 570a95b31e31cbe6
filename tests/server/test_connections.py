"""``Connection.send`` against aiohttp's real writer: frames written at once while the socket
keeps up, queued (in order, bounded) once its buffer fills, and never lost or reordered.

``Connection._write_now`` takes one step of ``WebSocketResponse.send_str``: uncompressed, that
step is the whole write; the step only suspends to wait for a paused transport, and then the
next frames take the queue. This test is what keeps that assumption honest on each aiohttp
release: a reader that stops reading makes the transport pause mid-answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

from qa_ws_cli.agents.base import Agent, ChatContext
from tests.conftest import make_settings, run_gateway
from tests.server.wire import WS_TEXT, RawPeer

PIECES = 400
PIECE = "0123456789abcdef" * 1024  # 16 KiB: 6.4 MiB in all, past every socket buffer


class Flood(Agent):
    """Streams ``PIECES`` numbered pieces as fast as it can."""

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        for n in range(PIECES):
            yield f"{n:04d}{PIECE}"


async def test_a_reader_that_stalls_gets_every_frame_in_order(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, limits={"send_queue_bytes": 16 * 1024 * 1024})
    async with run_gateway(settings, Flood()) as gw:
        peer = await RawPeer.open(gw, gw.token(), rcvbuf=4096)
        try:
            await peer.read_frame()  # connected
            peer.send_text(b'{"type":"chat_message","id":"m1","content":"go"}')
            await asyncio.sleep(0.5)  # read nothing: the kernel buffers fill, aiohttp pauses
            conn = next(iter(gw.gateway.connections))
            assert conn.queued_bytes > 0  # the queue took over from the direct writes
            deltas: list[str] = []
            while True:
                frame = await asyncio.wait_for(peer.read_frame(), 10)
                assert frame is not None and frame.opcode == WS_TEXT
                event = json.loads(frame.payload)
                if event["type"] != "agent_delta":
                    break
                deltas.append(event["delta"])
            assert event["type"] == "agent_response"
            assert [d[:4] for d in deltas] == [f"{n:04d}" for n in range(PIECES)]
            assert all(d[4:] == PIECE for d in deltas)
            assert event["content"] == "".join(deltas)
            assert conn.queued_bytes == 0 and conn.writer is None  # drained, writer gone
        finally:
            peer.close()
