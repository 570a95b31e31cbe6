"""The ``qa-ws`` command: one Typer app, one sub-app or command per module."""

from __future__ import annotations

from typing import Annotated

import typer

from qa_ws_cli import __version__
from qa_ws_cli.cli import admin, bench, config_cmd, demo, repl, send, serve, status, token

app = typer.Typer(
    name="qa-ws",
    help="A real-time WebSocket gateway for a QA agent, and the tools to operate and load-test it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve.command)
app.command("send")(send.command)
app.command("bench")(bench.command)
app.command("repl")(repl.command)
app.command("demo")(demo.command)
app.add_typer(token.app, name="token")
# the operator's commands (admin API; README "Operating the service")
app.command("status")(status.command)
app.command("connections")(admin.connections)
app.command("notify")(admin.notify)
app.command("disconnect")(admin.disconnect)
app.command("broadcast")(admin.broadcast)
app.add_typer(config_cmd.app, name="config")


def _version(value: bool) -> None:
    if value:
        print(f"qa-ws {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """qa-ws: serve, talk to and load-test the QA agent's WebSocket gateway.

    Start with: qa-ws serve --dev
    """


def main() -> None:
    app()
