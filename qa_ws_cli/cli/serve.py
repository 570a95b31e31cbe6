"""``qa-ws serve``: run the gateway."""

from __future__ import annotations

import asyncio
import shlex
from typing import Annotated, Any

import typer

from qa_ws_cli.agents.registry import load_agent
from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.cli.common import ConfigOption, err_console, fail, failures, settings_from
from qa_ws_cli.config import Settings, ensure_secret
from qa_ws_cli.errors import ConfigError
from qa_ws_cli.server.logs import configure_logging
from qa_ws_cli.server.redis_store import RedisStore
from qa_ws_cli.server.runner import serve
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
        typer.Option("--dev", help="Ephemeral signing secret; print a ready token and send line."),
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
        settings = ensure_secret(settings, dev=dev)
    except ConfigError as exc:
        fail(exc.message)
    with failures():
        backend = load_agent(settings.agent)
        configure_logging(settings.logging)
        store: Store | None = RedisStore(settings.store.url) if settings.store.url else None
        asyncio.run(
            serve(
                settings,
                backend,
                store=store,
                on_ready=lambda url: _announce(settings, url, dev, store),
            )
        )


def _announce(settings: Settings, url: str, dev: bool, store: Store | None) -> None:
    auth = settings.security.authentication.enabled
    err_console.print(
        f"[bold green]qa-ws[/] listening on [bold]{url}[/] "
        f"(agent: {settings.agent.spec}, auth: {'on' if auth else 'OFF'}, "
        f"store: {store.name if store else 'memory'})"
    )
    page = url.replace("ws", "http", 1).removesuffix("/ws") + "/"
    err_console.print(f"chat page: {page}   health: {page}healthz   metrics: {page}metrics")
    if dev and auth:
        token, _ = issue_token(settings, "dev", ttl_s=24 * 3600, scope="chat admin")
        err_console.print("[yellow]dev mode[/]: ephemeral secret; this token (sub=dev) lives 24 h:")
        print(token, flush=True)
        line = (
            f"qa-ws send {shlex.quote('how do I test a login form?')} --url {url} --token {token}"
        )
        err_console.print("try:")
        print(line, flush=True)
