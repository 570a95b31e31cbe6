"""Typed keys for what the middleware's checks leave on a request for the handlers."""

from __future__ import annotations

from aiohttp import web

from qa_ws_cli.auth.tokens import Claims

REQUEST_ID = web.RequestKey("request_id", str)
CLAIMS = web.RequestKey("claims", Claims)
SLOT = web.RequestKey("slot", str)  # the per-user connection slot held in the store
