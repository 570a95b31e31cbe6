"""The operator's commands over the admin API: ``notify``, ``connections``, ``disconnect``,
``broadcast``. Each needs a token with the ``admin`` scope (``--token`` or ``QA_WS_TOKEN``)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from qa_ws_cli.cli.common import (
    EXIT_FAILED,
    EXIT_REFUSED,
    EXIT_USAGE,
    ConfigOption,
    TokenOption,
    UrlOption,
    default_url,
    fail,
    failures,
    out_console,
    run_async,
    settings_from,
)
from qa_ws_cli.client.admin import AdminClient, printable
from qa_ws_cli.errors import HandshakeRefused

T = TypeVar("T")
ADMIN_HINT = "an admin token: qa-ws token issue --sub ops --scope admin"


def admin_client(
    url: str | None, token: str | None, config: Path | None, *, need_token: bool = True
) -> AdminClient:
    settings = settings_from(config).settings
    if need_token and not token:
        fail(f"pass --token (or set QA_WS_TOKEN) with {ADMIN_HINT}", EXIT_USAGE)
    try:
        return AdminClient(url or default_url(settings), token)
    except ValueError as exc:
        fail(f"--url {exc}", EXIT_USAGE)


def call(client: AdminClient, action: Callable[[AdminClient], Awaitable[T]]) -> T:
    """Run one request; errors become one line and an exit code (3: refused, 4: unreachable)."""

    async def run() -> T:
        async with client:
            return await action(client)

    with failures():
        try:
            result: T = run_async(run)
        except HandshakeRefused as exc:
            fail(f"{exc.message}; the admin API needs {ADMIN_HINT}", EXIT_REFUSED)
    return result


def notify(
    message: Annotated[str, typer.Argument(help="The notification's text.")],
    user: Annotated[str, typer.Option("--user", help="The user (token sub) to notify.")],
    data: Annotated[
        str | None, typer.Option("--data", help="A JSON object sent along (as 'data').")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Push a notification to one user: their live connections on every instance get it now,
    or it waits in their inbox for their next connect.

    Example:
      qa-ws notify --user alice "your nightly run finished" --data '{"run": 42}'
      qa-ws notify --user alice "deploy done" --url http://127.0.0.1:8765 --token "$ADMIN_TOKEN"
    """
    payload = _data(data) if data is not None else None
    client = admin_client(url, token, config)
    answer = call(client, lambda c: c.notify(user, message, payload))
    who = escape(printable(user))
    if answer.get("stored"):
        out_console.print(f"stored for {who}: no live connection; delivered at their next connect")
    else:
        out_console.print(
            f"delivered to {answer.get('delivered_to', 0)} live connection(s) of {who}"
        )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (the server refuses it)")


def _data(text: str) -> dict[str, Any]:
    """``--data`` as the JSON object the server accepts (no NaN or Infinity), or exit 2."""
    example = "--data must be a JSON object, e.g. '{\"run\": 42}'"
    try:
        payload = json.loads(text, parse_constant=_no_constant)
    except ValueError as exc:
        fail(f"{example}: {exc}" if "not JSON" in str(exc) else example, EXIT_USAGE)
    if not isinstance(payload, dict):
        fail(example, EXIT_USAGE)
    return payload


def connections(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON answer.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """List every live connection in the cluster (each instance answers for its own).

    Example:
      qa-ws connections --user alice --url http://127.0.0.1:8765 --token "$ADMIN_TOKEN"
    """
    client = admin_client(url, token, config)
    answer = call(client, lambda c: c.connections(user))
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    rows = answer.get("connections", [])
    table = Table(
        title=f"{len(rows)} live connection(s) on {len(answer.get('instances', []))} instance(s)"
    )
    columns = (
        "user",
        "connection_id",
        "session_id",
        "instance",
        "remote",
        "connected_since",
        "in_flight",
        "frames_in",
        "frames_out",
    )
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for row in rows:
        table.add_row(*(escape(printable(str(row.get(col, "")), 80)) for col in columns))
    out_console.print(table)


def disconnect(
    user: Annotated[str | None, typer.Option("--user", help="Close all of this user's.")] = None,
    connection_id: Annotated[
        str | None, typer.Option("--connection-id", help="Close this one connection.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Close live connections on whichever instance holds them (close code 4002); exit 1 when
    none matched.

    Examples:
      qa-ws disconnect --user alice --url http://127.0.0.1:8765 --token "$ADMIN_TOKEN"
      qa-ws disconnect --connection-id 3f9c2a1b0d4e5f60 --token "$ADMIN_TOKEN"
    """
    if (user is None) == (connection_id is None):
        fail("give exactly one of --user or --connection-id", EXIT_USAGE)
    client = admin_client(url, token, config)
    closed = call(client, lambda c: c.disconnect(user=user, connection_id=connection_id))
    if not closed:
        fail("no live connection matched", EXIT_FAILED)
    out_console.print(f"disconnected {closed} connection(s)")


def broadcast(
    message: Annotated[str, typer.Argument(help="The text every connection gets.")],
    url: UrlOption = None,
    token: TokenOption = None,
    config: ConfigOption = None,
) -> None:
    """Send a system_event broadcast to every live connection in the cluster.

    Example:
      qa-ws broadcast "maintenance at 18:00 UTC" --url http://127.0.0.1:8765 --token "$ADMIN_TOKEN"
    """
    client = admin_client(url, token, config)
    delivered = call(client, lambda c: c.broadcast(message))
    out_console.print(f"delivered to {delivered} connection(s)")
