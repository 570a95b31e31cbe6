"""The gateway's one middleware: checks in order (request id, forwarded address, the
connection guard, origin allowlist, authentication), then the caps and slots a ``/ws``
connection holds for its life.

Each check either passes the request on (perhaps a clone, with the address a trusted proxy
gave) or answers it with a refusal, and the first refusal ends the request. They are plain
functions run by one middleware, not a middleware each: a WebSocket handler runs for its
connection's whole life inside every middleware around it, and each of those frames (with
aiohttp's wrapper) stayed with every idle connection, about 250 bytes apiece.

Every refusal happens before the upgrade, as an HTTP answer with the protocol's JSON body
``{"error": CODE, "detail": TEXT}``; none of them ever logs or echoes a token.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from qa_ws_cli.auth.tokens import Claims
from qa_ws_cli.errors import AuthError
from qa_ws_cli.protocol.codes import BEARER_PREFIX, HandshakeError
from qa_ws_cli.server.gateway import GATEWAY, Gateway
from qa_ws_cli.server.guard import SERVER_HEADER, GuardedHandler
from qa_ws_cli.server.keys import CLAIMS, REQUEST_ID, SLOT
from qa_ws_cli.server.logs import log_event

WS_PATH = "/ws"
ADMIN_PREFIX = "/admin/"
FILES_PATH = "/files"
_SESSION_ID = re.compile(r"[0-9a-f]{32}")  # how sessions are named (secrets.token_hex(16))
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
log = logging.getLogger("qa_ws.server")

Check = Callable[[web.Request], Awaitable[web.Request | web.StreamResponse]]
"""A request on its way in: the request to go on with, or the answer that ends it."""


def refusal(
    gw: Gateway,
    request: web.Request,
    status: int,
    error: str,
    detail: str,
    headers: Mapping[Any, str] | None = None,
) -> web.Response:
    gw.metrics.refused.labels(error).inc()
    log_event(
        log,
        "refused",
        request_id=request.get(REQUEST_ID, "-"),
        remote=request.remote,
        path=request.path,
        status=status,
        error=error,
    )
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response the app prepares (``on_response_prepare``): no version in ``Server``,
    no MIME sniffing, no referrer. (Requests aiohttp cannot parse get the same from the guard.)"""
    response.headers[hdrs.SERVER] = SERVER_HEADER
    response.headers.setdefault(hdrs.X_CONTENT_TYPE_OPTIONS, "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")


def _guarded(path: str) -> bool:
    return (
        path in (WS_PATH, FILES_PATH)
        or path.startswith(ADMIN_PREFIX)
        or path.startswith(FILES_PATH + "/")
    )


def _signed_file_url(request: web.Request) -> bool:
    """A ``GET /files/{id}`` that carries its own signature (checked by the handler)."""
    return (
        request.method == hdrs.METH_GET
        and request.path.startswith(FILES_PATH + "/")
        and ("sig" in request.query or "exp" in request.query)
    )


def gateway_middleware(checks: Sequence[Check]) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        for check in checks:
            outcome = await check(request)
            if isinstance(outcome, web.StreamResponse):
                return outcome
            request = outcome
        if request.path != WS_PATH:
            return await handler(request)
        gw = request.app[GATEWAY]
        slot = await _take_slots(gw, request)
        if not isinstance(slot, str):
            return slot
        try:  # held for the connection's whole life, in this frame: no other frame waits
            return await handler(request)
        finally:
            await _give_back_slots(gw, request, slot)

    return middleware


async def request_id(request: web.Request) -> web.Request:
    given = request.headers.get("X-Request-ID", "")
    request[REQUEST_ID] = given if _REQUEST_ID_RE.match(given) else secrets.token_hex(8)
    return request


def forwarded_address(trusted: Sequence[IPv4Network | IPv6Network]) -> Check:
    """Behind a trusted proxy, the client is the last X-Forwarded-For hop the proxies did not add.

    Only a request whose peer is one of ``server.trusted_proxies`` may say so; anyone else's
    header is ignored, so a client cannot choose its own address (and its anonymous identity).
    """

    def is_trusted(address: str) -> bool:
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in trusted)

    async def check(request: web.Request) -> web.Request:
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded and request.remote is not None and is_trusted(request.remote):
            hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
            while hops and is_trusted(hops[-1]):
                hops.pop()
            if hops and _looks_like_ip(hops[-1]):
                return request.clone(remote=hops[-1])
        return request

    return check


def _looks_like_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


async def connection_guard(request: web.Request) -> web.Request | web.StreamResponse:
    """Tell the connection's guard (``server/guard.py``) that its first request arrived, and
    from which address (resolved through ``trusted_proxies``); over the per-address cap: 429."""
    protocol = request.protocol
    over_cap = (
        isinstance(protocol, GuardedHandler)
        and not protocol.started
        and not protocol.request_started(request.remote)
    )
    if over_cap and isinstance(protocol, GuardedHandler):
        response = refusal(
            request.app[GATEWAY],
            request,
            429,
            HandshakeError.TOO_MANY_CONNECTIONS,
            f"at most {protocol.guard.max_per_ip} connections per client address",
            {hdrs.RETRY_AFTER: "5"},
        )
        response.force_close()
        return response
    return request


async def allowed_origin(request: web.Request) -> web.Request | web.StreamResponse:
    """Exact match against the gateway's allowlist (the config's, plus its own page's origins)."""
    origin = request.headers.get(hdrs.ORIGIN)
    allowed = request.app[GATEWAY].allowed_origins
    if origin is not None and origin not in allowed and _guarded(request.path):
        return refusal(
            request.app[GATEWAY],
            request,
            403,
            HandshakeError.ORIGIN_NOT_ALLOWED,
            "this origin is not in the server's allowlist",
        )
    return request


def bearer_token(request: web.Request) -> str | None:
    """The protocol's three carriers, in order: header, subprotocol, query parameter."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    for offered in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(","):
        offered = offered.strip()
        if offered.startswith(BEARER_PREFIX) and len(offered) > len(BEARER_PREFIX):
            return offered[len(BEARER_PREFIX) :]
    return request.query.get("token") or None


async def authenticate(request: web.Request) -> web.Request | web.StreamResponse:
    """The token of a guarded path (``/ws``, ``/admin/``, ``/files``): verified, not revoked,
    with the scope the path needs; its claims go on the request."""
    if not _guarded(request.path) or _signed_file_url(request):
        return request
    gw = request.app[GATEWAY]
    needed = "admin" if request.path.startswith(ADMIN_PREFIX) else "chat"
    if gw.verifier is None:
        request[CLAIMS] = Claims(
            sub=await _anonymous_user(gw, request),
            exp=float("inf"),
            iat=0.0,
            jti=None,
            scopes=frozenset({"chat"}),
            raw={},
        )
        if needed == "admin":
            return refusal(
                gw,
                request,
                403,
                HandshakeError.INSUFFICIENT_SCOPE,
                "the admin API needs authentication to be enabled",
            )
        return request
    challenge = {hdrs.WWW_AUTHENTICATE: 'Bearer error="invalid_token"'}
    token = bearer_token(request)
    if token is None:
        return refusal(
            gw,
            request,
            401,
            HandshakeError.MISSING_TOKEN,
            "send a token: Authorization: Bearer, subprotocol bearer.<jwt>, or ?token=",
            challenge,
        )
    try:
        claims = await gw.verifier.averify(token)
    except AuthError as exc:
        return refusal(gw, request, 401, exc.code, exc.message, challenge)
    if gw.revocations.is_revoked(claims.jti, claims.sub, claims.iat):
        return refusal(
            gw,
            request,
            401,
            HandshakeError.TOKEN_REVOKED,
            "this token has been revoked",
            challenge,
        )
    if not claims.has_scope(needed):
        return refusal(
            gw,
            request,
            403,
            HandshakeError.INSUFFICIENT_SCOPE,
            f"the token lacks the '{needed}' scope",
        )
    request[CLAIMS] = claims
    return request


async def _anonymous_user(gw: Gateway, request: web.Request) -> str:
    """Without authentication each connection is its own user, ``anon-<random>``; resuming a
    session (on any instance) makes it that session's user again: the session id is the only
    credential."""
    session_id = request.query.get("session_id")
    if session_id and request.path == WS_PATH and _SESSION_ID.fullmatch(session_id):
        try:
            record = await gw.store.resume(session_id, -1)
        except Exception:  # a store that fails means a fresh anonymous user, never a 500
            record = None
        if record is not None and record.user.startswith("anon-"):
            return record.user
    return f"anon-{secrets.token_hex(8)}"


async def _take_slots(gw: Gateway, request: web.Request) -> web.StreamResponse | str:
    """Draining and connection caps: a slot on this server, and one of the user's slots on
    every instance (through the store); the user slot's key, or the refusal."""
    if gw.draining:
        return refusal(
            gw,
            request,
            503,
            HandshakeError.DRAINING,
            "the server is shutting down; reconnect shortly",
            {hdrs.RETRY_AFTER: str(max(1, gw.settings.shutdown.reconnect_after_ms // 1000))},
        )
    if not gw.connections.reserve():
        return refusal(
            gw,
            request,
            503,
            HandshakeError.SERVER_FULL,
            "the server is at its connection limit",
            {hdrs.RETRY_AFTER: "5"},
        )
    user, key = request[CLAIMS].sub, f"{gw.instance}:{secrets.token_hex(6)}"
    max_per_user = gw.settings.server.max_connections_per_user
    try:
        reserved = await gw.store.reserve_connection(user, key, max_per_user)
    except BaseException:
        gw.connections.release()
        raise
    if not reserved:
        gw.connections.release()
        return refusal(
            gw,
            request,
            429,
            HandshakeError.TOO_MANY_CONNECTIONS,
            f"at most {max_per_user} connections per user",
            {hdrs.RETRY_AFTER: "5"},
        )
    request[SLOT] = key
    return key


async def _give_back_slots(gw: Gateway, request: web.Request, key: str) -> None:
    try:
        await gw.store.release_connection(request[CLAIMS].sub, key)
    finally:
        gw.connections.release()
