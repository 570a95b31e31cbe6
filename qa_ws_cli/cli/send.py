"""``qa-ws send``: one message, or stdin's lines, to the agent; answers stream to stdout."""

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
    fail,
    failures,
    settings_from,
)
from qa_ws_cli.client.connection import ClientOptions, QaWsClient
from qa_ws_cli.client.files import upload_file
from qa_ws_cli.client.output import Output, unless_closed
from qa_ws_cli.client.progress import StderrProgress
from qa_ws_cli.client.text import text_problem, undecoded


def command(
    message: Annotated[
        str, typer.Argument(help="The question, or - to send stdin's lines one by one.")
    ],
    url: UrlOption = None,
    token: TokenOption = None,
    sub: Annotated[
        str | None,
        typer.Option(
            "--sub", help="Mint a token for this user (with the secret, or serve --dev's)."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every received event as one JSON line.")
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for each answer.")
    ] = 60.0,
    carrier: CarrierOption = "header",
    origin: Annotated[str | None, typer.Option("--origin", help="Origin header to send.")] = None,
    reconnect: Annotated[
        bool, typer.Option("--reconnect/--no-reconnect", help="Resume after a lost connection.")
    ] = True,
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--file",
            help="Upload this file (POST /files) and attach it to the (first) message; repeatable.",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Send a message and stream the agent's answer to stdout; exit 0 after agent_response.

    Examples:
      qa-ws send "how do I test a login form?" --url ws://127.0.0.1:8765/ws --token "$TOKEN"
      cat questions.txt | qa-ws send - --token "$TOKEN"
      qa-ws send "why did this fail?" --file junit.xml --file screen.png --token "$TOKEN"

    Tool progress goes to stderr (running lookup_test_plan(feature="login")… done in 120 ms).

    Exit codes: 1 config, 2 usage, 3 handshake refused, 4 connection lost, 5 error event,
    6 timeout, 141 stdout closed by its reader (as `| head`).
    """
    if timeout <= 0:
        fail("--timeout must be positive", EXIT_USAGE)
    settings = settings_from(config).settings
    messages = _stdin_messages() if message == "-" else [message]
    if not messages or not all(m.strip() for m in messages):
        fail("nothing to send: the message is empty", EXIT_USAGE)
    problem = text_problem(message)
    if problem is not None:
        fail(f"the message is not valid text: {problem}", EXIT_USAGE)
    options = client_options(
        settings,
        url=url,
        token=token,
        sub=sub,
        carrier=carrier,
        origin=origin,
        reconnect=reconnect,
        connect_timeout=min(timeout, 15.0),
    )
    with failures(options):
        asyncio.run(_send_all(options, messages, as_json, timeout, files or []))


def _stdin_messages() -> list[str]:
    """stdin's non-blank lines; one that is not UTF-8 text stops it all before anything is
    sent (a usage error naming the line), as a bad argument does."""
    messages = []
    for number, line in enumerate(undecoded(sys.stdin), start=1):
        text = line.rstrip("\r\n")
        problem = text_problem(text)
        if problem is not None:
            fail(f"stdin line {number} is not valid text: {problem}; nothing was sent", EXIT_USAGE)
        if text.strip():
            messages.append(text)
    return messages


async def _send_all(
    options: ClientOptions, messages: list[str], as_json: bool, timeout: float, files: list[Path]
) -> None:
    client = QaWsClient(options)
    out = Output(sys.stdout)
    if as_json:
        client.on_event = lambda event: out.write(event.model_dump_json(exclude_none=True) + "\n")
    out.watch()
    try:
        await unless_closed(out, _ask_each(client, out, messages, as_json, timeout, files))
    finally:
        out.unwatch()
        await client.close()


def _note(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


async def _ask_each(
    client: QaWsClient,
    out: Output,
    messages: list[str],
    as_json: bool,
    timeout: float,
    files: list[Path],
) -> None:
    connect_first = not client.options.token  # without a token an upload names its session
    if connect_first:
        await client.connect()
    uploaded = [
        await upload_file(client.options, path, session_id=client.session_id) for path in files
    ]
    attachments = tuple(f.file_id for f in uploaded)
    if not connect_first:
        await client.connect()
    for text in messages:
        streamed = False
        progress = None if as_json else StderrProgress(_note)

        def on_delta(piece: str) -> None:
            nonlocal streamed
            streamed = True
            if not as_json:
                out.write(piece)

        answer = await client.ask(
            text, timeout=timeout, on_delta=on_delta, on_event=progress, attachments=attachments
        )
        attachments = ()  # the files go with the first message only
        if progress is not None:
            progress.finish()
        if not as_json:
            out.write(("" if streamed else answer.content) + "\n")
