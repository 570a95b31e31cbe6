"""HTTP and WebSocket handlers of the protocol's endpoints."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid

from aiohttp import WSMsgType, web

from qa_ws_cli.protocol.codec import encode
from qa_ws_cli.protocol.codes import SUBPROTOCOL, CloseCode, HandshakeError
from qa_ws_cli.protocol.events import SystemEvent
from qa_ws_cli.server.connections import Connection
from qa_ws_cli.server.gateway import GATEWAY, Gateway
from qa_ws_cli.server.keys import CLAIMS, REQUEST_ID
from qa_ws_cli.server.logs import log_event
from qa_ws_cli.server.middlewares import refusal
from qa_ws_cli.server.sessions import Session
from qa_ws_cli.server.web import ASSETS, PAGE_CSP, respond

_SESSION_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex, as SessionManager.create makes them
_CLIENT_CLOSES = frozenset({CloseCode.NORMAL, CloseCode.GOING_AWAY})


def _resume_point(request: web.Request) -> tuple[str | None, int]:
    session_id = request.query.get("session_id") or None
    if session_id is not None and not _SESSION_ID.fullmatch(session_id):
        session_id = None  # not one this server could have made: a fresh session
    raw = request.query.get("last_seq", "0")
    last_seq = int(raw) if raw.isdigit() and len(raw) < 19 else -1  # -1: cannot be resumed
    return session_id, last_seq


async def websocket(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    claims = request[CLAIMS]
    session_id, last_seq = _resume_point(request)
    session: Session | None = None
    replay: list[str] = []
    if session_id is not None:
        existing = gw.sessions.get(session_id)
        if existing is None and last_seq >= 0:  # perhaps handed over by a drained instance
            snapshot = await gw.store.take_session(session_id)
            if snapshot is not None:
                existing = gw.sessions.restore(snapshot)
        if existing is not None and existing.user != claims.sub:
            return refusal(
                gw,
                request,
                403,
                HandshakeError.SESSION_FORBIDDEN,
                "this session belongs to another user",
            )
        if existing is not None:
            kept = existing.replay_after(last_seq, gw.settings.sessions.buffer_age_s)
            if kept is not None:
                session, replay = existing, kept

    lim = gw.settings.limits
    ws = web.WebSocketResponse(
        protocols=(SUBPROTOCOL,),
        heartbeat=lim.heartbeat_s or None,
        max_msg_size=lim.max_message_bytes + 1,  # aiohttp refuses a frame of exactly its max
        compress=False,  # per-connection zlib state would cost far more than the 25 KiB budget
    )
    await ws.prepare(request)

    resumed = session is not None
    if session is None:
        session = gw.sessions.create(claims.sub)
    conn = Connection(
        ws, uuid.uuid4().hex[:16], claims, lim.send_queue_bytes, gw.overflowed, request.transport
    )
    conn.last_seen = time.monotonic()
    gw.connections.add(conn)
    previous = gw.sessions.attach(session, conn)
    if previous is not None:
        previous.start_close(CloseCode.NORMAL, "session resumed on another connection")
    conn.send(
        encode(
            SystemEvent(
                event="connected",
                session_id=session.id,
                connection_id=conn.id,
                user=conn.user,
                resumed=resumed,
                replayed=len(replay),
                server=gw.server_info,
                limits=gw.limits_info,
            )
        )
    )
    for frame in replay:
        conn.send(frame)
    gw.schedule_token_timers(conn, claims)
    gw.metrics.connects.labels(str(resumed).lower()).inc()
    gw.metrics.connections.inc()
    log_event(
        gw.log,
        "connect",
        request_id=request[REQUEST_ID],
        user=conn.user,
        connection=conn.id,
        session=session.id,
        resumed=resumed,
        replayed=len(replay),
    )
    started = time.monotonic()
    frames = gw.frames
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                conn.last_seen = time.monotonic()
                await frames.on_text(conn, msg.data)
            elif msg.type is WSMsgType.BINARY:
                conn.last_seen = time.monotonic()
                frames.on_binary(conn)
    except Exception:
        gw.log.exception("connection handler failed", extra={"fields": {"connection": conn.id}})
        await conn.close(CloseCode.INTERNAL_ERROR, "internal error")
    finally:
        conn.closing = True
        conn.cancel_timers()
        gw.connections.remove(conn)
        gw.sessions.detach(session, conn)
        gw.metrics.connections.dec()
        code = conn.closed_with or ws.close_code  # aiohttp reports 1000 for its own closes
        gw.metrics.closes.labels(_close_label(code)).inc()
        if code in _CLIENT_CLOSES and session.connection is None and not gw.draining:
            for run in list(session.inflight.values()):  # the user left: stop the agent
                if run.origin is conn:
                    run.task.cancel()
        log_event(
            gw.log,
            "disconnect",
            request_id=request[REQUEST_ID],
            user=conn.user,
            connection=conn.id,
            session=session.id,
            close_code=code,
            duration_s=round(time.monotonic() - started, 3),
        )
    return ws


def _close_label(code: int | None) -> str:
    """Known close codes by number; clients' own 3000-4999 codes share one (bounded series)."""
    if code is None:
        return "none"
    return str(code) if code < 3000 or code in (4001, 4003) else "other"


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


async def metrics(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
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


async def admin_broadcast(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.json_response(
            {"error": "invalid_json", "detail": "the body must be JSON"}, status=400
        )
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message.strip() or len(message) > 4000:
        return web.json_response(
            {
                "error": "invalid_message",
                "detail": "'message' must be a non-empty string (max 4000)",
            },
            status=400,
        )
    delivered = await gw.store.broadcast(message)
    log_event(
        logging.getLogger("qa_ws.server"),
        "broadcast",
        user=request[CLAIMS].sub,
        delivered_to=delivered,
    )
    return web.json_response({"delivered_to": delivered}, status=202)
