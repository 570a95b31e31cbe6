"""``create_app``: the whole gateway as one ``web.Application``, everything injected."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from qa_ws_cli.agents.base import Agent
from qa_ws_cli.config import Settings
from qa_ws_cli.server import admin, files_http, handlers
from qa_ws_cli.server.admission import (
    ADMISSION,
    OPEN,
    Admission,
    admitted,
    request_id_header,
    security_headers,
)
from qa_ws_cli.server.files import FileStore
from qa_ws_cli.server.gateway import GATEWAY, Gateway
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
    app = web.Application(client_max_size=64 * 1024)  # no middleware: see server/admission.py
    app[GATEWAY] = gateway
    app[ADMISSION] = Admission(gateway)
    app.router.add_get("/ws", handlers.websocket)  # admits its own requests
    app.router.add_get("/healthz", admitted(handlers.healthz, OPEN))
    app.router.add_get("/readyz", admitted(handlers.readyz, OPEN))
    app.router.add_get("/metrics", admitted(handlers.metrics, OPEN))
    app[ASSETS] = Assets.load()
    app.router.add_get("/", admitted(handlers.index, OPEN))
    app.router.add_get("/static/{name:.+}", admitted(handlers.static, OPEN))
    admin.setup(app)
    files_http.setup(app, files, signer)
    app.cleanup_ctx.append(_lifetime)
    app.on_shutdown.append(_drain)
    app.on_response_prepare.append(request_id_header)
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
