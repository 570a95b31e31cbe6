"""The async client behind ``send``, ``repl``, the demo and tests.

It connects with any of the protocol's token carriers, tracks the session's ``seq`` (and
drops replayed duplicates), and, when ``reconnect`` is on, survives a lost connection:
backoff with jitter, a fresh token when it can mint one, resume with ``last_seq``, and a
resend of every unanswered message (safe: the server treats a known id idempotently).
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
from types import SimpleNamespace
from typing import Any, Literal

import aiohttp
from yarl import URL

from qa_ws_cli.errors import (
    ClientTimeout,
    ConnectionLost,
    HandshakeRefused,
    ProtocolError,
    ServerError,
)
from qa_ws_cli.protocol.codec import decode_server
from qa_ws_cli.protocol.codes import BEARER_PREFIX, SUBPROTOCOL, CloseCode
from qa_ws_cli.protocol.events import (
    AgentDelta,
    AgentResponse,
    ErrorEvent,
    Pong,
    ServerEvent,
    SystemEvent,
)

Carrier = Literal["header", "subprotocol", "query"]
# closes after which reconnecting would only be refused again
_FINAL_CLOSES = frozenset(
    {
        CloseCode.NORMAL,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.TOKEN_REVOKED,
    }
)


@dataclass
class ClientOptions:
    url: str
    token: str | None = None
    carrier: Carrier = "header"
    origin: str | None = None
    connect_timeout: float = 10.0
    reconnect: bool = False
    max_reconnects: int = 8
    backoff_base: float = 0.25
    backoff_max: float = 8.0
    token_factory: Callable[[], str] | None = None
    ssl: Any = True


@dataclass
class _Pending:
    content: str
    future: asyncio.Future[AgentResponse]
    on_delta: Callable[[str], None] | None = None
    sent_at: float = field(default_factory=time.perf_counter)


def _describe_refusal(exc: aiohttp.WSServerHandshakeError, body: bytes | None) -> HandshakeRefused:
    error, detail = "handshake_failed", exc.message
    try:
        data = json.loads(body or b"")
        error, detail = str(data.get("error", error)), str(data.get("detail", detail))
    except (ValueError, AttributeError):
        pass
    retry = exc.headers.get("Retry-After") if exc.headers else None
    return HandshakeRefused(
        f"handshake refused: HTTP {exc.status} {error}: {detail}",
        status=exc.status,
        error=error,
        retry_after=float(retry) if retry and retry.isdigit() else None,
    )


class QaWsClient:
    def __init__(self, options: ClientOptions) -> None:
        self.options = options
        self.session_id: str | None = None
        self.last_seq = 0
        self.connected: SystemEvent | None = None
        self.state: Literal["disconnected", "connecting", "connected", "closed"] = "disconnected"
        self.last_rtt_ms: float | None = None
        self.reconnects = 0
        self.on_event: Callable[[ServerEvent], None] | None = None
        self.on_state: Callable[[str], None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[str, _Pending] = {}
        self._pings: dict[str, asyncio.Future[float]] = {}
        self._events: asyncio.Queue[ServerEvent | BaseException] = asyncio.Queue()
        self._failure: BaseException | None = None
        self._ids = itertools.count(1)
        self._prefix = uuid.uuid4().hex[:8]
        self._refusal_body: bytes | None = None

    # -- connecting ----------------------------------------------------------------------

    def new_id(self) -> str:
        return f"{self._prefix}-{next(self._ids)}"

    def _request(self) -> tuple[URL, dict[str, str], tuple[str, ...]]:
        url = URL(self.options.url)
        token = self.options.token
        headers: dict[str, str] = {}
        protocols: tuple[str, ...] = (SUBPROTOCOL,)
        query: dict[str, str] = {}
        if token:
            if self.options.carrier == "header":
                headers["Authorization"] = f"Bearer {token}"
            elif self.options.carrier == "subprotocol":
                protocols = (SUBPROTOCOL, BEARER_PREFIX + token)
            else:
                query["token"] = token
        if self.session_id:
            query.update(session_id=self.session_id, last_seq=str(self.last_seq))
        return url.update_query(query) if query else url, headers, protocols

    async def connect(self) -> SystemEvent:
        """Open (or resume) the connection; returns the ``connected`` event."""
        if self._http is None:
            trace = aiohttp.TraceConfig()
            trace.on_request_end.append(self._capture_refusal)
            self._http = aiohttp.ClientSession(trace_configs=[trace])
        self._set_state("connecting")
        url, headers, protocols = self._request()
        self._refusal_body = None
        try:
            ws = await asyncio.wait_for(
                self._http.ws_connect(
                    url,
                    headers=headers,
                    protocols=protocols,
                    origin=self.options.origin,
                    max_msg_size=0,
                    ssl=self.options.ssl,
                ),
                self.options.connect_timeout,
            )
        except aiohttp.WSServerHandshakeError as exc:
            self._set_state("disconnected")
            raise _describe_refusal(exc, self._refusal_body) from None
        except TimeoutError:
            self._set_state("disconnected")
            raise ClientTimeout(f"no handshake within {self.options.connect_timeout:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            self._set_state("disconnected")
            raise ConnectionLost(f"cannot connect to {self.options.url}: {exc}") from None
        first = await ws.receive(timeout=self.options.connect_timeout)
        event = decode_server(first.data) if first.type is aiohttp.WSMsgType.TEXT else None
        if not isinstance(event, SystemEvent) or event.event != "connected":
            await ws.close()
            raise ConnectionLost("the server did not start with a 'connected' event")
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

    async def _capture_refusal(
        self,
        session: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestEndParams,
    ) -> None:
        """aiohttp drops a refused handshake's body; keep it for the error message."""
        if params.response.status != 101:
            with contextlib.suppress(Exception):
                self._refusal_body = await params.response.read()

    def _set_state(self, state: Any) -> None:
        self.state = state
        if self.on_state is not None:
            self.on_state(state)

    def _emit(self, event: ServerEvent) -> None:
        self._events.put_nowait(event)
        if self.on_event is not None:
            self.on_event(event)

    # -- receiving -----------------------------------------------------------------------

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            try:
                event = decode_server(msg.data)
            except ProtocolError:
                continue  # a newer server's event this client does not know: skip it
            seq = getattr(event, "seq", None)
            if seq is not None:
                if seq <= self.last_seq:
                    continue  # a replayed event we already have
                self.last_seq = seq
            self._dispatch(event)
            self._emit(event)
        await self._lost(ws.close_code)

    def _dispatch(self, event: ServerEvent) -> None:
        if isinstance(event, AgentDelta):
            pending = self._pending.get(event.reply_to)
            if pending is not None and pending.on_delta is not None:
                pending.on_delta(event.delta)
        elif isinstance(event, AgentResponse):
            pending = self._pending.pop(event.reply_to, None)
            if pending is not None and not pending.future.done():
                pending.future.set_result(event)
        elif isinstance(event, ErrorEvent) and event.reply_to is not None:
            pending = self._pending.pop(event.reply_to, None)
            if pending is not None and not pending.future.done():
                pending.future.set_exception(
                    ServerError(
                        f"{event.code}: {event.message}",
                        code=event.code,
                        reply_to=event.reply_to,
                        retry_after=event.retry_after,
                    )
                )
        elif isinstance(event, Pong):
            waiter = self._pings.pop(event.reply_to, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(time.perf_counter())

    async def _lost(self, code: int | None) -> None:
        self._ws = None
        if self.state == "closed":
            return
        self._set_state("disconnected")
        can_refresh = code == CloseCode.TOKEN_EXPIRED and self.options.token_factory is not None
        if self.options.reconnect and (
            code not in _FINAL_CLOSES and (code != CloseCode.TOKEN_EXPIRED or can_refresh)
        ):
            with contextlib.suppress(Exception):
                await self._reconnect()
                return
        self._fail(ConnectionLost(_close_text(code), close_code=code))

    def _fail(self, exc: BaseException) -> None:
        self._failure = exc
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(exc)
        self._pending.clear()
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(exc)
        self._pings.clear()
        self._events.put_nowait(exc)

    async def _reconnect(self) -> None:
        opts = self.options
        for attempt in range(opts.max_reconnects):
            delay = min(opts.backoff_max, opts.backoff_base * 2**attempt)
            await asyncio.sleep(delay / 2 + random.uniform(0, delay / 2))  # noqa: S311 (jitter)
            if opts.token_factory is not None:
                opts.token = opts.token_factory()
            try:
                await self.connect()
            except HandshakeRefused as exc:
                if exc.status in (401, 403):
                    raise
                continue
            except (ConnectionLost, ClientTimeout):
                continue
            self.reconnects += 1
            for msg_id, pending in list(self._pending.items()):  # safe: ids are idempotent
                await self._send({"type": "chat_message", "id": msg_id, "content": pending.content})
            return
        raise ConnectionLost("gave up reconnecting")

    # -- sending -------------------------------------------------------------------------

    async def _send(self, frame: dict[str, Any]) -> None:
        if self._ws is None:
            if self._failure is not None:
                raise self._failure
            return  # reconnecting: pending chats are resent on resume
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._ws.send_str(json.dumps(frame))

    async def send_chat(
        self,
        content: str,
        *,
        msg_id: str | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> asyncio.Future[AgentResponse]:
        """Send one chat message; the future resolves with its ``agent_response``."""
        msg_id = msg_id or self.new_id()
        future: asyncio.Future[AgentResponse] = asyncio.get_running_loop().create_future()
        self._pending[msg_id] = _Pending(content, future, on_delta)
        await self._send({"type": "chat_message", "id": msg_id, "content": content})
        return future

    async def ask(
        self,
        content: str,
        *,
        timeout: float | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> AgentResponse:
        future = await self.send_chat(content, on_delta=on_delta)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise ClientTimeout(f"no answer within {timeout:g} s") from None

    async def cancel(self, target: str) -> None:
        await self._send({"type": "cancel", "id": self.new_id(), "target": target})

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
        """Every received event, in order; ends by raising when the connection is lost."""
        while True:
            item = await self._events.get()
            if isinstance(item, BaseException):
                raise item
            yield item

    async def drop(self) -> None:
        """Cut the transport without a close frame, as a network failure would (for tests)."""
        if self._ws is not None:
            transport = (
                self._ws._response.connection.transport if self._ws._response.connection else None
            )
            if transport is not None:
                transport.abort()

    async def close(self) -> None:
        self._set_state("closed")
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self._reader is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._reader, 2.0)
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def __aenter__(self) -> QaWsClient:
        try:
            await self.connect()
        except BaseException:
            await self.close()  # a refused connect must not leave the HTTP session open
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _close_text(code: int | None) -> str:
    reasons = {
        CloseCode.GOING_AWAY: "the server is shutting down",
        CloseCode.POLICY_VIOLATION: "closed by the server for a policy violation",
        CloseCode.MESSAGE_TOO_BIG: "a frame was larger than the server allows",
        CloseCode.INTERNAL_ERROR: "the server had an internal error",
        CloseCode.TOKEN_EXPIRED: "the token expired",
        CloseCode.TOKEN_REVOKED: "the token was revoked",
    }
    text = reasons.get(code or 0, "the connection was lost")  # type: ignore[call-overload]
    return f"{text} (close code {code})" if code else text
