"""HTTP and WebSocket handlers of the protocol's endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import re
import secrets
import time
from ipaddress import ip_address
from typing import NamedTuple

from aiohttp import WebSocketError, WSMsgType, hdrs, web

from qa_ws_cli.protocol.codec import encode_fields
from qa_ws_cli.protocol.codes import SUBPROTOCOL, CloseCode, HandshakeError
from qa_ws_cli.protocol.events import SystemEvent
from qa_ws_cli.server.admission import (
    ADMISSION,
    WEBSOCKET,
    give_back_slots,
    refusal,
    take_slots,
)
from qa_ws_cli.server.connections import Connection
from qa_ws_cli.server.gateway import GATEWAY, Gateway
from qa_ws_cli.server.guard import GuardedHandler
from qa_ws_cli.server.keys import REQUEST_ID_HEADER
from qa_ws_cli.server.logs import log_event
from qa_ws_cli.server.session_store import ResumeRecord
from qa_ws_cli.server.web import ASSETS, PAGE_CSP, respond

CLOSE_READ_S = 2.0  # a closing peer that still sends is read (not reset) this long
_SESSION_ID = re.compile(r"[0-9a-f]{32}")  # secrets.token_hex(16), as new sessions are named
_OWN_CLOSES = frozenset(c.value for c in CloseCode if c >= 4000)  # the protocol's 4xxx codes


def _resume_point(request: web.Request) -> tuple[str | None, int]:
    query = request.rel_url.query  # not request.query: see remote in Admission.admit
    session_id = query.get("session_id") or None
    if session_id is not None and not _SESSION_ID.fullmatch(session_id):
        session_id = None  # not one this server could have made: a fresh session
    raw = query.get("last_seq", "0")
    # ASCII digits only: str.isdigit() takes "²", which int() refuses; -1: cannot be resumed
    last_seq = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else -1
    return session_id, last_seq


async def _resumable(gw: Gateway, session_id: str | None, last_seq: int) -> ResumeRecord | None:
    if session_id is None or last_seq < 0:
        return None
    try:
        return await gw.store.resume(session_id, last_seq)
    except Exception:  # a store that fails here means a fresh session, never a 500
        gw.log.warning("session lookup failed; starting a fresh session", exc_info=True)
        return None


_ENDED = frozenset({WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED})
NOT_A_WEBSOCKET = (
    "not a WebSocket handshake: send Upgrade: websocket, Connection: Upgrade, "
    "a Sec-WebSocket-Key and Sec-WebSocket-Version: 13"
)


async def websocket(request: web.Request) -> web.StreamResponse:
    """``GET /ws``: admitted here, not by a wrapper (whose frame would stay with every idle
    connection), then read in this one frame for the connection's life."""
    gw = request.app[GATEWAY]
    entry = await _enter(gw, request)
    if isinstance(entry, web.StreamResponse):
        return entry
    conn, ws, started = entry.conn, entry.conn.ws, time.monotonic()
    try:
        await ws.prepare(entry.request)
    except web.HTTPException:  # not a WebSocket handshake: nothing was written yet
        await give_back_slots(gw, conn.user, conn.id)
        error, detail = HandshakeError.BAD_REQUEST, NOT_A_WEBSOCKET
        return refusal(gw, request, 400, error, detail, request_id=conn.request_id)
    try:
        # the 101's headers are on the wire; aiohttp keeps the response (and so them) for the
        # connection's life: 0.7 KiB of every idle connection
        ws.headers.clear()
        await _open(gw, conn, entry.record, entry.last_seq)
        del entry  # a resumed session's replayed frames are not kept for the connection's life
        frames = gw.frames
        while True:  # ws.receive(), not ``async for``: no iterator frame held while idle
            msg = await ws.receive()
            conn.heard_at = now = time.monotonic()
            if msg.type is WSMsgType.TEXT:
                conn.last_seen = now
                conn.frames_in += 1
                await frames.on_text(conn, msg.data)
            elif msg.type is WSMsgType.BINARY:
                conn.last_seen = now
                conn.frames_in += 1
                await frames.on_binary(conn)
            elif msg.type is WSMsgType.PING:  # counted in the frame budget too; past it, no pong
                if not frames.over_budget(conn):
                    await ws.pong(msg.data)
            elif msg.type in _ENDED:
                break
            elif msg.type is WSMsgType.ERROR:  # aiohttp closed with the frame error's code
                if isinstance(msg.data, WebSocketError):
                    conn.closed_with = msg.data.code  # its close code, not 1006, in logs
                break
        if conn.closer is not None:  # ours: read and discard until the peer's close frame
            await asyncio.wait({conn.closer}, timeout=CLOSE_READ_S + 1.0)
    except Exception:
        gw.log.exception("connection handler failed", extra={"fields": {"connection": conn.id}})
        with contextlib.suppress(Exception):
            await conn.close(CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        try:
            _closed(gw, request, conn, ws, started)
        finally:
            await give_back_slots(gw, conn.user, conn.id)
    return ws


class _Entry(NamedTuple):
    request: web.Request  # a trusted proxy's clone, with the client's address
    conn: Connection  # holding its slots, not yet registered
    record: ResumeRecord | None  # the session it resumes, when it can
    last_seq: int


async def _enter(gw: Gateway, request: web.Request) -> _Entry | web.StreamResponse:
    """The handshake's checks (admission, the session it resumes, the caps): the connection
    to open, or the refusal."""
    admitted = await request.app[ADMISSION].admit(request, WEBSOCKET)
    if isinstance(admitted, web.StreamResponse):
        return admitted
    request, claims = admitted.request, admitted.claims
    assert claims is not None  # a route that needs a token has its claims
    session_id, last_seq = _resume_point(request)
    record = await _resumable(gw, session_id, last_seq)
    if record is not None and record.user != claims.sub:
        return refusal(
            gw,
            request,
            403,
            HandshakeError.SESSION_FORBIDDEN,
            "this session belongs to another user",
            request_id=admitted.request_id,
        )
    resumed = record is not None and record.frames is not None
    lim = gw.settings.limits
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        autoping=False,  # pings answered and pongs seen here: the heartbeat is gw.heartbeat's
        max_msg_size=lim.max_message_bytes + 1,  # aiohttp refuses a frame of exactly its max
        compress=False,  # per-connection zlib state would cost far more than the 25 KiB budget
        timeout=CLOSE_READ_S,  # after our close frame, how long we read for the peer's
    )
    ws.headers[REQUEST_ID_HEADER] = admitted.request_id
    conn_id = secrets.token_hex(8)  # also the key of the user's connection slot it holds
    conn = Connection(ws, conn_id, claims, lim.send_queue_bytes, gw.on_overflow, request.transport)
    conn.session_id = session_id if resumed and session_id else secrets.token_hex(16)
    conn.request_id, conn.remote = admitted.request_id, admitted.remote or ""
    # the slots last: nothing after them can fail and leave them held
    refused = await take_slots(gw, request, claims.sub, conn_id, admitted.request_id)
    if refused is not None:
        return refused
    return _Entry(request, conn, record if resumed else None, last_seq)


async def _open(
    gw: Gateway,
    conn: Connection,
    record: ResumeRecord | None,
    last_seq: int,
) -> None:
    """Register the connection, attach it to its session and send ``connected`` and the replay."""
    driver = gw.driver
    conn.last_seen = time.monotonic()
    gw.connections.add(conn)
    gw.metrics.connections.inc()
    if record is None:
        await gw.store.create(conn.session_id, conn.user)
    local = driver.session(conn.session_id, conn.user)
    closes = local.core.attach(conn.id)
    replay = record.frames if record is not None and record.frames is not None else []
    conn.send(
        encode_fields(
            SystemEvent,
            event="connected",
            session_id=conn.session_id,
            connection_id=conn.id,
            user=conn.user,
            resumed=record is not None,
            replayed=len(replay),
            server=gw.server_info,
            limits=gw.limits_info,
        )
    )
    for frame in replay:
        conn.send(frame)
    if record is not None:
        await gw.store.announce_attach(conn.session_id, conn.id)  # another instance's goes
        conn.last_seq = local.seq = max(local.seq, record.seq, last_seq)
        local.core.running_elsewhere(record.running)
        # what was published between the lookup and the attach
        for seq, frame in await gw.store.frames_after(conn.session_id, conn.last_seq):
            conn.send_seq(seq, frame)
    await driver.apply(local, closes)
    if record is not None and record.interrupted:
        await driver.apply(local, local.core.interrupted(record.interrupted))
    await gw.operator.deliver_inbox(local, conn)  # what was kept while the user was away
    gw.watch_token(conn, conn.claims)
    gw.heartbeat.watch(conn)
    gw.metrics.connects.labels(str(record is not None).lower()).inc()
    log_event(
        gw.log,
        "connect",
        request_id=conn.request_id,
        user=conn.user,
        connection=conn.id,
        session=conn.session_id,
        resumed=record is not None,
        replayed=len(replay),
    )


def _closed(
    gw: Gateway,
    request: web.Request,
    conn: Connection,
    ws: web.WebSocketResponse,
    started: float,
) -> None:
    """Always runs, whatever failed: the connection leaves every registry it entered."""
    conn.closing = True
    gw.forget_token(conn)
    gw.heartbeat.forget(conn)
    if gw.connections.get(conn.id) is conn:
        gw.connections.remove(conn)
        gw.metrics.connections.dec()
    local = gw.driver.local.get(conn.session_id)
    if local is not None:
        local.core.detach(conn.id)  # its answers in flight carry on into the session
        gw.driver.release(local)
    code = conn.closed_with or ws.close_code  # aiohttp reports 1000 for its own closes
    guard = request.protocol
    if isinstance(guard, GuardedHandler) and guard.unmasked_frame:
        code = CloseCode.PROTOCOL_ERROR  # sent by the guard, under aiohttp's frame reader
    gw.metrics.closes.labels(_close_label(code)).inc()
    log_event(
        gw.log,
        "disconnect",
        request_id=conn.request_id,
        user=conn.user,
        connection=conn.id,
        session=conn.session_id,
        close_code=code,
        duration_s=round(time.monotonic() - started, 3),
    )


def _close_label(code: int | None) -> str:
    """Known close codes by number; clients' own 3000-4999 codes share one (bounded series)."""
    if code is None:
        return "none"
    return str(code) if code < 3000 or code in _OWN_CLOSES else "other"


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    agent_ok, store_ok = await asyncio.gather(gw.agent_ready(), _store_ok(gw))
    checks = {"accepting": not gw.draining, "agent": agent_ok, "store": store_ok}
    ready = all(checks.values())
    return web.json_response(
        {
            "status": "ready" if ready else "not_ready",
            "checks": checks,
            "connections": len(gw.connections),
        },
        status=200 if ready else 503,
    )


async def _store_ok(gw: Gateway) -> bool:
    try:
        return await asyncio.wait_for(gw.store.ping(), timeout=2.0)
    except Exception:
        return False


def _metrics_refused(gw: Gateway, request: web.Request) -> web.Response | None:
    """``metrics.token`` set: it is needed. Unset: open on a loopback bind (or with
    ``metrics.public``), refused on any other bind (docs/security.md)."""
    wanted = gw.settings.metrics.token
    if wanted is None:
        if gw.settings.metrics.public or is_loopback_host(gw.settings.server.host):
            return None
        return refusal(
            gw, request, 403, "metrics_token_required", "set metrics.token to scrape this server"
        )
    given = request.headers.get(hdrs.AUTHORIZATION, "")
    token = given[7:].strip() if given[:7].lower() == "bearer " else ""
    if not token:
        return refusal(gw, request, 401, HandshakeError.MISSING_TOKEN, "send the metrics token")
    # a header's non-ASCII bytes reach here as lone surrogates: compared, never a 500
    given_bytes = token.encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(given_bytes, wanted.get_secret_value().encode()):
        return refusal(gw, request, 401, HandshakeError.INVALID_TOKEN, "wrong metrics token")
    return None


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


async def metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    refused = _metrics_refused(gw, request)
    if refused is not None:
        return refused
    body = gw.metrics.render()
    return web.Response(
        body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


async def index(request: web.Request) -> web.Response:
    return respond(request, request.app[ASSETS].page, {"Content-Security-Policy": PAGE_CSP})


async def static(request: web.Request) -> web.Response:
    """The page's scripts, styles and vendored libraries; any other name is a plain 404."""
    asset = request.app[ASSETS].files.get(request.match_info["name"])
    if asset is None:
        raise web.HTTPNotFound(text="not found")
    return respond(request, asset, {})
