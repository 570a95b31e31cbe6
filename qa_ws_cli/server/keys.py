"""Typed keys for what the admission leaves on an HTTP route's request for its handler."""

from __future__ import annotations

import secrets

from aiohttp import web

from qa_ws_cli.auth.tokens import Claims

REQUEST_ID = web.RequestKey("request_id", str)
CLAIMS = web.RequestKey("claims", Claims)
# set on a request aiohttp could not parse: its rate-limited ``bad_request`` line stands for it
UNPARSED = web.RequestKey("unparsed", bool)
REQUEST_ID_HEADER = "X-Request-ID"


def new_request_id() -> str:
    """A request's id when the client gave none usable (16 hex digits)."""
    return secrets.token_hex(8)
