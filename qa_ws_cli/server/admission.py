"""What every request passes before its route's handler runs, in order: its request id, the
address a trusted proxy gave, the connection guard, the origin allowlist and the token (the
last two only on a route that needs a token); then, for ``/ws``, the caps and slots the
connection holds for its life.

There is no aiohttp middleware: a WebSocket handler runs for its connection's whole life
inside every middleware around it, and those frames (ours and the one aiohttp adds to any app
with middlewares) stayed with every idle connection, about 630 bytes apiece. An HTTP route's
handler is wrapped (``admitted``), ``/ws`` admits its request itself (``handlers.websocket``),
and a request that no route matched (404, 405) is admitted as an open route's would be when its
answer is prepared (``request_id_header``).

Each refusal happens before the upgrade, as an HTTP answer with the protocol's JSON body
``{"error": CODE, "detail": TEXT}``; none of them ever logs or echoes a token.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from qa_ws_cli.auth.tokens import NO_PAYLOAD, Claims
from qa_ws_cli.errors import AuthError
from qa_ws_cli.protocol.codes import BEARER_PREFIX, HandshakeError
from qa_ws_cli.server.gateway import Gateway
from qa_ws_cli.server.guard import SERVER_HEADER, GuardedHandler, in_networks
from qa_ws_cli.server.keys import CLAIMS, REQUEST_ID, REQUEST_ID_HEADER, new_request_id
from qa_ws_cli.server.logs import log_event, loggable_path

_SESSION_ID = re.compile(r"[0-9a-f]{32}")  # how sessions are named (secrets.token_hex(16))
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_ANONYMOUS_SCOPES = frozenset({"chat"})
log = logging.getLogger("qa_ws.server")


@dataclass(frozen=True, slots=True)
class Policy:
    """What a route asks of a request before its handler runs."""

    scope: str | None = None  # the token's scope it needs; None: open to anyone
    signed_urls: bool = False  # a request signed by the server itself (``?exp&sig``) needs none
    resumes: bool = False  # an anonymous client resuming a session becomes that session's user


OPEN = Policy()
CHAT = Policy("chat")
ADMIN = Policy("admin")
SIGNED_FILE = Policy("chat", signed_urls=True, resumes=True)
WEBSOCKET = Policy("chat", resumes=True)
UPLOAD = Policy("chat", resumes=True)  # without authentication: ?session_id= names the owner


@dataclass(frozen=True, slots=True)
class Admitted:
    request: web.Request  # the one to go on with: a clone with a trusted proxy's client address
    request_id: str
    claims: Claims | None  # None on an open route and for a signed URL
    remote: str | None  # the client's address (``request.remote``, which it does not cache)


@dataclass(frozen=True, slots=True)
class _Refusal:
    status: int
    error: str
    detail: str
    headers: Mapping[str, str] | None = None
    close: bool = False  # the connection too, once answered

    def answer(self, gw: Gateway, request: web.Request) -> web.Response:
        response = refusal(gw, request, self.status, self.error, self.detail, self.headers)
        if self.close:
            response.force_close()
        return response


def refusal(
    gw: Gateway,
    request: web.Request,
    status: int,
    error: str,
    detail: str,
    headers: Mapping[Any, str] | None = None,
    request_id: str | None = None,
) -> web.Response:
    """The refusal's answer and its log line; ``request_id``, when the request does not carry
    its id yet (an admitted WebSocket request), is written on it first, for both."""
    if request_id is not None:
        request[REQUEST_ID] = request_id
    gw.metrics.refused.labels(error).inc()
    log_event(
        log,
        "refused",
        request_id=request.get(REQUEST_ID, "-"),
        remote=request.remote,
        path=loggable_path(request.rel_url.raw_path),  # the path only: no query
        status=status,
        error=error,
    )
    return web.json_response({"error": error, "detail": detail}, status=status, headers=headers)


class Admission:
    """The checks, configured once from the settings; ``admit`` runs them on a request."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.trusted: Sequence[IPv4Network | IPv6Network] = gw.settings.server.trusted_proxies
        self.check_origin = gw.settings.security.cors.enabled

    async def admit(self, request: web.Request, policy: Policy) -> Admitted | web.Response:
        """The request admitted (with its id and claims), or the answer that refuses it.

        Nothing is written on an admitted request (a WebSocket's request lives as long as its
        connection); a refused one gets its id, for the refusal's log line and header."""
        given = request.headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _REQUEST_ID_RE.match(given) else new_request_id()
        original = request
        if self.trusted:
            request = self._forwarded(request)
        # a clone has its remote from the start; else it is read off the socket, not through
        # request.remote: a WebSocket's request lives as long as its connection, and the cache
        # of its reified values outgrows its first table at the sixth (+208 bytes)
        remote = request.remote if request is not original else _peer_host(request.protocol)
        outcome: Claims | _Refusal | None = self._over_address_cap(request, remote)
        if outcome is None and policy.scope is not None:
            outcome = await self._token_holder(request, policy)
        if isinstance(outcome, _Refusal):
            original[REQUEST_ID] = request[REQUEST_ID] = request_id
            return outcome.answer(self.gw, request)
        return Admitted(request, request_id, outcome, remote)

    def _forwarded(self, request: web.Request) -> web.Request:
        """Behind a trusted proxy, the client is the last X-Forwarded-For hop the proxies did
        not add. Only a request whose peer is one of ``server.trusted_proxies`` may say so;
        anyone else's header is ignored, so a client cannot choose its own address (and its
        anonymous identity)."""
        forwarded = request.headers.get("X-Forwarded-For")
        if forwarded and request.remote is not None and self._is_trusted(request.remote):
            hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
            while hops and self._is_trusted(hops[-1]):
                hops.pop()
            if hops and _looks_like_ip(hops[-1]):
                return request.clone(remote=hops[-1])
        return request

    def _is_trusted(self, address: str) -> bool:
        return in_networks(address, self.trusted)

    def _over_address_cap(self, request: web.Request, remote: str | None) -> _Refusal | None:
        """Tell the connection's guard (``server/guard.py``) that its first request arrived, and
        from which address (resolved through ``trusted_proxies``); over the per-address cap: 429."""
        protocol = request.protocol
        if (
            isinstance(protocol, GuardedHandler)
            and not protocol.started
            and not protocol.request_started(remote)
        ):
            return _Refusal(
                429,
                HandshakeError.TOO_MANY_CONNECTIONS,
                f"at most {protocol.guard.max_per_ip} connections per client address",
                {hdrs.RETRY_AFTER: "5"},
                close=True,
            )
        return None

    async def _token_holder(self, request: web.Request, policy: Policy) -> Claims | _Refusal | None:
        """A route that needs a token: the origin allowlist (exact match), then the token,
        verified, not revoked, with the scope the route needs."""
        origin = request.headers.get(hdrs.ORIGIN)
        if self.check_origin and origin is not None and origin not in self.gw.allowed_origins:
            return _Refusal(
                403,
                HandshakeError.ORIGIN_NOT_ALLOWED,
                "this origin is not in the server's allowlist",
            )
        if policy.signed_urls and _self_signed(request):
            return None  # its signature is checked by the handler
        verifier = self.gw.verifier
        if verifier is None:
            if policy.scope != "chat":
                return _Refusal(
                    403,
                    HandshakeError.INSUFFICIENT_SCOPE,
                    "the admin API needs authentication to be enabled",
                )
            user = await self._anonymous_user(request) if policy.resumes else _anonymous()
            return Claims(user, float("inf"), 0.0, None, _ANONYMOUS_SCOPES, NO_PAYLOAD)
        token = bearer_token(request)
        if token is None:
            return _unauthorized(
                HandshakeError.MISSING_TOKEN,
                "send a token: Authorization: Bearer, subprotocol bearer.<jwt>, or ?token=",
            )
        try:
            claims = await verifier.averify(token)
        except AuthError as exc:
            return _unauthorized(exc.code, exc.message)
        if self.gw.revocations.is_revoked(claims.jti, claims.sub, claims.iat):
            return _unauthorized(HandshakeError.TOKEN_REVOKED, "this token has been revoked")
        if not claims.has_scope(policy.scope or ""):
            return _Refusal(
                403,
                HandshakeError.INSUFFICIENT_SCOPE,
                f"the token lacks the '{policy.scope}' scope",
            )
        return claims

    async def _anonymous_user(self, request: web.Request) -> str:
        """Without authentication each connection is its own user, ``anon-<random>``; resuming
        a session (on any instance) makes it that session's user again: the session id is the
        only credential."""
        session_id = request.rel_url.query.get("session_id")
        if session_id and _SESSION_ID.fullmatch(session_id):
            try:
                record = await self.gw.store.resume(session_id, -1)
            except Exception:  # a store that fails means a fresh anonymous user, never a 500
                record = None
            if record is not None and record.user.startswith("anon-"):
                return record.user
        return _anonymous()


def _anonymous() -> str:
    return f"anon-{secrets.token_hex(8)}"


def _unauthorized(error: str, detail: str) -> _Refusal:
    return _Refusal(401, error, detail, {hdrs.WWW_AUTHENTICATE: 'Bearer error="invalid_token"'})


def _looks_like_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True


def _peer_host(protocol: web.RequestHandler) -> str | None:
    """What ``request.remote`` says when no proxy was trusted: the socket's peer."""
    peer = protocol.peername
    if isinstance(peer, (list, tuple)):
        return str(peer[0])
    return None if peer is None else str(peer)


def _self_signed(request: web.Request) -> bool:
    """A ``GET`` (or ``HEAD``) ``/files/{id}`` that carries its own signature (checked by the
    handler)."""
    signed = "sig" in request.query or "exp" in request.query
    return signed and request.method in (hdrs.METH_GET, hdrs.METH_HEAD)


def bearer_token(request: web.Request) -> str | None:
    """The protocol's three carriers, in order: header, subprotocol, query parameter."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    if header[:7].lower() == "bearer " and header[7:].strip():
        return header[7:].strip()
    for offered in request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(","):
        offered = offered.strip()
        if offered.startswith(BEARER_PREFIX) and len(offered) > len(BEARER_PREFIX):
            return offered[len(BEARER_PREFIX) :]
    return request.rel_url.query.get("token") or None


ADMISSION = web.AppKey("admission", Admission)


def admitted(handler: Handler, policy: Policy) -> Handler:
    """An HTTP route's handler behind the admission: it gets the request (a trusted proxy's
    clone) with its id and claims on it, or never runs."""

    async def route(request: web.Request) -> web.StreamResponse:
        outcome = await request.app[ADMISSION].admit(request, policy)
        if isinstance(outcome, web.StreamResponse):
            return outcome
        request[REQUEST_ID] = outcome.request[REQUEST_ID] = outcome.request_id
        if outcome.claims is not None:
            outcome.request[CLAIMS] = outcome.claims
        return await handler(outcome.request)

    return route


async def request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    """On every response the app prepares (``on_response_prepare``): its ``X-Request-ID``. A
    request no route matched (404, 405) has not been admitted yet: it is now, as an open
    route's, so that the guard counts it too (the answer stays; over the cap, the connection
    closes after it)."""
    request_id = request.get(REQUEST_ID)
    if request_id is None:
        if REQUEST_ID_HEADER in response.headers:  # a WebSocket's 101 carries its own
            return
        outcome = await request.app[ADMISSION].admit(request, OPEN)
        if isinstance(outcome, web.StreamResponse):
            response.force_close()
            request_id = request[REQUEST_ID]
        else:
            request_id = request[REQUEST_ID] = outcome.request_id  # for the access log line
    response.headers[REQUEST_ID_HEADER] = request_id


EXPECTATION_FAILED = json.dumps(
    {"error": "expectation_failed", "detail": "only Expect: 100-continue is supported"}
)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response the app prepares (``on_response_prepare``): no version in ``Server``,
    no MIME sniffing, no referrer. (Requests aiohttp cannot parse get the same from the guard.)"""
    response.headers[hdrs.SERVER] = SERVER_HEADER
    response.headers.setdefault(hdrs.X_CONTENT_TYPE_OPTIONS, "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.status == 417 and isinstance(response, web.Response):
        # aiohttp's answer to an Expect other than 100-continue echoes the header's value
        response.content_type = "application/json"
        response.text = EXPECTATION_FAILED


async def take_slots(
    gw: Gateway, request: web.Request, user: str, key: str, request_id: str
) -> web.Response | None:
    """A ``/ws`` connection's caps (and draining): a slot on this server, and one of the user's
    slots on every instance (through the store), held as ``key`` (the connection's id); None
    once both are held, else the refusal."""
    if gw.draining:
        return refusal(
            gw,
            request,
            503,
            HandshakeError.DRAINING,
            "the server is shutting down; reconnect shortly",
            {hdrs.RETRY_AFTER: str(max(1, gw.settings.shutdown.reconnect_after_ms // 1000))},
            request_id,
        )
    if not gw.connections.reserve():
        return refusal(
            gw,
            request,
            503,
            HandshakeError.SERVER_FULL,
            "the server is at its connection limit",
            {hdrs.RETRY_AFTER: "5"},
            request_id,
        )
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
            request_id,
        )
    return None


async def give_back_slots(gw: Gateway, user: str, key: str) -> None:
    try:
        await gw.store.release_connection(user, key)
    finally:
        gw.connections.release()
