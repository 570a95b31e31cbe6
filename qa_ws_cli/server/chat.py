"""Frame handling: decode -> typed event -> a handler per type (strategy) -> agent runs.

The reader loop calls ``on_text`` for every text frame; it never waits for the agent. Each
chat runs as its own task bound to the *session*, so its answer reaches whichever connection
holds the session when it completes (or waits in the replay buffer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.errors import AgentError, ProtocolError
from qa_ws_cli.protocol.codec import decode_client, encode
from qa_ws_cli.protocol.codes import CloseCode, ErrorCode
from qa_ws_cli.protocol.events import (
    AgentDelta,
    AgentResponse,
    Cancel,
    ChatMessage,
    ErrorEvent,
    Ping,
    Pong,
)
from qa_ws_cli.server.connections import Connection
from qa_ws_cli.server.logs import log_event
from qa_ws_cli.server.sessions import ChatRun, Session

if TYPE_CHECKING:
    from qa_ws_cli.server.gateway import Gateway

_SAFE_MESSAGES = {
    ErrorCode.AGENT_TIMEOUT: "the agent did not answer in time",
    ErrorCode.AGENT_ERROR: "the agent failed to answer",
    ErrorCode.CANCELLED: "the answer was cancelled",
}


_ERROR_CODES = frozenset(ErrorCode)


def streams(agent: Agent) -> bool:
    """Whether the agent yields pieces itself (else only its whole answer is sent)."""
    return type(agent).stream is not Agent.stream


class FrameHandler:
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        settings = gateway.settings
        self.max_chars = settings.limits.max_content_chars
        self.max_inflight = settings.limits.max_inflight_per_connection
        self.timeout = settings.agent.timeout_s
        self.agent = gateway.agent
        self.streams = streams(gateway.agent)
        self.log = logging.getLogger("qa_ws.chat")
        self.running = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self._dispatch: dict[type[Any], Callable[[Connection, Any], Awaitable[None]]] = {
            ChatMessage: self.on_chat,
            Ping: self.on_ping,
            Cancel: self.on_cancel,
        }

    # -- frames ------------------------------------------------------------------------

    async def on_text(self, conn: Connection, text: str) -> None:
        try:
            event = decode_client(text)
        except ProtocolError as exc:
            self.gw.metrics.frames_bad.inc()
            self.error(conn, exc.code, exc.message, exc.reply_to)
            return
        await self._dispatch[type(event)](conn, event)

    def on_binary(self, conn: Connection) -> None:
        self.gw.metrics.frames_bad.inc()
        self.error(
            conn, ErrorCode.UNSUPPORTED_FRAME, "binary frames are not supported; send JSON text"
        )

    async def on_ping(self, conn: Connection, event: Ping) -> None:
        self.gw.metrics.frames_ping.inc()
        conn.send(encode(Pong(reply_to=event.id)))

    async def on_cancel(self, conn: Connection, event: Cancel) -> None:
        self.gw.metrics.frames_cancel.inc()
        session = conn.session
        run = session.inflight.get(event.target) if session else None
        if run is not None and run.cancelled_by is None:
            run.cancelled_by = event.id
            run.task.cancel()

    async def on_chat(self, conn: Connection, msg: ChatMessage) -> None:
        gw = self.gw
        gw.metrics.frames_chat.inc()
        session = conn.session
        assert session is not None
        if len(msg.content) > self.max_chars:
            self.error(
                conn,
                ErrorCode.MESSAGE_TOO_LARGE,
                f"content is longer than {self.max_chars} characters",
                msg.id,
            )
            return
        stored = session.answers.get(msg.id)
        if stored is not None:  # answered before: the same answer, no second agent call
            conn.send(stored)
            return
        if msg.id in session.inflight:  # in flight: its answer reaches this session anyway
            return
        if gw.draining:
            self.error(
                conn,
                ErrorCode.AGENT_BUSY,
                "the server is restarting; resend after reconnecting",
                msg.id,
                retry_after=gw.settings.shutdown.reconnect_after_ms / 1000,
            )
            return
        if gw.limiter is not None:
            retry_after = await gw.limiter.hit(conn.user)
            if retry_after is not None:
                self.error(
                    conn,
                    ErrorCode.RATE_LIMITED,
                    "too many messages; slow down",
                    msg.id,
                    retry_after=retry_after,
                )
                if conn.rejections is None:
                    conn.rejections = deque()
                if gw.limiter.abusive(conn.rejections, time.monotonic()):
                    log_event(gw.log, "abuse", logging.WARNING, user=conn.user, connection=conn.id)
                    conn.start_close(CloseCode.POLICY_VIOLATION, "too many rate-limited messages")
                return
            if msg.id in session.inflight or msg.id in session.answers:
                return
        if conn.inflight >= self.max_inflight:
            self.error(
                conn,
                ErrorCode.AGENT_BUSY,
                f"at most {self.max_inflight} answers in flight per connection",
                msg.id,
                retry_after=1.0,
            )
            return
        conn.inflight += 1
        self.running += 1
        self.idle.clear()
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(session, conn, msg, started))
        task.add_done_callback(lambda done: self._settle(session, conn, msg.id, done))
        run = ChatRun(task=task, started=started, origin=conn)
        run.deadline = loop.call_later(self.timeout, run.expire)  # cheaper than asyncio.timeout
        session.inflight[msg.id] = run
        gw.metrics.inflight.inc()

    # -- answers -------------------------------------------------------------------------

    async def _run(
        self, session: Session, conn: Connection, msg: ChatMessage, started: float
    ) -> None:
        gw = self.gw
        context = ChatContext(session.id, session.user, msg.id, tuple(session.history or ()))
        code: str | None = None
        detail = ""
        try:
            if self.streams:
                pieces: list[str] = []
                stream = self.agent.stream(msg.content, context)
                try:
                    async for piece in stream:
                        if piece:
                            pieces.append(piece)
                            session.send_live(encode(AgentDelta(reply_to=msg.id, delta=piece)))
                        await asyncio.sleep(0)  # an agent that never awaits must not stall us
                finally:  # a timeout or cancel may land here, not in the agent: close it now
                    aclose = getattr(stream, "aclose", None)
                    if aclose is not None:
                        await aclose()
                content = "".join(pieces)
            else:
                content = await self.agent.chat(msg.content, context)
            if not content:
                raise AgentError("the agent returned an empty answer")
        except asyncio.CancelledError:
            run = session.inflight.get(msg.id)
            if run is None or (run.cancelled_by is None and not run.timed_out):
                self._finish(session, conn, msg.id)
                raise
            code = ErrorCode.AGENT_TIMEOUT if run.timed_out else ErrorCode.CANCELLED
        except AgentError as exc:
            if exc.code in _ERROR_CODES:
                code, detail = exc.code, exc.message
            else:  # not a protocol code: neither the code nor its text reaches the client
                code = ErrorCode.AGENT_ERROR
                log_event(
                    gw.log,
                    "agent error",
                    logging.WARNING,
                    session=session.id,
                    connection=conn.id,
                    reply_to=msg.id,
                    agent_code=exc.code,
                )
        except Exception:
            code = ErrorCode.AGENT_ERROR
            gw.log.exception(
                "agent raised",
                extra={
                    "fields": {
                        "user": session.user,
                        "session": session.id,
                        "connection": conn.id,
                        "reply_to": msg.id,
                    }
                },
            )
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        self._finish(session, conn, msg.id)
        if code is None:
            frame = session.publish(
                lambda seq: AgentResponse(
                    reply_to=msg.id, content=content, latency_ms=latency_ms, seq=seq
                )
            )
            session.remember_answer(msg.id, frame)
            session.remember_turn(msg.content, content)
            gw.metrics.chat_latency.observe(latency_ms / 1000)
        else:
            message = detail or _SAFE_MESSAGES.get(ErrorCode(code), "the agent failed to answer")
            self.publish_error(session, code, message, msg.id)
        log_event(
            self.log,
            "chat",
            user=session.user,
            connection=conn.id,
            session=session.id,
            reply_to=msg.id,
            latency_ms=latency_ms,
            outcome=code or "ok",
        )

    def _settle(
        self, session: Session, conn: Connection, chat_id: str, task: asyncio.Task[None]
    ) -> None:
        """A task cancelled before its first step never ran ``_run``'s own cleanup: do it here."""
        run = session.inflight.get(chat_id)
        if run is None or run.task is not task:
            return
        self._finish(session, conn, chat_id)
        if run.cancelled_by is not None or run.timed_out:
            code = ErrorCode.AGENT_TIMEOUT if run.timed_out else ErrorCode.CANCELLED
            self.publish_error(session, code, _SAFE_MESSAGES[code], chat_id)

    def _finish(self, session: Session, conn: Connection, chat_id: str) -> None:
        run = session.inflight.pop(chat_id, None)
        if run is not None:
            if run.deadline is not None:
                run.deadline.cancel()
            conn.inflight -= 1
            self.running -= 1
            if not self.running:
                self.idle.set()
            self.gw.metrics.inflight.dec()

    # -- errors --------------------------------------------------------------------------

    def error(
        self,
        conn: Connection,
        code: str,
        message: str,
        reply_to: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """An error to this connection; with ``reply_to`` it is a session event with ``seq``."""
        session = conn.session
        if reply_to is not None and session is not None and session.connection is conn:
            self.publish_error(session, code, message, reply_to, retry_after)
            return
        self.gw.metrics.errors[code].inc()
        conn.send(
            encode(ErrorEvent(code=code, message=message, reply_to=None, retry_after=retry_after))
        )

    def publish_error(
        self,
        session: Session,
        code: str,
        message: str,
        reply_to: str,
        retry_after: float | None = None,
    ) -> None:
        self.gw.metrics.errors[code].inc()
        session.publish(
            lambda seq: ErrorEvent(
                code=code, message=message, reply_to=reply_to, retry_after=retry_after, seq=seq
            )
        )
