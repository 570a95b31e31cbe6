"""``qa-ws status``: one server's health at a glance, or refreshed in place with ``--watch``."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from qa_ws_cli.cli.admin import ADMIN_HINT, admin_client
from qa_ws_cli.cli.common import (
    EXIT_REFUSED,
    EXIT_USAGE,
    ConfigOption,
    TokenOption,
    UrlOption,
    checked_token,
    fail,
    failures,
    out_console,
    run_async,
)
from qa_ws_cli.client.admin import AdminClient, printable
from qa_ws_cli.client.status import Status, StatusProbe


def command(
    url: UrlOption = None,
    token: TokenOption = None,
    metrics_token: Annotated[
        str | None,
        typer.Option(
            "--metrics-token",
            envvar="QA_WS_METRICS_TOKEN",
            help="Bearer token for /metrics when it differs from --token (metrics.token).",
            callback=checked_token,
        ),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh in place until Ctrl-C.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", help="Seconds between the two /metrics readings.")
    ] = 1.0,
    config: ConfigOption = None,
) -> None:
    """Readiness checks, version, instance, connections, sessions, chats/s and p95 latency
    (from two readings of /metrics), errors by code and, with an admin token and a store, the
    instances of the cluster. Exit 0 when ready, 1 when not ready, 3 when the token is refused
    (invalid, or without the admin scope), 4 when unreachable.

    Examples:
      qa-ws status --url http://127.0.0.1:8765
      qa-ws status --url http://10.0.0.5:8765 --token "$ADMIN_TOKEN" --watch
    """
    if not 0.1 <= interval <= 60:
        fail("--interval must be between 0.1 and 60 seconds", EXIT_USAGE)
    client = admin_client(url, token, config, need_token=False)
    probe = StatusProbe(client, metrics_token=metrics_token or token, interval_s=interval)
    with failures():
        status: Status = run_async(lambda: _watch(client, probe) if watch else _once(client, probe))
    if status.token_refused is not None:
        fail(f"{status.token_refused.message}; the admin API needs {ADMIN_HINT}", EXIT_REFUSED)
    if status.ready is not True:
        raise typer.Exit(1)


async def _once(client: AdminClient, probe: StatusProbe) -> Status:
    async with client:
        status = await probe.read()
    out_console.print(render(status, live=False))
    return status


async def _watch(client: AdminClient, probe: StatusProbe) -> Status:
    async with client:
        status = await probe.read()
        with Live(render(status), console=out_console, auto_refresh=False) as live:
            try:
                while True:
                    await asyncio.sleep(probe.interval_s)
                    status = await probe.read()
                    live.update(render(status), refresh=True)
            except (KeyboardInterrupt, asyncio.CancelledError):
                return status


def _fmt(value: float | None, unit: str = "", scale: float = 1.0, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}{unit}"


def render(status: Status, *, live: bool = True) -> Group:
    """The status view; ``live`` (--watch) also notes a refused token (once: an error after)."""
    ready = (
        "?" if status.ready is None else "[green]ready[/]" if status.ready else "[red]not ready[/]"
    )
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    checks = "  ".join(
        f"{escape(printable(k))} {'[green]ok[/]' if v else '[red]failing[/]'}"
        for k, v in status.checks.items()
    )
    rows = [
        ("server", escape(status.url)),
        ("readiness", f"{ready}  {checks}"),
        ("version", escape(printable(status.version))),
        ("instance", escape(printable(f"{status.instance} ({status.name})"))),
        ("connections", f"{status.connections:.0f}"),
        ("sessions", f"{status.sessions:.0f}"),
        ("answers in flight", f"{status.in_flight:.0f}"),
        ("chats/s", _fmt(status.chats_per_s, digits=2)),
        ("p95 latency", _fmt(status.p95_s, " ms", 1000, 0)),
        ("errors by code", _errors(status)),
    ]
    if status.instances is not None:
        rows.append(("instances", _instances(status)))
    for key, value in rows:
        table.add_row(key, value)
    problems = list(status.problems)
    if live and status.token_refused is not None:
        problems.append(f"instances: {status.token_refused.message}")
    notes = [Text(f"note: {printable(p)}", style="yellow") for p in problems]
    return Group(table, *notes)


def _errors(status: Status) -> str:
    if not status.errors:
        return "none"
    ordered = sorted(status.errors.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{escape(printable(code))} {n:.0f}" for code, n in ordered)


def _instances(status: Status) -> str:
    parts = []
    for item in status.instances or []:
        me = " (this one)" if item.get("instance") == status.instance else ""
        name = printable(f"{item.get('instance')} {item.get('name')} v{item.get('version')}")
        parts.append(f"{escape(name)}: {item.get('connections', 0)} connection(s){me}")
    return "\n".join(parts) or "none answered"
