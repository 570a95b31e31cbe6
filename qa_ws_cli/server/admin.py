"""The admin API (``/admin/``; the auth middleware lets only ``admin`` tokens in): broadcast,
notify one user, list and disconnect live connections, cluster-wide through the store.

Every body goes through one hardened reader (bounded in time and size, a known charset, a
depth and number size Python can parse) and strict validation: unknown fields, wrong types and
oversize values get 400 with a JSON ``{"error", "detail"}`` body, never a 500.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

from aiohttp import web

from qa_ws_cli.server.admission import ADMIN, admitted
from qa_ws_cli.server.gateway import GATEWAY
from qa_ws_cli.server.keys import CLAIMS
from qa_ws_cli.server.logs import log_event

MAX_JSON_DIGITS = 100  # an admin body never needs longer numbers; Python's own cap is 4,300
MAX_MESSAGE_CHARS = 4000
MAX_SUB_CHARS = 256
_CONNECTION_ID = re.compile(r"[0-9a-f]{16}")  # as the handler names connections
log = logging.getLogger("qa_ws.server")


class BodyError(Exception):
    """A request the admin API refuses; ``response`` is the 4xx answer to send."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def refuse(error: str, detail: str, status: int = 400) -> BodyError:
    return BodyError(web.json_response({"error": error, "detail": detail}, status=status))


_UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})  # ASCII: a subset of it


async def json_body(request: web.Request, timeout_s: float) -> object:
    """The body as JSON, or ``BodyError`` with the answer to send (never a 500)."""
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise refuse("invalid_json", "the body did not arrive in time", 408) from None
    except web.HTTPRequestEntityTooLarge:
        raise refuse("invalid_json", "the body is too large", 413) from None
    except web.RequestPayloadError:  # its Content-Encoding does not decode
        if request.content.exception() is not None:
            request.content.feed_eof()  # else aiohttp drains it after the answer, and fails again
        refused = refuse("invalid_json", "the body could not be decoded (Content-Encoding)")
        refused.response.force_close()  # where the next request would start is unknown
        raise refused from None
    if (request.charset or "utf-8").lower() not in _UTF8_CHARSETS:  # RFC 8259: JSON is UTF-8
        raise refuse("invalid_json", "the body must be JSON in UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise refuse("invalid_json", "the body must be JSON in UTF-8") from None
    try:
        body = json.loads(
            text,
            parse_int=_bounded_int,
            parse_float=_bounded_float,
            parse_constant=_no_constant,
            object_pairs_hook=_unique_keys,
        )
        # a lone surrogate (``"\ud800"``) parses, but no store, frame or log can carry it
        json.dumps(body, ensure_ascii=False).encode()
    except (ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        raise refuse("invalid_json", "the body must be JSON (UTF-8 text, unique keys)") from None
    return body


def _bounded(number: str) -> str:
    """A JSON number's text, refused past ``MAX_JSON_DIGITS`` characters."""
    if len(number) > MAX_JSON_DIGITS:
        raise ValueError("number too long")
    return number


def _bounded_int(digits: str) -> int:
    return int(_bounded(digits))


def _bounded_float(text: str) -> float:
    value = float(_bounded(text))
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    body = dict(pairs)
    if len(body) != len(pairs):
        raise ValueError("duplicate key")
    return body


async def json_object(request: web.Request, allowed: set[str]) -> dict[str, Any]:
    body = await json_body(request, request.app[GATEWAY].settings.server.handshake_timeout_s)
    if not isinstance(body, dict):
        raise refuse("invalid_request", "the body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise refuse("unknown_fields", f"unknown field(s) {shown}; allowed: {sorted(allowed)}")
    return body


def valid_sub(value: object, field: str = "user") -> str:
    """A user id as a token's ``sub`` can carry it: a printable string of 1 to 256 chars."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > MAX_SUB_CHARS
        or not value.isprintable()
    ):
        raise refuse(
            "invalid_user",
            f"{field!r} must be a user id (a token's sub): 1 to {MAX_SUB_CHARS} printable chars",
        )
    return value


def valid_message(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_MESSAGE_CHARS:
        raise refuse(
            "invalid_message",
            f"'message' must be a non-empty string (max {MAX_MESSAGE_CHARS})",
        )
    return value


def valid_data(value: object, max_bytes: int) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise refuse("invalid_data", "'data' must be a JSON object")
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_bytes:
        raise refuse(
            "data_too_large", f"'data' is {size} bytes as compact JSON; the limit is {max_bytes}"
        )
    return value


# -- handlers ------------------------------------------------------------------------------------


async def broadcast(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    try:
        body = await json_object(request, {"message"})
        message = valid_message(body.get("message"))
    except BodyError as exc:
        return exc.response
    delivered = await gw.store.broadcast(message)
    log_event(log, "broadcast", user=request[CLAIMS].sub, delivered_to=delivered)
    return web.json_response({"delivered_to": delivered}, status=202)


async def notify(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    try:
        body = await json_object(request, {"user", "message", "data"})
        user = valid_sub(body.get("user"))
        message = valid_message(body.get("message"))
        data = valid_data(body.get("data"), gw.settings.notifications.max_data_bytes)
    except BodyError as exc:
        return exc.response
    result = await gw.operator.notify(user, message, data)
    log_event(
        log,
        "notify",
        admin=request[CLAIMS].sub,
        user=user,
        delivered_to=result.delivered_to,
        stored=result.stored,
    )
    return web.json_response(
        {"delivered_to": result.delivered_to, "stored": result.stored}, status=202
    )


async def connections(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    unknown = sorted(set(request.query) - {"user", "token"})  # token: a carrier (admission)
    try:
        if unknown:
            raise refuse("unknown_fields", "unknown query parameter(s); allowed: ['user']")
        user = valid_sub(request.query["user"]) if "user" in request.query else None
    except BodyError as exc:
        return exc.response
    reports = await gw.store.cluster_connections()
    listed = [
        c
        for report in reports
        for c in report["connections"]
        if isinstance(c, dict) and (user is None or c.get("user") == user)
    ]
    instances = [
        {
            "instance": r.get("instance"),
            "name": r.get("name"),
            "version": r.get("version"),
            "connections": len(r["connections"]),
        }
        for r in reports
    ]
    return web.json_response({"instances": instances, "connections": listed})


async def disconnect(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    try:
        body = await json_object(request, {"user", "connection_id"})
        if ("user" in body) == ("connection_id" in body):
            raise refuse("invalid_request", "give exactly one of 'user' or 'connection_id'")
        user = valid_sub(body["user"]) if "user" in body else None
        conn_id = body.get("connection_id")
        if user is None and not (isinstance(conn_id, str) and _CONNECTION_ID.fullmatch(conn_id)):
            raise refuse("invalid_connection_id", "'connection_id' must be 16 hex digits")
    except BodyError as exc:
        return exc.response
    closed = await gw.store.disconnect(user, conn_id if user is None else None)
    log_event(log, "disconnect_request", admin=request[CLAIMS].sub, user=user, closed=closed)
    return web.json_response({"disconnected": closed})


def setup(app: web.Application) -> None:
    app.router.add_post("/admin/broadcast", admitted(broadcast, ADMIN))
    app.router.add_post("/admin/notify", admitted(notify, ADMIN))
    app.router.add_get("/admin/connections", admitted(connections, ADMIN))
    app.router.add_post("/admin/disconnect", admitted(disconnect, ADMIN))
