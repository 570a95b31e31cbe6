"""Live connections: bounded outgoing queues and this instance's registry of them.

Every frame to a client goes through ``Connection.send``: it never blocks the caller. Frames
queue (bounded in bytes) and one short-lived writer task drains them; a client that does not
read fills its queue and is closed with 1008, without stalling anything else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from aiohttp import web

from qa_ws_cli.auth.tokens import Claims
from qa_ws_cli.protocol.codes import CloseCode

log = logging.getLogger("qa_ws.server")
_NO_FRAMES: deque[str] = deque(maxlen=0)  # shared and always empty: idle connections own none
CLOSE_GRACE_S = 5.0  # after a close, time for a slow reader to get its close frame


def _wire_size(frame: str) -> int:
    """Bytes on the wire: the queue's budget is in bytes, and answers are often not ASCII."""
    return len(frame) if frame.isascii() else len(frame.encode())


class Connection:
    __slots__ = (
        "_on_overflow",
        "claims",
        "closed_with",
        "closer",
        "closing",
        "connected_at",
        "frame_window",
        "frames_in",
        "frames_in_window",
        "frames_out",
        "heard_at",
        "id",
        "last_seen",
        "last_seq",
        "pinged_at",
        "queue",
        "queue_limit",
        "queued_bytes",
        "remote",
        "request_id",
        "session_id",
        "transport",
        "user",
        "writer",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        conn_id: str,
        claims: Claims,
        queue_limit: int,
        on_overflow: Callable[[Connection], None],
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.closed_with: int | None = None  # the code, when the server closed it
        self.closer: asyncio.Task[None] | None = None  # the server's close, once started
        self.id = conn_id
        self.claims = claims
        self.user = claims.sub
        self.session_id = ""
        self.last_seq = 0  # the highest seq sent: a frame offered twice is sent once
        self.queue: deque[str] = _NO_FRAMES  # replaced by a deque of its own on first use
        self.queued_bytes = 0
        self.queue_limit = queue_limit
        self.writer: asyncio.Task[None] | None = None
        self.closing = False
        self.last_seen = 0.0  # monotonic: the last protocol frame (the idle timeout's)
        self.heard_at = time.monotonic()  # the last frame of any kind, pongs included
        self.pinged_at = 0.0  # the heartbeat's last ping
        self.frame_window = 0  # the second the frame budget counts in, and its count
        self.frames_in_window = 0
        self._on_overflow = on_overflow
        self.remote = ""  # the client's address, as the request saw it
        self.request_id = ""  # its handshake's, in its log lines
        self.connected_at = time.time()
        self.frames_in = 0  # counted by the handler's read loop
        self.frames_out = 0

    def send(self, frame: str) -> None:
        """Queue one text frame; overflowing the byte budget closes the connection (1008)."""
        if self.closing:
            return
        self.frames_out += 1
        transport = self.transport
        if self.writer is None and transport is not None and not transport.get_write_buffer_size():
            self._write_now(frame)
            return
        size = _wire_size(frame)
        if self.queued_bytes + size > self.queue_limit:
            self._on_overflow(self)
            self.start_close(CloseCode.POLICY_VIOLATION, "slow consumer: outgoing queue overflowed")
            return
        if self.queue is _NO_FRAMES:
            self.queue = deque()
        self.queue.append(frame)
        self.queued_bytes += size
        if self.writer is None:
            self.writer = asyncio.get_running_loop().create_task(self._drain())

    def send_seq(self, seq: int, frame: str) -> None:
        """Send a replayable frame unless this connection already got it (replay and live
        delivery may both offer one frame around a resume)."""
        if seq > self.last_seq:
            self.last_seq = seq
            self.send(frame)

    def ping(self) -> None:
        """A PING frame (the heartbeat's), written at once as ``_write_now`` writes a frame."""
        self._step(self.ws.ping())

    def drop(self, code: int) -> None:
        """Close the socket without a close frame (a peer that stopped answering would not
        read one); ``code`` is what the connection's close is counted and logged as."""
        if self.closing:
            return
        self.closing = True
        self.closed_with = code
        if self.transport is not None:
            self.transport.close()  # at once unless bytes wait in it: then after the grace
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, _abort_if_stuck, self.transport)

    def _write_now(self, frame: str) -> None:
        """Write at once while the socket keeps up (the common case), with no task per frame.

        Uncompressed, ``send_str`` writes the frame synchronously and suspends only to wait for
        a paused transport to drain, so one step of the coroutine is the whole send. If it does
        suspend, the frame is already in the transport's buffer: the next frames see that buffer
        and take the queue, whose writer awaits the drain (and whose bound counts it).
        """
        self._step(self.ws.send_str(frame))

    def _step(self, send: Coroutine[Any, Any, None]) -> None:
        try:
            send.send(None)
        except StopIteration:
            return
        except (ConnectionError, RuntimeError):  # the peer is gone; the reader will see it
            self.closing = True
            return
        send.close()

    async def _drain(self) -> None:
        ws, queue = self.ws, self.queue
        try:
            while queue:
                frame = queue[0]
                await ws.send_str(frame)
                queue.popleft()
                self.queued_bytes -= _wire_size(frame)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            queue.clear()
            self.queued_bytes = 0
        finally:
            self.writer = None

    async def flush(self, timeout: float) -> None:
        """Wait (bounded) until the queued frames are written, e.g. before a close."""
        writer = self.writer
        if writer is not None:
            await asyncio.wait({writer}, timeout=timeout)

    def start_close(self, code: int, reason: str) -> None:
        """Close from sync code: queued frames are dropped for 1008, flushed otherwise."""
        if self.closing:
            return
        self.closing = True
        if code == CloseCode.POLICY_VIOLATION and self.writer is not None:
            self.writer.cancel()
        self.closer = asyncio.get_running_loop().create_task(self.close(code, reason))

    async def close(self, code: int, reason: str) -> None:
        """Send the close frame without waiting on a peer that does not read (``drain=False``:
        aiohttp would wait for it forever), and abort the socket if it is not gone after a grace
        period, so a client that stopped reading cannot hold a socket and its buffers."""
        self.closing = True
        if self.closed_with is None:
            self.closed_with = code
        await self.flush(timeout=2.0)
        with contextlib.suppress(ConnectionError, RuntimeError):  # already gone
            await self.ws.close(code=code, message=reason.encode()[:120], drain=False)
        if self.transport is not None:
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, _abort_if_stuck, self.transport)


def _abort_if_stuck(transport: asyncio.Transport) -> None:
    """Still holding unsent bytes after the grace period: the peer does not read; drop it."""
    if transport.get_write_buffer_size():
        transport.abort()


class ConnectionManager:
    """The registry of this instance's connections, and the server-wide slots its cap counts.

    A slot is reserved before the upgrade (so the cap holds under a stampede) and released
    when the handler returns; the registry holds the connections that are open. The per-user
    cap counts across instances, in the store.
    """

    def __init__(self, max_total: int) -> None:
        self.max_total = max_total
        self._by_id: dict[str, Connection] = {}
        self._slots = 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._by_id.values()))

    def reserve(self) -> bool:
        """Take a server-wide slot; False when the server is full."""
        if self._slots >= self.max_total:
            return False
        self._slots += 1
        return True

    def release(self) -> None:
        self._slots -= 1

    def get(self, conn_id: str) -> Connection | None:
        return self._by_id.get(conn_id)

    def add(self, conn: Connection) -> None:
        self._by_id[conn.id] = conn

    def remove(self, conn: Connection) -> None:
        self._by_id.pop(conn.id, None)

    async def close_all(self, code: int, reason: str) -> None:
        conns = list(self._by_id.values())
        if conns:
            await asyncio.gather(*(c.close(code, reason) for c in conns), return_exceptions=True)
