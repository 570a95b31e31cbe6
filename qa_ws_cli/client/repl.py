"""The interactive repl: the client a developer keeps open all day to talk to the agent.

The prompt and the answer take turns on the terminal. prompt_toolkit owns it while the user
types (history, completion, a status line; ``patch_stdout`` keeps event lines above the
prompt); while an answer streams, the terminal is in raw mode so Ctrl-C arrives as a key
(never a signal) and becomes a protocol ``cancel``, and a transient rich ``Live`` shows the
growing text, replaced by the rendered Markdown once ``agent_response`` has the whole of it.
Everything that can go wrong becomes one line, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Iterable, Iterator
from pathlib import Path
from typing import Any

from prompt_toolkit import PromptSession
from prompt_toolkit.application.current import get_app_or_none
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.input import Input, create_input
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.keys import Keys
from prompt_toolkit.patch_stdout import patch_stdout
from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.table import Table
from rich.text import Text

from qa_ws_cli.client.attach import NextMessage, command_arg
from qa_ws_cli.client.connection import QaWsClient
from qa_ws_cli.client.plain import (
    COMMANDS,
    KEYS,
    Narrator,
    command_name,
    event_json,
    explain,
    message_text,
    reconnect,
    session_rows,
    token_rows,
)
from qa_ws_cli.client.progress import summary_text
from qa_ws_cli.client.screen import (
    SlashCompleter,
    StreamingAnswer,
    default_history_path,
    open_history,
)
from qa_ws_cli.errors import ConnectionLost, HandshakeRefused, QaWsError, ServerError
from qa_ws_cli.protocol.events import AgentResponse, ServerEvent, SystemEvent

PROMPT = "qa\u203a "  # a quieter mark than ">"
EXIT_WINDOW_S = 2.0  # a second Ctrl-C within this long leaves
CANCEL_GRACE_S = 3.0  # how long to wait for the server to confirm a cancel


class Repl:
    """One client, one terminal; the user can only leave on purpose (/quit, Ctrl-D, Ctrl-C
    twice): a lost connection or a failed command is one line and the prompt comes back."""

    def __init__(
        self,
        client: QaWsClient,
        *,
        history: Path | None = None,
        as_json: bool = False,
        console: Console | None = None,
    ) -> None:
        self.client = client
        self.as_json = as_json
        self.console = console or Console(highlight=False)
        self.input: Input = create_input()
        history_store, self._history_problem = open_history(history)
        self.session: PromptSession[str] = PromptSession(
            history=history_store,
            completer=SlashCompleter(),
            complete_while_typing=True,
            auto_suggest=AutoSuggestFromHistory(),
            multiline=True,
            key_bindings=self._keys(),
            bottom_toolbar=self._toolbar,
            prompt_continuation="… ",
            refresh_interval=1.0,
            input=self.input,
        )
        self.narrator = Narrator(client, self.note, self._alert)
        self.narrator.on_reconnected = self._reconnected
        self.narrator.on_lost = self._lost
        self.narrator.on_change = self._refresh
        self._last_interrupt = 0.0
        self._typeahead = ""
        self._queued: list[str] = []  # lines typed and entered while an answer streamed
        self._answer: StreamingAnswer | None = None
        self.next = NextMessage()  # files from /attach
        self.details = False  # /tools
        self._last_latency_ms: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- output --------------------------------------------------------------------------

    def note(self, text: str) -> None:
        self.console.print(Text(text, style="dim"))

    def error(self, text: str) -> None:
        self.console.print(Text.assemble(("error: ", "bold red"), text))

    def _rows(self, rows: Iterable[tuple[str, str]]) -> None:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="dim", no_wrap=True)
        table.add_column(overflow="fold")
        for key, value in rows:
            table.add_row(key, value)
        self.console.print(table)

    def _refresh(self) -> None:
        app = get_app_or_none()
        if app is not None and app.is_running:
            app.invalidate()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the status line and the prompt ----------------------------------------------------

    def _state(self) -> tuple[str, str]:
        if self.narrator.gave_up is not None:
            return "disconnected", "bg:ansired fg:ansiwhite bold noreverse"
        if self.client.state == "connected":
            return "connected", "bg:ansigreen fg:ansiblack bold noreverse"
        label = "reconnecting…" if self.narrator.outage_since is not None else self.client.state
        return label, "bg:ansiyellow fg:ansiblack bold noreverse"

    def _toolbar(self) -> StyleAndTextTuples:
        label, style = self._state()
        parts: StyleAndTextTuples = [(style, f" ● {label} ")]
        event = self.client.connected
        if event is not None:
            parts.append(("", f"  {event.user}  session {str(event.session_id)[:8]}"))
        if self.client.last_rtt_ms is not None:
            parts.append(("", f"  rtt {self.client.last_rtt_ms:.1f} ms"))
        if self._last_latency_ms is not None:
            parts.append(("", f"  answer {self._last_latency_ms:.0f} ms"))
        if self.as_json:
            parts.append(("bold", "  [json]"))
        parts.append(("italic", "   Enter send · Alt-Enter newline · /help"))
        return parts

    def _prompt(self) -> StyleAndTextTuples:
        ok = self.client.state == "connected" and self.narrator.gave_up is None
        return [("ansigreen bold" if ok else "ansiyellow bold", PROMPT)]

    def _keys(self) -> KeyBindings:
        keys = KeyBindings()

        @keys.add("enter")
        @keys.add("c-j")
        def _send(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            state = buffer.complete_state
            if state is not None and state.current_completion is not None:
                buffer.apply_completion(state.current_completion)  # a command: run it at once
            buffer.validate_and_handle()

        @keys.add("escape", "enter")
        def _newline(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text("\n")

        @keys.add("c-c")
        def _interrupt(event: KeyPressEvent) -> None:
            if event.current_buffer.text:
                event.current_buffer.reset()
            else:
                event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

        return keys

    # -- connection events -----------------------------------------------------------------

    @property
    def _minted(self) -> bool:
        """The token is minted here (``--sub``): a refusal's hint must not say "get one"."""
        return self.client.options.token_factory is not None

    def _alert(self, text: str) -> None:
        self.console.print(Text(text, style="bold yellow"))

    def _reconnected(self, event: SystemEvent) -> None:
        if not event.resumed and self._answer is not None:
            self._answer.text = ""  # the question is resent and answered afresh
        self._spawn(self._quiet_ping())

    def _lost(self, exc: QaWsError) -> None:
        if isinstance(exc, HandshakeRefused):  # why it stopped, not the close that began it
            why = explain(exc, minted=self._minted)
            self.error(f"{why} (/reconnect tries again, /quit leaves)")
        else:
            self.note(f"connection lost: {exc.message} — /reconnect to try again, /quit to leave")

    def _on_event(self, event: ServerEvent) -> None:
        if self.as_json:
            self.console.print(Text(event_json(event)), soft_wrap=True)
        else:
            self.narrator.system(event)

    async def _quiet_ping(self) -> None:
        with contextlib.suppress(QaWsError):
            await self.client.ping(timeout=5.0)
        self._refresh()

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> int:
        """Raises the error of the first connect (the CLI maps it); 0 once the user leaves."""
        self.client.on_state = self.narrator.state
        self.client.on_event = self._on_event
        try:
            first = await self.client.connect()
        except BaseException:
            await self.client.close()
            raise
        where = f"{self.client.options.url} as {first.user}, session {str(first.session_id)[:8]}"
        self.console.print(Text.assemble(("qa-ws repl", "bold"), " connected to ", where))
        self.note("Enter sends · Alt-Enter adds a line · Ctrl-C cancels · Ctrl-D leaves · /help")
        if self._history_problem:
            self.note(self._history_problem)
        watcher = asyncio.create_task(self.narrator.watch())
        self._spawn(self._quiet_ping())
        try:
            while await self._turn():
                pass
        finally:
            watcher.cancel()
            for task in list(self._tasks):
                task.cancel()
            await self.client.close()
            self.note("bye")
        return 0

    async def _turn(self) -> bool:
        if self._queued:
            text = self._queued.pop(0)
            self.console.print(Text.assemble((PROMPT, "green bold"), text))
            self.session.history.append_string(text)
            return await self._handle(text)
        default, self._typeahead = self._typeahead, ""
        try:
            with patch_stdout(raw=True):
                text = await self.session.prompt_async(self._prompt, default=default)
        except KeyboardInterrupt:
            now = time.monotonic()
            if now - self._last_interrupt < EXIT_WINDOW_S:
                return False
            self._last_interrupt = now
            self.note("press Ctrl-C again or Ctrl-D to leave")
            return True
        except EOFError:
            return False
        return await self._handle(text)

    async def _handle(self, text: str) -> bool:
        line = text.strip()
        if not line:
            return True
        try:
            name = command_name(line)
            if name is None:
                return await self._ask(message_text(line))
            return await self._command(name, command_arg(line))
        except QaWsError as exc:  # UnknownCommand included
            self.error(explain(exc, minted=self._minted))
        return True

    async def _command(self, name: str, arg: str = "") -> bool:
        if name == "/quit":
            return False
        if name == "/attach":
            self.note(await self.next.attach(self.client, arg))
        elif name == "/tools":
            self.details = not self.details
            self.note(f"tool details {'on' if self.details else 'off'}")
        if name == "/help":
            self._rows(list(COMMANDS.items()))
            self._rows(KEYS)
        elif name == "/ping":
            if self.client.state != "connected":
                raise ConnectionLost("not connected")
            self.console.print(f"pong in {await self.client.ping(timeout=5.0):.2f} ms")
        elif name == "/session":
            self._rows(session_rows(self.client))
        elif name == "/token":
            self._rows(token_rows(self.client.options.token))
        elif name == "/json":
            self.as_json = not self.as_json
            self.note(f"raw event view {'on' if self.as_json else 'off'}")
        elif name == "/reconnect":
            failed = self.narrator.gave_up is not None
            if not failed and self.client.state != "connected":
                self.note("already reconnecting…")
            else:
                await reconnect(self.client, failed=failed)
        return True

    # -- one question, one answer -------------------------------------------------------------

    async def _ask(self, text: str) -> bool:
        """False when the user left while waiting (a second Ctrl-C)."""
        lost = self.narrator.gave_up
        if lost is not None:
            raise ConnectionLost(f"not connected ({lost.message}): /reconnect first")
        msg_id = self.client.new_id()
        answer = self._answer = StreamingAnswer()
        on_delta = None if self.as_json else answer.add
        future = await self.client.send_chat(
            text,
            msg_id=msg_id,
            on_delta=on_delta,
            on_event=answer.event,
            attachments=self.next.take(),
        )
        if self.client.state != "connected":
            self.note("not connected: the message goes out when the connection is back")
        try:
            leave = await self._wait(future, msg_id, answer)
        finally:
            self._answer = None
        if not leave:
            self._show(future, answer)
        return not leave

    @contextlib.contextmanager
    def _keys_while_streaming(self, ctrl_c: asyncio.Event) -> Iterator[None]:
        """Raw mode: Ctrl-C is a key to act on; lines typed meanwhile are queued, the rest
        waits in the next prompt."""

        def on_keys() -> None:
            for press in self.input.read_keys():
                if press.key == Keys.ControlC:
                    ctrl_c.set()
                    self._queued.clear()
                elif press.key in (Keys.ControlM, Keys.ControlJ):
                    self._queued.append(self._typeahead)
                    self._typeahead = ""
                elif press.key in (Keys.Backspace, Keys.ControlH):
                    self._typeahead = self._typeahead[:-1]
                elif not isinstance(press.key, Keys):
                    self._typeahead += press.data

        with self.input.raw_mode(), self.input.attach(on_keys):
            yield

    async def _wait(
        self, future: asyncio.Future[AgentResponse], msg_id: str, answer: StreamingAnswer
    ) -> bool:
        ctrl_c = asyncio.Event()
        live: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if not self.as_json:
            live = Live(answer, console=self.console, transient=True, refresh_per_second=12)
        cancelled_at: float | None = None
        with self._keys_while_streaming(ctrl_c), live:
            while not future.done():
                waiter = asyncio.ensure_future(ctrl_c.wait())
                limit = None if cancelled_at is None else cancelled_at + CANCEL_GRACE_S
                timeout = None if limit is None else max(0.0, limit - time.monotonic())
                racing: set[asyncio.Future[Any]] = {future, waiter}
                done, _ = await asyncio.wait(
                    racing, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                waiter.cancel()
                if future.done():
                    break
                if not done:  # the cancel was never confirmed: stop waiting for it
                    future.cancel()
                    break
                ctrl_c.clear()
                if cancelled_at is not None:
                    return True
                cancelled_at = self._last_interrupt = time.monotonic()
                await self.client.cancel(msg_id)
        return False

    def _show(self, future: asyncio.Future[AgentResponse], answer: StreamingAnswer) -> None:
        exc = None if future.cancelled() else future.exception()
        if future.cancelled() or (isinstance(exc, ServerError) and exc.code == "cancelled"):
            if answer.text:
                self.console.print(Text(answer.text.rstrip() + " …", style="dim"))
            self.note("cancelled" if exc else "cancelled (the server did not confirm)")
        elif exc is None:
            result = future.result()
            self._last_latency_ms = result.latency_ms
            if not self.as_json:
                self._show_tools(result, answer)
                self.console.print(Markdown(result.content) if result.content else "")
                self.note(f"answered in {result.latency_ms:.0f} ms")
        elif isinstance(exc, QaWsError) and not isinstance(exc, ConnectionLost):
            retry = getattr(exc, "retry_after", None)  # the narrator tells of a lost connection
            self.error(exc.message + (f" (retry in {retry:g} s)" if retry else ""))
        elif not isinstance(exc, QaWsError):
            raise exc

    def _show_tools(self, result: AgentResponse, answer: StreamingAnswer) -> None:
        """Each tool's line with /tools on, else one line naming them."""
        if self.details:
            for line in answer.done:
                self.console.print(Text(line, style="dim"), soft_wrap=True)
        elif result.tools:
            self.note(summary_text(result.tools))


__all__ = ["Repl", "SlashCompleter", "StreamingAnswer", "default_history_path", "open_history"]
