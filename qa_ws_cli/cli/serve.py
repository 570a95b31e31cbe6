"""``qa-ws serve``: run the gateway."""

from __future__ import annotations

import asyncio
import errno
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from qa_ws_cli.agents.registry import load_agent
from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.cli.common import ConfigOption, err_console, fail, failures, settings_from
from qa_ws_cli.config import Settings, ensure_secret
from qa_ws_cli.errors import ConfigError
from qa_ws_cli.server.logs import configure_logging
from qa_ws_cli.server.redis_store import RedisStore
from qa_ws_cli.server.runner import BindError, serve
from qa_ws_cli.server.store import Store


def command(
    host: Annotated[
        str | None, typer.Option("--host", help="Address to bind (default 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option("--port", "-p", help="Port (default 8765; 0 picks a free one).")
    ] = None,
    agent: Annotated[
        str | None,
        typer.Option(
            "--agent", "-a", help="demo, echo, agno+http://…, openai+http://…, python:mod:attr"
        ),
    ] = None,
    agent_model: Annotated[
        str | None, typer.Option("--agent-model", help="Model name for openai+ agents.")
    ] = None,
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            help="Without a configured secret, keep one in $XDG_STATE_HOME/qa-ws/dev-secret "
            "(~/.local/state/qa-ws/dev-secret when XDG_STATE_HOME is unset); "
            "print a token, a signed-in page URL and a send line.",
        ),
    ] = False,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept connections without a token (local use only).")
    ] = False,
    log_format: Annotated[str | None, typer.Option("--log-format", help="console or json.")] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING, ERROR.")
    ] = None,
    demo_latency_ms: Annotated[
        float | None, typer.Option("--demo-latency-ms", help="Latency of the demo agent.")
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help="Share sessions, limits and revocations with other instances (store.url).",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Run the WebSocket gateway in front of the agent until SIGTERM/SIGINT (drains first).

    Exit codes: 0 stopped after a drain, 1 configuration, 2 cannot listen (port in use, ...).

    Examples:
      qa-ws serve --dev
      WEBSOCKET_SECRET_KEY=... qa-ws serve --host 0.0.0.0 --agent agno+http://127.0.0.1:7777/agents/qa
      WEBSOCKET_SECRET_KEY=... qa-ws serve --port 8766 --redis-url redis://127.0.0.1:6379/0
    """
    overrides: dict[str, Any] = {
        "server": {"host": host, "port": port},
        "agent": {"spec": agent, "model": agent_model, "demo_latency_ms": demo_latency_ms},
        "logging": {"format": log_format, "level": log_level.upper() if log_level else None},
        "security": {"authentication": {"enabled": False if no_auth else None}},
        "store": {"url": redis_url},
    }
    settings = settings_from(config, overrides).settings
    try:
        settings, dev_secret = ensure_secret(settings, dev=dev)
    except ConfigError as exc:
        fail(exc.message)
    with failures():
        backend = load_agent(settings.agent)
        configure_logging(settings.logging)
        store: Store | None = RedisStore(settings.store.url) if settings.store.url else None
        loop_name, loop_factory = event_loop(settings.server.event_loop)
        try:
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                runner.run(
                    serve(
                        settings,
                        backend,
                        store=store,
                        on_ready=lambda url: _announce(
                            settings, url, dev, store, dev_secret, loop_name
                        ),
                    )
                )
        except BindError as exc:
            fail(_bind_hint(exc), EXIT_CANNOT_LISTEN)


EXIT_CANNOT_LISTEN = 2


def event_loop(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    """uvloop when asked for or (``auto``) when it is installed, else asyncio's own loop."""
    if choice != "asyncio":
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                fail(
                    "server.event_loop is uvloop, but uvloop is not installed (pip install uvloop)"
                )
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", None


def _bind_hint(exc: BindError) -> str:
    """The bind error, and what to do about it in terms of this command's flags."""
    if exc.errno == errno.EADDRINUSE:
        other = 8766 if exc.port == 8765 else exc.port + 1 if 0 < exc.port < 65535 else 8765
        return (
            f"{exc.message} (another qa-ws serve?): choose another port with --port {other}, "
            "or --port 0 for a free one"
        )
    if exc.errno == errno.EACCES:
        return f"{exc.message}: ports below 1024 need privileges; use --port 1024 or above"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{exc.message}: --host must be an address of this machine "
            "(127.0.0.1, or 0.0.0.0 for every interface)"
        )
    return f"{exc.message}: check --host and --port"


def _page_url(url: str) -> str:
    """The chat page of the server at ``url``, on an address a browser here can open."""
    page = url.replace("ws", "http", 1).removesuffix("/ws") + "/"
    return page.replace("//0.0.0.0:", "//127.0.0.1:", 1).replace("//:::", "//[::1]:", 1)


def _announce(
    settings: Settings,
    url: str,
    dev: bool,
    store: Store | None,
    dev_secret: Path | None,
    loop_name: str,
) -> None:
    auth = settings.security.authentication.enabled
    err_console.print(
        f"[bold green]qa-ws[/] listening on [bold]{url}[/] "
        f"(agent: {settings.agent.spec}, auth: {'on' if auth else 'OFF'}, "
        f"store: {store.name if store else 'memory'}, loop: {loop_name})"
    )
    page = _page_url(url)
    err_console.print(f"chat page: {page}   health: {page}healthz   metrics: {page}metrics")
    if dev and auth:
        if dev_secret is not None:
            err_console.print(
                f"[yellow]dev mode[/]: signing secret kept in {dev_secret} (mode 0600), so tokens "
                "survive restarts; more with: qa-ws token issue --sub you",
                markup=True,
            )
        else:
            err_console.print("[yellow]dev mode[/]: signing with the configured secret")
        token, _ = issue_token(settings, "dev", ttl_s=24 * 3600, scope="chat admin")
        err_console.print(
            "a token for sub=dev (24 h), the chat page signed in with it, and a line to try:"
        )
        print(token, flush=True)
        print(f"{page}#token={token}", flush=True)
        line = (
            f"qa-ws send {shlex.quote('how do I test a login form?')} --url {url} --token {token}"
        )
        print(line, flush=True)
