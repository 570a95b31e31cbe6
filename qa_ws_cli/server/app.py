"""``create_app``: the whole gateway as one ``web.Application``, everything injected."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from qa_ws_cli.agents.base import Agent
from qa_ws_cli.config import Settings
from qa_ws_cli.server import admin, files_http, handlers
from qa_ws_cli.server.files import FileStore
from qa_ws_cli.server.gateway import GATEWAY, Gateway
from qa_ws_cli.server.keys import REQUEST_ID
from qa_ws_cli.server.middlewares import (
    Check,
    allowed_origin,
    authenticate,
    connection_guard,
    forwarded_address,
    gateway_middleware,
    request_id,
    security_headers,
)
from qa_ws_cli.server.store import MemoryStore, Store
from qa_ws_cli.server.web import ASSETS, Assets


def create_app(
    settings: Settings, agent: Agent, store: Store | None = None, files: FileStore | None = None
) -> web.Application:
    files = files if files is not None else files_http.file_store_for(settings)
    signer = files_http.signer_for(settings)
    gateway = Gateway(
        settings, agent, store if store is not None else MemoryStore(), files=files, signer=signer
    )
    cors = settings.security.cors
    checks: list[Check] = [request_id]
    if settings.server.trusted_proxies:
        checks.append(forwarded_address(settings.server.trusted_proxies))
    checks.append(connection_guard)
    if cors.enabled:
        checks.append(allowed_origin)
    checks.append(authenticate)
    app = web.Application(middlewares=[gateway_middleware(checks)], client_max_size=64 * 1024)
    app[GATEWAY] = gateway
    app.router.add_get("/ws", handlers.websocket)
    app.router.add_get("/healthz", handlers.healthz)
    app.router.add_get("/readyz", handlers.readyz)
    app.router.add_get("/metrics", handlers.metrics)
    app[ASSETS] = Assets.load()
    app.router.add_get("/", handlers.index)
    app.router.add_get("/static/{name:.+}", handlers.static)
    admin.setup(app)
    files_http.setup(app, files, signer)
    app.cleanup_ctx.append(_lifetime)
    app.on_shutdown.append(_drain)
    app.on_response_prepare.append(_request_id_header)
    app.on_response_prepare.append(security_headers)
    return app


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    gateway = app[GATEWAY]
    await gateway.store.start()
    await gateway.refresh_revocations()
    housekeeping = asyncio.get_running_loop().create_task(gateway.housekeeping_loop())
    yield
    housekeeping.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await housekeeping
    await gateway.aclose()


async def _drain(app: web.Application) -> None:
    await app[GATEWAY].drain()


async def _request_id_header(request: web.Request, response: web.StreamResponse) -> None:
    request_id = request.get(REQUEST_ID)
    if request_id:
        response.headers["X-Request-ID"] = request_id
