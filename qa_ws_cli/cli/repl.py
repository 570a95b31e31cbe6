"""``qa-ws repl``: talk to the agent interactively, or line by line from a pipe."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from qa_ws_cli.cli.common import (
    EXIT_USAGE,
    CarrierOption,
    ConfigOption,
    TokenOption,
    UrlOption,
    client_options,
    exit_code_for,
    fail,
    failures,
    settings_from,
)
from qa_ws_cli.client.connection import ClientOptions, QaWsClient
from qa_ws_cli.client.plain import run_plain, stdin_lines
from qa_ws_cli.client.text import undecoded


def command(
    url: UrlOption = None,
    token: TokenOption = None,
    sub: Annotated[
        str | None,
        typer.Option(
            "--sub",
            help="Mint tokens for this user (with the secret, or serve --dev's); "
            "fresh ones on reconnect.",
        ),
    ] = None,
    history: Annotated[
        Path | None,
        typer.Option(
            "--history",
            dir_okay=False,
            help="History file (default $XDG_STATE_HOME/qa-ws/history, "
            "~/.local/state/qa-ws/history when XDG_STATE_HOME is unset).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Start with the raw event view on.")
    ] = False,
    plain: Annotated[
        bool,
        typer.Option(
            "--plain", help="Line mode even on a terminal (the default when stdin is a pipe)."
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Line mode: seconds to wait for each answer.")
    ] = 120.0,
    max_reconnects: Annotated[
        int,
        typer.Option(
            "--max-reconnects", help="Attempts (with backoff) before the connection is given up."
        ),
    ] = 12,
    carrier: CarrierOption = "header",
    origin: Annotated[str | None, typer.Option("--origin", help="Origin header to send.")] = None,
    config: ConfigOption = None,
) -> None:
    """Talk to the agent: line editing, history, streamed Markdown answers, slash commands.

    Keys: Enter sends, Alt-Enter (or Esc then Enter) adds a line, Tab completes a command,
    Ctrl-C cancels the answer in flight, Ctrl-D leaves. /help lists the slash commands.

    With stdin from a pipe (or --plain): each line is a message or a slash command,
    answers go to stdout as plain text, everything else to stderr.

    Examples:
      qa-ws repl --url ws://127.0.0.1:8765/ws --token "$TOKEN"
      printf 'how do I test a login form?\\n/ping\\n' | qa-ws repl --token "$TOKEN"

    Exit codes: 1 config, 2 usage, 3 handshake refused, 4 connection lost for good,
    5 an answer was an error event, 6 timeout, 141 stdout closed by its reader.
    """
    if timeout <= 0:
        fail("--timeout must be positive", EXIT_USAGE)
    if max_reconnects < 0:
        fail("--max-reconnects must not be negative", EXIT_USAGE)
    settings = settings_from(config).settings
    options = client_options(
        settings,
        url=url,
        token=token,
        sub=sub,
        carrier=carrier,
        origin=origin,
        reconnect=True,
        max_reconnects=max_reconnects,
        connect_timeout=10.0,
    )
    interactive = not plain and sys.stdin.isatty() and sys.stdout.isatty()
    with failures(options):  # a refused token gets the CLI's hint there
        if interactive:
            from qa_ws_cli.client.repl import Repl  # prompt_toolkit only when it is used

            code = asyncio.run(Repl(QaWsClient(options), history=history, as_json=as_json).run())
        else:
            code = asyncio.run(_plain(options, as_json, timeout))
    raise typer.Exit(code)


async def _plain(options: ClientOptions, as_json: bool, timeout: float) -> int:
    errors = await run_plain(
        QaWsClient(options),
        stdin_lines(undecoded(sys.stdin)),  # a line that is not UTF-8: an error for that line
        sys.stdout,
        sys.stderr,
        as_json=as_json,
        timeout=timeout,
    )
    return exit_code_for(errors[-1]) if errors else 0
