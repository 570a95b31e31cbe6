"""The repl's line mode, for scripts, and the slash commands both modes share.

Without a terminal there is nobody to edit lines, see a status line or press Ctrl-C, so
each stdin line is one message (or one slash command), each answer is one plain stdout
block, and everything meant for a human goes to stderr: a script can pipe stdout
onward and still learn from the exit status that the connection was lost for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TextIO

from qa_ws_cli.client.attach import NextMessage, command_arg
from qa_ws_cli.client.connection import QaWsClient
from qa_ws_cli.client.output import Output, OutputClosed, unless_closed
from qa_ws_cli.client.progress import StderrProgress
from qa_ws_cli.client.tokens import token_rows
from qa_ws_cli.errors import ClientTimeout, ConnectionLost, HandshakeRefused, QaWsError
from qa_ws_cli.protocol.events import ServerEvent, SystemEvent

COMMANDS: dict[str, str] = {
    "/help": "list the commands and keys",
    "/ping": "measure the round trip to the server",
    "/session": "show the session, connection and server in use",
    "/token": "show the claims and expiry of the token in use",
    "/json": "toggle the raw event view (every received event as JSON)",
    "/attach": "upload a file for the next message: /attach PATH (repeatable)",
    "/tools": "toggle the tool details (each call's arguments and result)",
    "/reconnect": "drop the connection and resume the session",
    "/quit": "leave (also /exit)",
}
ALIASES = {"/exit": "/quit", "/q": "/quit", "/?": "/help"}
KEYS: tuple[tuple[str, str], ...] = (  # of the interactive mode; /help shows them
    ("Enter", "send the message"),
    ("Alt-Enter / Esc Enter", "insert a newline (multi-line message)"),
    ("Tab", "complete a slash command"),
    ("Up / Down", "walk the history (kept across runs)"),
    ("Ctrl-C", "cancel the answer in flight; again within 2 s, or twice at a prompt: leave"),
    ("Ctrl-D", "leave"),
    ("//text", "send a message that starts with /"),
)


class UnknownCommand(QaWsError):
    code = "unknown_command"


TOKEN_REFUSALS = frozenset({"invalid_token", "token_expired", "token_revoked"})


# what a token minted here and refused for its signature means (send/repl --sub, bench)
SHELL_KEY_MISMATCH = (
    "with this shell's key (WEBSOCKET_SECRET_KEY, or the development secret of "
    "`qa-ws serve --dev` when none is set) and the server uses another: "
    "set WEBSOCKET_SECRET_KEY to the server's key"
)
MINTED_WITH_ANOTHER_KEY = f"--sub signed the token {SHELL_KEY_MISMATCH}"
MINTED_WITH_OTHER_SETTINGS = (
    "--sub minted the token with this shell's settings and the server checks others: "
    "give the server's config (-c FILE) or its WEBSOCKET_SECURITY__AUTHENTICATION__* variables"
)


def explain(exc: QaWsError, *, minted: bool = False) -> str:
    """The error's one line, with what to do next when the CLI knows (a token problem).

    ``minted``: the token was minted here (``--sub``), so "get a fresh token" is no advice.
    """
    if isinstance(exc, HandshakeRefused) and minted and exc.error == "invalid_token":
        signature = "signature" in exc.message
        return f"{exc.message}; " + (
            MINTED_WITH_ANOTHER_KEY if signature else MINTED_WITH_OTHER_SETTINGS
        )
    if isinstance(exc, HandshakeRefused) and exc.error == "missing_token":
        return (
            f"the server wants a token (HTTP {exc.status} missing_token): pass --token TOKEN "
            "(or set QA_WS_TOKEN), or --sub USER to mint one with the server's secret"
        )
    if isinstance(exc, HandshakeRefused) and exc.error in TOKEN_REFUSALS:
        return (
            f"{exc.message}; get a fresh token (qa-ws token issue --sub USER) and pass it "
            "with --token or QA_WS_TOKEN, or use --sub USER"
        )
    return exc.message


def command_name(line: str) -> str | None:
    """The slash command a line invokes, or None when the line is a message.

    ``//text`` escapes a message that really starts with a slash.
    """
    if not line.startswith("/") or line.startswith("//"):
        return None
    name = line.split(maxsplit=1)[0].lower()
    name = ALIASES.get(name, name)
    if name not in COMMANDS:
        raise UnknownCommand(f"unknown command {name} (try /help)")
    return name


def message_text(line: str) -> str:
    return line[1:] if line.startswith("//") else line


def session_rows(client: QaWsClient) -> list[tuple[str, str]]:
    event = client.connected
    if event is None:
        return [("session", "none yet")]
    server = event.server or {}
    limits = event.limits or {}
    rows = [
        ("state", client.state),
        ("session", str(event.session_id)),
        ("resumed", f"{event.resumed} ({event.replayed or 0} events replayed)"),
        ("connection", str(event.connection_id)),
        ("user", str(event.user)),
        (
            "server",
            " ".join(str(server[k]) for k in ("name", "instance", "version") if k in server),
        ),
        ("url", client.options.url),
        ("last seq", str(client.last_seq)),
        ("reconnects", str(client.reconnects)),
        ("in flight", str(len(client.pending_ids()))),
    ]
    if limits:
        rows.append(("limits", ", ".join(f"{k}={v}" for k, v in limits.items())))
    return rows


async def reconnect(client: QaWsClient, failed: bool, timeout: float = 60.0) -> SystemEvent:
    """Resume now: a live connection is cut (the client's own reconnect resumes it), a
    connection that was given up is opened again by hand; returns the new ``connected``.
    """
    before = client.connected
    if failed:
        return await client.connect()
    await client.drop()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.state == "connected" and client.connected is not before:
            assert client.connected is not None
            return client.connected
        await asyncio.sleep(0.05)
    raise ClientTimeout(f"not reconnected within {timeout:g} s")


def event_json(event: ServerEvent) -> str:
    return event.model_dump_json(exclude_none=True)


async def stdin_lines(stream: Iterable[str]) -> AsyncIterator[str]:
    """Lines as they come, read in a daemon thread so a still-open pipe never blocks exit."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed first: we are exiting
            for line in stream:
                loop.call_soon_threadsafe(queue.put_nowait, line)
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="qa-ws-stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line


class Narrator:
    """The connection's story in one line per turn (lost, reconnecting, reconnected with the
    session resumed or renewed, given up), told the same way in both modes.

    The client only reports states; "given up" shows as its event stream raising, which
    ``watch`` turns into ``on_lost``.
    """

    def __init__(
        self, client: QaWsClient, note: Callable[[str], None], alert: Callable[[str], None]
    ) -> None:
        self.client = client
        self.note = note
        self.alert = alert
        self.outage_since: float | None = None
        self.gave_up: QaWsError | None = None
        self.on_reconnected: Callable[[SystemEvent], None] = lambda event: None
        self.on_lost: Callable[[QaWsError], None] = lambda exc: None
        self.on_change: Callable[[], None] = lambda: None
        self._announced = False
        self._connected_once = False

    def state(self, state: str) -> None:
        event = self.client.connected
        if state == "connected" and event is not None:
            if self.outage_since is not None:
                took = time.monotonic() - self.outage_since
                if event.resumed:
                    how = f"session resumed ({event.replayed or 0} events replayed)"
                else:
                    how = f"with a new session {str(event.session_id)[:8]} (the old one is gone)"
                self.note(f"reconnected after {took:.1f} s, {how}")
                self.on_reconnected(event)
            self.outage_since, self._announced, self.gave_up = None, False, None
            self._connected_once = True
        elif state == "disconnected" and self._connected_once and self.outage_since is None:
            self.outage_since = time.monotonic()
        elif state == "connecting" and self.outage_since is not None and not self._announced:
            self._announced = True
            self.note("connection lost — reconnecting…")
        self.on_change()

    def system(self, event: ServerEvent) -> None:
        if not isinstance(event, SystemEvent):
            return
        if event.event == "broadcast":
            self.alert(f"broadcast: {event.message}")
        elif event.event == "notification":
            self.alert(f"notification: {event.message}")
        elif event.event == "shutdown":
            self.note("the server is shutting down")
        elif event.event == "token_expiring":
            then = (
                "a fresh one is minted on reconnect"
                if self.client.options.token_factory
                else "get a fresh token before then"
            )
            self.note(f"the token expires at {event.expires_at}: {then}")

    async def watch(self) -> None:
        """Until the client is closed (its events end)."""
        while True:
            try:
                async for _ in self.client.events():
                    pass
                return
            except QaWsError as exc:
                self.gave_up = exc
                self.on_lost(exc)
                self.on_change()


class LineRepl:
    """Drives one client from a stream of lines; returns the errors it reported."""

    def __init__(
        self, client: QaWsClient, out: TextIO, err: TextIO, *, as_json: bool, timeout: float
    ) -> None:
        self.client = client
        self.out = Output(out)
        self.err = err
        self.as_json = as_json
        self.timeout = timeout
        self.errors: list[QaWsError] = []
        self.narrator = Narrator(client, self._note, self._note)
        self.next = NextMessage()
        self.details = False  # /tools: each tool's result preview too

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")

    def _note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def _on_event(self, event: ServerEvent) -> None:
        if self.as_json:
            self._print(event_json(event))
        else:
            self.narrator.system(event)

    async def run(self, lines: AsyncIterator[str]) -> list[QaWsError]:
        lost: asyncio.Future[QaWsError] = asyncio.get_running_loop().create_future()

        def on_lost(exc: QaWsError) -> None:
            if not lost.done():
                lost.set_result(exc)

        self.narrator.on_lost = on_lost
        self.client.on_event = self._on_event
        self.client.on_state = self.narrator.state
        watcher = asyncio.create_task(self.narrator.watch())
        self.out.watch()
        try:
            await unless_closed(self.out, self._session(lines, lost))
        finally:
            self.out.unwatch()
            watcher.cancel()
            await self.client.close()
        return self.errors

    async def _session(self, lines: AsyncIterator[str], lost: asyncio.Future[QaWsError]) -> None:
        await self.client.connect()
        await self._loop(lines, lost)

    async def _loop(self, lines: AsyncIterator[str], lost: asyncio.Future[QaWsError]) -> None:
        source = aiter(lines)
        while True:
            following = asyncio.ensure_future(anext(source, None))
            racing: set[asyncio.Future[Any]] = {following, lost}
            await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
            if lost.done():
                following.cancel()
                raise lost.result()
            raw = following.result()
            if raw is None:
                return
            line = raw.strip()
            if line and not await self._handle(line):
                return

    async def _handle(self, line: str) -> bool:
        try:
            name = command_name(line)
            if name is None:
                await self._ask(message_text(line))
                return True
            return await self._command(name, command_arg(line))
        except ConnectionLost:
            raise
        except QaWsError as exc:
            self.errors.append(exc)
            self._note(f"error: {exc.message}")
        return True

    async def _ask(self, text: str) -> None:
        progress = None if self.as_json else StderrProgress(self._write_err, details=self.details)
        files = self.next.take()
        answer = await self.client.ask(
            text, timeout=self.timeout, on_event=progress, attachments=files
        )
        if progress is not None:
            progress.finish()
        if not self.as_json:
            self._print(answer.content)

    def _write_err(self, text: str) -> None:
        self.err.write(text)
        self.err.flush()

    async def _command(self, name: str, arg: str = "") -> bool:
        rows: list[tuple[str, str]] = []
        if name == "/quit":
            return False
        if name == "/help":
            rows = [*COMMANDS.items(), KEYS[-1]]
        elif name == "/ping":
            rows = [("pong", f"{await self.client.ping():.2f} ms")]
        elif name == "/session":
            rows = session_rows(self.client)
        elif name == "/token":
            rows = token_rows(self.client.options.token)
        elif name == "/json":
            self.as_json = not self.as_json
            self._note(f"raw event view {'on' if self.as_json else 'off'}")
        elif name == "/reconnect":
            await reconnect(self.client, failed=False)  # the narrator tells what happened
        elif name == "/attach":
            self._note(await self.next.attach(self.client, arg))
        elif name == "/tools":
            self.details = not self.details
            self._note(f"tool details {'on' if self.details else 'off'}")
        for key, value in rows:
            self._print(f"{key}: {value}")
        return True


async def run_plain(
    client: QaWsClient,
    lines: AsyncIterator[str],
    out: TextIO,
    err: TextIO,
    *,
    as_json: bool = False,
    timeout: float = 120.0,
) -> list[QaWsError]:
    """Raises the error that ended the session (refused, lost for good, OutputClosed when
    stdout's reader left); returns the others."""
    return await LineRepl(client, out, err, as_json=as_json, timeout=timeout).run(lines)


__all__ = [
    "ALIASES",
    "COMMANDS",
    "KEYS",
    "LineRepl",
    "Narrator",
    "OutputClosed",
    "UnknownCommand",
    "command_name",
    "event_json",
    "explain",
    "message_text",
    "reconnect",
    "run_plain",
    "session_rows",
    "stdin_lines",
    "token_rows",
]
