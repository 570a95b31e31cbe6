"""Run the app until a signal: the first SIGTERM/SIGINT drains, a second one stops at once."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import socket
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
BACKLOG = 2048


class BindError(ConfigError):
    """The listening socket could not be had: ``errno`` says why (EADDRINUSE, EACCES, ...)."""

    def __init__(self, host: str, port: int, exc: OSError) -> None:
        where = f"[{host}]:{port}" if ":" in host else f"{host or '*'}:{port}"
        if isinstance(exc, socket.gaierror) or not exc.errno:
            reason = exc.strerror or str(exc)
        else:  # not create_server's "(while attempting to bind ...)" suffix
            reason = os.strerror(exc.errno)
        super().__init__(f"cannot listen on {where}: {reason}", path="websocket.server.port")
        self.host, self.port = host, port
        self.errno = errno.EADDRNOTAVAIL if isinstance(exc, socket.gaierror) else exc.errno


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for every address ``host`` names, bound before the app starts so a
    failure has nothing to undo (no startup, no drain); with port 0 they share one free port."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise BindError(host, port, exc) from None
    addresses = dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos)
    sockets: list[socket.socket] = []
    try:
        for family, sockaddr in addresses:
            chosen = sockets[0].getsockname()[1] if sockets else port
            address = (sockaddr[0], chosen, *sockaddr[2:])
            sockets.append(socket.create_server(address, family=family, backlog=BACKLOG))
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise BindError(host, port, exc) from None
    return sockets


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
    sockets = bind(settings.server.host, settings.server.port)  # before anything else starts
    raise_open_files_limit()
    app = create_app(settings, agent, store)
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=settings.shutdown.drain_timeout_s + 2.0
    )
    try:
        listeners = await _listen(runner, settings, sockets, tls)
    except BaseException:
        for sock in sockets:
            sock.close()
        await runner.cleanup()
        raise
    loop = asyncio.get_running_loop()
    port = sockets[0].getsockname()[1]
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
    # What start-up made (modules, the app, pydantic's schemas) lives as long as the process:
    # frozen, full collections no longer walk it, and their pauses shrink (the gc module's
    # advice for servers; docs/performance.md has the p99 it bought).
    gc.collect()
    gc.freeze()
    if on_ready is not None:
        on_ready(url)
    try:
        await stop.wait()
        await app[GATEWAY].drain()  # still listening: newcomers get 503 draining meanwhile
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        for listener in listeners:
            listener.close()  # stop accepting; runner.cleanup closes the connections
        await runner.cleanup()


async def _listen(
    runner: web.AppRunner,
    settings: Settings,
    sockets: list[socket.socket],
    tls: ssl.SSLContext | None,
) -> list[asyncio.Server]:
    """Start the app and serve it on the bound sockets through the connection guard."""
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
    # not web.TCPSite: its protocol factory cannot be chosen (see server/guard.py)
    return [
        await loop.create_server(factory, sock=sock, ssl=tls, backlog=BACKLOG) for sock in sockets
    ]
