"""The async client behind ``send``, ``repl``, the demo and third-party code.

It connects with any of the protocol's token carriers (``handshake.py``), tracks the
session's ``seq`` (and drops replayed duplicates), and, when ``reconnect`` is on, survives a
lost connection: backoff with jitter, a fresh token when it can mint one, resume with
``last_seq``, and a resend of every unanswered message (safe: the server treats a known id
idempotently). A question the caller gave up on (a timeout, a cancelled future) or asked to
cancel is never sent again: a cancel the server did not confirm is resent instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from websockets.exceptions import ConnectionClosed

from qa_ws_cli.client.handshake import (
    FINAL_CLOSES,
    AbortableConnection,
    ClientOptions,
    close_text,
    open_connection,
    request_for,
)
from qa_ws_cli.client.text import check_text
from qa_ws_cli.errors import (
    ClientTimeout,
    ConnectionLost,
    HandshakeRefused,
    ProtocolError,
    QaWsError,
    ServerError,
)
from qa_ws_cli.protocol.codec import decode_server
from qa_ws_cli.protocol.codes import CloseCode
from qa_ws_cli.protocol.events import (
    AgentDelta,
    AgentEvent,
    AgentResponse,
    ErrorEvent,
    Pong,
    ServerEvent,
    SystemEvent,
)

State = Literal["disconnected", "connecting", "connected", "closed"]
_NOT_IN_FLIGHT = "not_in_flight"
_CLOSED = object()  # ends events() after close()


@dataclass
class _Pending:
    content: str
    future: asyncio.Future[AgentResponse]
    on_delta: Callable[[str], None] | None = None
    on_event: Callable[[AgentEvent], None] | None = None  # tool progress and the like
    attachments: tuple[str, ...] = ()  # file ids from POST /files (client/files.py)
    sent_at: float = field(default_factory=time.perf_counter)
    cancel_id: str | None = None  # set by cancel(): resend the cancel, never the question


class QaWsClient:
    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self.session_id: str | None = None
        self.last_seq = 0
        self.connected: SystemEvent | None = None
        self.state: State = "disconnected"
        self.last_rtt_ms: float | None = None
        self.reconnects = 0
        self.events_dropped = 0  # oldest events dropped from a full events() queue
        self.on_event: Callable[[ServerEvent], None] | None = None
        self.on_state: Callable[[str], None] | None = None
        self._ws: AbortableConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, _Pending] = {}
        self._cancels: dict[str, str] = {}  # cancel id -> the chat id it targets
        self._pings: dict[str, asyncio.Future[float]] = {}
        self._events: asyncio.Queue[Any] = asyncio.Queue(max(1, options.max_events))
        self._failure: QaWsError | None = None
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]

    # -- connecting ----------------------------------------------------------------------

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    async def connect(self) -> SystemEvent:
        """Open (or resume) the connection; returns the ``connected`` event.

        Raises HandshakeRefused, ConnectionLost or ClientTimeout; never leaves a socket open.
        """
        self._set_state("connecting")
        url, headers, protocols = request_for(self.options, self.session_id, self.last_seq)
        started = time.monotonic()
        try:
            ws = await open_connection(self.options, url, headers, protocols)
        except BaseException:
            self._set_state("disconnected")
            raise
        try:
            left = max(0.0, self.options.connect_timeout - (time.monotonic() - started))
            event = await asyncio.wait_for(self._first_event(ws), left)
        except BaseException as exc:
            ws.cut()  # at once: no close handshake with a peer that already misbehaves
            self._set_state("disconnected")
            if isinstance(exc, TimeoutError):
                raise ClientTimeout(
                    f"the server accepted the connection but sent no 'connected' event "
                    f"within {self.options.connect_timeout:g} s"
                ) from None
            raise
        if not event.resumed:
            self.last_seq = 0
        self.session_id = event.session_id
        self.connected = event
        self._ws = ws
        self._failure = None
        self._emit(event)
        self._set_state("connected")
        self._reader = asyncio.get_running_loop().create_task(self._read(ws))
        return event

    async def _first_event(self, ws: AbortableConnection) -> SystemEvent:
        try:
            first = await ws.recv()
            event = decode_server(first) if isinstance(first, str) else None
        except (ConnectionClosed, ProtocolError):
            event = None
        if not isinstance(event, SystemEvent) or event.event != "connected":
            raise ConnectionLost("the server did not start with a 'connected' event")
        return event

    def _set_state(self, state: State) -> None:
        self.state = state
        if self.on_state is not None:
            self.on_state(state)

    def _emit(self, event: ServerEvent) -> None:
        self._queue(event)
        if self.on_event is not None:
            self.on_event(event)

    def _queue(self, item: object) -> None:
        """Bounded: a caller that never iterates events() loses the oldest, not memory."""
        if self._events.full():
            self._events.get_nowait()
            self.events_dropped += 1
        self._events.put_nowait(item)

    # -- receiving -----------------------------------------------------------------------

    async def _read(self, ws: AbortableConnection) -> None:
        while True:
            try:
                message = await ws.recv()
            except ConnectionClosed as exc:
                closed = exc
                break
            if not isinstance(message, str):
                continue
            try:
                event = decode_server(message)
            except ProtocolError:
                continue  # a newer server's event this client does not know: skip it
            seq = getattr(event, "seq", None)
            if seq is not None:
                if seq <= self.last_seq:
                    continue  # a replayed event we already have
                self.last_seq = seq
            self._dispatch(event)
            self._emit(event)
        await self._lost(closed)

    def _dispatch(self, event: ServerEvent) -> None:
        if isinstance(event, AgentDelta):
            pending = self._pending.get(event.reply_to)
            if pending is not None and pending.on_delta is not None:
                pending.on_delta(event.delta)
        elif isinstance(event, AgentEvent):
            pending = self._pending.get(event.reply_to)
            if pending is not None and pending.on_event is not None:
                pending.on_event(event)
        elif isinstance(event, AgentResponse):
            self._settle(event.reply_to, event)
        elif isinstance(event, ErrorEvent) and event.reply_to is not None:
            target = self._cancels.get(event.reply_to)
            if target is not None:  # about one of our cancels, not a chat
                if event.code == _NOT_IN_FLIGHT:  # the server is not answering the target
                    self._settle(target, _cancelled(target))
            else:
                error = ServerError(
                    f"{event.code}: {event.message}",
                    code=event.code,
                    reply_to=event.reply_to,
                    retry_after=event.retry_after,
                )
                self._settle(event.reply_to, error)
        elif isinstance(event, Pong):
            waiter = self._pings.pop(event.reply_to, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(time.perf_counter())

    def _settle(self, msg_id: str, outcome: AgentResponse | BaseException) -> None:
        pending = self._pending.pop(msg_id, None)
        if pending is None or pending.future.done():
            return
        if pending.cancel_id is not None:
            self._cancels.pop(pending.cancel_id, None)
        if isinstance(outcome, BaseException):
            pending.future.set_exception(outcome)
        else:
            pending.future.set_result(outcome)

    async def _lost(self, closed: ConnectionClosed) -> None:
        self._ws = None
        if self.state == "closed":
            return
        self._set_state("disconnected")
        code = closed.rcvd.code if closed.rcvd is not None else None
        reason: QaWsError = ConnectionLost(close_text(code), close_code=code)
        if closed.sent is not None and closed.sent.code == CloseCode.MESSAGE_TOO_BIG:
            reason = ConnectionLost(
                f"the server sent a frame larger than max_size ({self.options.max_size} bytes)",
                close_code=CloseCode.MESSAGE_TOO_BIG,
            )
            code = CloseCode.MESSAGE_TOO_BIG
        can_refresh = code == CloseCode.TOKEN_EXPIRED and self.options.token_factory is not None
        if self.options.reconnect and (
            code not in FINAL_CLOSES and (code != CloseCode.TOKEN_EXPIRED or can_refresh)
        ):
            try:
                await self._reconnect()
                return
            except QaWsError as exc:  # a refused token, or every attempt failed: say which
                reason = exc
        self._fail(reason)

    def _fail(self, exc: QaWsError) -> None:
        self._failure = exc
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(exc)
        self._pending.clear()
        self._cancels.clear()
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(exc)
        self._pings.clear()
        self._queue(exc)

    async def _reconnect(self) -> None:
        """Raises the refusal of a token (401/403) at once, else the last failure."""
        opts = self.options
        last: QaWsError | None = None
        for attempt in range(opts.max_reconnects):
            if self.state == "closed":
                return
            delay = min(opts.backoff_max, opts.backoff_base * 2**attempt)
            await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))  # noqa: S311 (jitter)
            if opts.token_factory is not None:
                opts.token = opts.token_factory()
            try:
                await self.connect()
            except HandshakeRefused as exc:
                if exc.status in (401, 403):
                    raise HandshakeRefused(
                        "reconnecting was refused" + exc.message.removeprefix("handshake refused"),
                        status=exc.status,
                        error=exc.error,
                    ) from None
                last = exc
                continue
            except (ConnectionLost, ClientTimeout) as exc:
                last = exc
                continue
            self.reconnects += 1
            await self._resend()
            return
        n = opts.max_reconnects
        tried = f"gave up reconnecting after {n} attempt{'s' if n != 1 else ''}"
        raise ConnectionLost(f"{tried}: {last.message}" if last else tried)

    async def _resend(self) -> None:
        """Safe: the server answers a known id from its store or attaches it to its run."""
        for msg_id, pending in list(self._pending.items()):
            if pending.future.done():
                continue
            if pending.cancel_id is not None:
                frame = {"type": "cancel", "id": pending.cancel_id, "target": msg_id}
            else:
                frame = _chat_frame(msg_id, pending.content, pending.attachments)
            await self._send(frame)

    # -- sending -------------------------------------------------------------------------

    async def _send(self, frame: dict[str, Any]) -> None:
        if self._ws is None:
            if self._failure is not None:
                raise self._failure
            return  # reconnecting: pending chats and cancels are resent on resume
        with contextlib.suppress(ConnectionClosed):  # the reader sees the loss and acts on it
            await self._ws.send(json.dumps(frame))

    async def send_chat(
        self,
        content: str,
        *,
        msg_id: str | None = None,
        on_delta: Callable[[str], None] | None = None,
        on_event: Callable[[AgentEvent], None] | None = None,
        attachments: tuple[str, ...] = (),
    ) -> asyncio.Future[AgentResponse]:
        """Send one chat message; the future resolves with its ``agent_response``.

        ``on_event`` sees the answer's ``agent_event``s (tools, reasoning, status);
        ``attachments`` are ``file_id``s from ``upload_file``. Cancelling the future forgets
        the question: it is not resent on a reconnect.
        """
        check_text(content)  # InvalidText: a lone surrogate would be refused as invalid_json
        msg_id = msg_id or self.new_id()
        future: asyncio.Future[AgentResponse] = asyncio.get_running_loop().create_future()
        pending = _Pending(content, future, on_delta, on_event, tuple(attachments))
        self._pending[msg_id] = pending
        future.add_done_callback(lambda done: self._forget(msg_id, done))
        try:
            await self._send(_chat_frame(msg_id, content, pending.attachments))
        except BaseException:
            future.cancel()
            raise
        return future

    def _forget(self, msg_id: str, future: asyncio.Future[AgentResponse]) -> None:
        pending = self._pending.get(msg_id)
        if pending is not None and pending.future is future and future.cancelled():
            del self._pending[msg_id]
            if pending.cancel_id is not None:
                self._cancels.pop(pending.cancel_id, None)

    async def ask(
        self,
        content: str,
        *,
        timeout: float | None = None,
        on_delta: Callable[[str], None] | None = None,
        on_event: Callable[[AgentEvent], None] | None = None,
        attachments: tuple[str, ...] = (),
    ) -> AgentResponse:
        """Send and wait for the answer; on timeout the question is cancelled and forgotten."""
        msg_id = self.new_id()
        future = await self.send_chat(
            content, msg_id=msg_id, on_delta=on_delta, on_event=on_event, attachments=attachments
        )
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            self._pending.pop(msg_id, None)
            with contextlib.suppress(QaWsError):
                await self._send({"type": "cancel", "id": self.new_id(), "target": msg_id})
            raise ClientTimeout(f"no answer within {timeout:g} s") from None

    async def cancel(self, target: str) -> None:
        """Ask the server to stop answering ``target``; its future ends with ``cancelled``.

        Until the server confirms, a reconnect resends the cancel, not the question.
        """
        cancel_id = self.new_id()
        pending = self._pending.get(target)
        if pending is not None:
            if pending.cancel_id is not None:
                self._cancels.pop(pending.cancel_id, None)
            pending.cancel_id = cancel_id
            self._cancels[cancel_id] = target
        await self._send({"type": "cancel", "id": cancel_id, "target": target})

    def pending_ids(self) -> list[str]:
        return list(self._pending)

    async def ping(self, timeout: float = 10.0) -> float:
        """Round trip of a protocol ``ping`` in milliseconds."""
        ping_id = self.new_id()
        waiter: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[ping_id] = waiter
        started = time.perf_counter()
        await self._send({"type": "ping", "id": ping_id})
        try:
            done = await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            self._pings.pop(ping_id, None)
            raise ClientTimeout(f"no pong within {timeout:g} s") from None
        self.last_rtt_ms = round((done - started) * 1000, 2)
        return self.last_rtt_ms

    async def events(self) -> AsyncIterator[ServerEvent]:
        """Every received event, in order (the newest ``max_events`` when nobody reads them);
        raises when the connection is lost for good, ends after close()."""
        while True:
            item = await self._events.get()
            if item is _CLOSED:
                self._queue(_CLOSED)  # for any other reader
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def drop(self) -> None:
        """Cut the transport without a close frame, as a network failure would."""
        if self._ws is not None:
            self._ws.cut()

    async def close(self) -> None:
        self._set_state("closed")
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
        elif self._reader is not None:
            self._reader.cancel()  # it may be between reconnect attempts
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._reader, self.options.close_timeout)
        self._queue(_CLOSED)

    async def __aenter__(self) -> QaWsClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _chat_frame(msg_id: str, content: str, attachments: tuple[str, ...]) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "chat_message", "id": msg_id, "content": content}
    if attachments:
        frame["attachments"] = list(attachments)
    return frame


def _cancelled(msg_id: str) -> ServerError:
    return ServerError("cancelled: the answer was cancelled", code="cancelled", reply_to=msg_id)


__all__ = ["ClientOptions", "QaWsClient"]
