"""The repl's parts that hold no connection: the history file, the slash completer, and the
streaming answer with its tool status line (drawn by rich's ``Live``)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from rich.console import Console, ConsoleOptions, RenderResult
from rich.spinner import Spinner
from rich.text import Text

from qa_ws_cli.client.plain import COMMANDS
from qa_ws_cli.client.progress import ToolProgress, preview
from qa_ws_cli.protocol.events import AgentEvent


def default_history_path() -> Path:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "qa-ws" / "history"


def open_history(path: Path | None) -> tuple[History, str | None]:
    """A history that cannot be written must not stop the repl: it falls back to memory."""
    path = path or default_history_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError as exc:
        return InMemoryHistory(), f"history not kept: cannot write {path} ({exc.strerror})"
    return FileHistory(str(path)), None


class SlashCompleter(Completer):
    """Completes the command word only, so ordinary messages never pop a menu."""

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterable[Completion]:
        word = document.text_before_cursor
        if not word.startswith("/") or any(c.isspace() for c in word):
            return
        for name, meta in COMMANDS.items():
            if name.startswith(word.lower()):
                yield Completion(name, start_position=-len(word), display_meta=meta)


class StreamingAnswer:
    """The answer so far, drawn as its last screenful so a long one never breaks ``Live``;
    above it, a status line while tools run (``running lookup_test_plan(…)…``)."""

    def __init__(self) -> None:
        self.text = ""
        self.tools = ToolProgress()
        self.done: list[str] = []  # one line per tool that ended, for /tools
        self._spinner = Spinner("dots", Text("thinking…  (Ctrl-C cancels)", style="dim"))
        self._tool_spinner = Spinner("dots", Text("", style="dim"))

    def add(self, piece: str) -> None:
        self.text += piece

    def event(self, event: AgentEvent) -> None:
        self.tools.started(event)
        ended = self.tools.ended(event)
        if ended is not None:
            call, how = ended
            line = f"{call} {how}"
            if event.result_preview:
                line += f" → {preview(event.result_preview)}"
            self.done.append(line)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        status = self.tools.status_line()
        if status is not None:
            self._tool_spinner.update(text=Text(status + "  (Ctrl-C cancels)", style="dim"))
            yield self._tool_spinner
        if not self.text:
            if status is None:
                yield self._spinner
            return
        lines = Text(self.text).wrap(console, options.max_width)
        room = max(1, (options.height or console.height) - (2 if status is None else 3))
        yield from lines[-room:]


__all__ = ["SlashCompleter", "StreamingAnswer", "default_history_path", "open_history"]
