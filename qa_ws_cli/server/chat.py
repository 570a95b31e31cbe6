"""Frame handling: decode -> typed event -> a handler per type (strategy) -> the session core.

The reader loop calls ``on_text`` for every text frame; it never waits for the agent. What a
frame means for the session is decided by ``SessionCore``; this module adds what is not a
session's rule: decoding, metrics, and the per-user rate limit (counted before any answer,
stored or not, is sent).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from qa_ws_cli.errors import ProtocolError
from qa_ws_cli.protocol.codec import decode_client, encode_fields
from qa_ws_cli.protocol.codes import CloseCode, ErrorCode
from qa_ws_cli.protocol.events import Cancel, ChatMessage, Ping, Pong
from qa_ws_cli.server.connections import Connection
from qa_ws_cli.server.driver import SessionDriver
from qa_ws_cli.server.limits import Limiter
from qa_ws_cli.server.logs import log_event
from qa_ws_cli.server.metrics import Metrics
from qa_ws_cli.server.session_core import RATE_LIMITED_MESSAGE, error_body
from qa_ws_cli.server.session_outputs import Claim, RateLimited

log = logging.getLogger("qa_ws.server")


class FrameHandler:
    def __init__(
        self,
        driver: SessionDriver,
        limiter: Limiter | None,
        metrics: Metrics,
        max_frames_per_second: int,
    ) -> None:
        self.driver = driver
        self.max_frames_per_second = max_frames_per_second
        self.limiter = limiter
        self.metrics = metrics
        self._dispatch: dict[type[Any], Callable[[Connection, Any], Awaitable[None]]] = {
            ChatMessage: self.on_chat,
            Ping: self.on_ping,
            Cancel: self.on_cancel,
        }

    async def on_text(self, conn: Connection, text: str) -> None:
        if self.over_budget(conn):
            await self._refuse_frame(conn)
            return
        try:
            event = decode_client(text)
        except ProtocolError as exc:
            self.metrics.frames_bad.inc()
            await self._error(conn, exc.code, exc.message, exc.reply_to)
            return
        await self._dispatch[type(event)](conn, event)

    async def on_binary(self, conn: Connection) -> None:
        if self.over_budget(conn):
            await self._refuse_frame(conn)
            return
        self.metrics.frames_bad.inc()
        await self._error(
            conn, ErrorCode.UNSUPPORTED_FRAME, "binary frames are not supported; send JSON text"
        )

    async def on_ping(self, conn: Connection, event: Ping) -> None:
        self.metrics.frames_ping.inc()
        conn.send(encode_fields(Pong, reply_to=event.id))

    async def on_cancel(self, conn: Connection, event: Cancel) -> None:
        self.metrics.frames_cancel.inc()
        local = self.driver.session(conn.session_id, conn.user)
        await self.driver.apply(local, local.core.cancel(conn.id, event.id, event.target))

    async def on_chat(self, conn: Connection, msg: ChatMessage) -> None:
        """Every chat counts against its user's rate limit before any answer: in the store's
        claim when the core claims it (one store call, not two), else here first."""
        self.metrics.frames_chat.inc()
        driver = self.driver
        local = driver.session(conn.session_id, conn.user)
        outputs = local.core.chat(
            conn.id,
            msg.id,
            msg.content,
            draining=driver.draining,
            attachments=tuple(msg.attachments or ()),
        )
        if self.limiter is None:
            await driver.apply(local, outputs)
        elif len(outputs) == 1 and isinstance(outputs[0], Claim):
            result = await driver.claim(local, outputs[0].chat_id, rate_user=conn.user)
            if isinstance(result, RateLimited):
                await self._rejected(conn)
        elif await self._allowed(conn, msg.id):  # outputs that are not a claim change nothing
            await driver.apply(local, outputs)

    async def _allowed(self, conn: Connection, chat_id: str) -> bool:
        limiter = self.limiter
        assert limiter is not None
        retry_after = await limiter.hit(conn.user)
        if retry_after is None:
            return True
        await self._error(conn, ErrorCode.RATE_LIMITED, RATE_LIMITED_MESSAGE, chat_id, retry_after)
        await self._rejected(conn)
        return False

    async def _rejected(self, conn: Connection) -> None:
        """Count a rejection against the user; past the abuse threshold, close with 1008
        (logged once per connection)."""
        limiter = self.limiter
        if limiter is not None and await limiter.abusive(conn.user) and not conn.closing:
            log_event(log, "abuse", logging.WARNING, user=conn.user, connection=conn.id)
            conn.start_close(CloseCode.POLICY_VIOLATION, "too many rate-limited messages")

    def over_budget(self, conn: Connection) -> bool:
        """The per-connection frame budget, over every frame type: past
        ``limits.max_frames_per_second`` a frame is answered ``rate_limited`` and not read.
        A plain call (the check of every frame); only a refusal awaits. It counts in the
        second the reader heard the frame (``heard_at``, just set)."""
        now = int(conn.heard_at)
        if now != conn.frame_window:
            conn.frame_window, conn.frames_in_window = now, 0
        conn.frames_in_window += 1
        return conn.frames_in_window > self.max_frames_per_second

    async def _refuse_frame(self, conn: Connection) -> None:
        self.metrics.frames_over_budget.inc()
        await self._error(conn, ErrorCode.RATE_LIMITED, "too many frames; slow down", None, 1.0)
        await self._rejected(conn)

    async def _error(
        self,
        conn: Connection,
        code: str,
        message: str,
        reply_to: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """An error for ``conn``: replayable when it answers a chat of the session's
        connection (the core decides), else a live frame."""
        local = self.driver.local.get(conn.session_id)
        if local is None or reply_to is None:
            self.metrics.errors[code].inc()
            conn.send(error_body(code, message, None, retry_after))
            return
        await self.driver.apply(
            local, local.core.error(conn.id, code, message, reply_to, retry_after)
        )
