"""The ``qa-ws`` command: one Typer app, one sub-app or command per module."""

from __future__ import annotations

from typing import Annotated

import typer

from qa_ws_cli import __version__
from qa_ws_cli.cli import admin, bench, config_cmd, demo, repl, send, serve, status, token
from qa_ws_cli.cli.help import Command, Group
from qa_ws_cli.cli.stdout import StdoutUnwritable, flush_stdout, guard_stdout, report_unwritable

HELP = """A real-time WebSocket gateway for a QA agent, and the tools to operate and load-test it.

Options mean the same in every command: -u/--url, -t/--token, --sub, -c/--config,
-a/--agent, --json (a flag). Each command's --help has examples.

Examples:
  qa-ws serve --dev
  qa-ws token issue --sub you
  qa-ws send "how do I test a login form?" --sub you
  qa-ws demo
"""

app = typer.Typer(
    name="qa-ws",
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=Group,
)
app.command("serve", cls=Command)(serve.command)
app.command("send", cls=Command)(send.command)
app.command("bench", cls=Command)(bench.command)
app.command("repl", cls=Command)(repl.command)
app.command("demo", cls=Command)(demo.command)
app.add_typer(token.app, name="token")
# the operator's commands (admin API; README "Operating the service")
app.command("status", cls=Command)(status.command)
app.command("connections", cls=Command)(admin.connections)
app.command("notify", cls=Command)(admin.notify)
app.command("disconnect", cls=Command)(admin.disconnect)
app.command("broadcast", cls=Command)(admin.broadcast)
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
    """qa-ws: serve, talk to and load-test the QA agent's WebSocket gateway."""


def main() -> None:
    guard_stdout()
    try:
        app()  # standalone: it always ends with SystemExit
    except SystemExit:
        try:
            flush_stdout()
        except StdoutUnwritable as exc:
            raise SystemExit(report_unwritable(exc)) from None
        raise
    except StdoutUnwritable as exc:  # a print, a table: `qa-ws token issue … > /dev/full`
        raise SystemExit(report_unwritable(exc)) from None
