"""Run the app until a signal: the first SIGTERM/SIGINT drains, a second one stops at once."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from collections.abc import Callable

from aiohttp import web

from qa_ws_cli.agents.base import Agent
from qa_ws_cli.config import Settings
from qa_ws_cli.errors import ConfigError
from qa_ws_cli.server.app import create_app
from qa_ws_cli.server.gateway import GATEWAY
from qa_ws_cli.server.guard import ConnectionGuard, raise_open_files_limit
from qa_ws_cli.server.logs import AccessLogger
from qa_ws_cli.server.store import Store

log = logging.getLogger("qa_ws.server")


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    tls = settings.server.ssl
    if tls.certfile is None and tls.keyfile is None:
        return None
    if tls.certfile is None or tls.keyfile is None:
        raise ConfigError(
            "TLS needs both server.ssl.certfile and keyfile", path="websocket.server.ssl"
        )
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(tls.certfile, tls.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the TLS certificate or key: {exc}", path="websocket.server.ssl"
        ) from None
    return ctx


async def serve(
    settings: Settings,
    agent: Agent,
    store: Store | None = None,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT; ``on_ready`` gets the ws:// or wss:// URL once listening."""
    tls = ssl_context(settings)
    raise_open_files_limit()
    app = create_app(settings, agent, store)
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=settings.shutdown.drain_timeout_s + 2.0
    )
    await runner.setup()
    loop = asyncio.get_running_loop()
    guard = ConnectionGuard(settings.server)
    loop.set_exception_handler(guard.exception_handler)
    assert runner.server is not None
    factory = guard.handler_factory(
        runner.server,
        access_log_class=AccessLogger,
        access_log=logging.getLogger("aiohttp.access"),
        keepalive_timeout=settings.server.keepalive_timeout_s,
    )
    try:  # not web.TCPSite: its protocol factory cannot be chosen (see server/guard.py)
        listener = await loop.create_server(
            factory, settings.server.host, settings.server.port, ssl=tls, backlog=2048
        )
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            f"cannot listen on {settings.server.host}:{settings.server.port}: {exc.strerror}",
            path="websocket.server.port",
        ) from None
    port = listener.sockets[0].getsockname()[1] if listener.sockets else settings.server.port
    app[GATEWAY].allow_own_origins(port, tls is not None)
    url = f"{'wss' if tls else 'ws'}://{settings.server.host}:{port}/ws"
    stop = asyncio.Event()
    signals = 0

    def on_signal() -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("signal received: draining (send it again to stop at once)")
            stop.set()
        else:
            log.warning("second signal: stopping now")
            os._exit(130)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    if on_ready is not None:
        on_ready(url)
    try:
        await stop.wait()
        await app[GATEWAY].drain()  # still listening: newcomers get 503 draining meanwhile
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        listener.close()  # stop accepting; runner.cleanup closes the connections
        await runner.cleanup()
