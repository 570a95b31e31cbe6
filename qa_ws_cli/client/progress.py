"""Tool progress as a person reads it: ``running lookup_test_plan(feature="login")…`` while
a tool runs, ``done in 120 ms`` when it returns; shared by ``send``, the repl and its line mode.

Everything shown came from the agent, so every piece goes through ``printable`` (no control
characters reach the terminal) and is shortened.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qa_ws_cli.client.admin import printable
from qa_ws_cli.protocol.events import AgentEvent, ToolSummary

ARG_CHARS = 40  # of one argument's value on a progress line
LINE_CHARS = 160


def call_text(name: str, args: dict[str, Any] | None) -> str:
    """``lookup_test_plan(feature="login", depth=2)``: values as JSON, each shortened."""
    shown = []
    for key, value in (args or {}).items():
        text = json.dumps(value, ensure_ascii=False)
        if len(text) > ARG_CHARS:
            text = text[: ARG_CHARS - 1] + "…"
        shown.append(f"{key}={text}")
    return printable(f"{name}({', '.join(shown)})", LINE_CHARS)


def preview(text: str) -> str:
    """A result preview on one line."""
    return printable(" ".join(text.split()), LINE_CHARS)


def ms_text(ms: float | None) -> str:
    return "" if ms is None else f" in {ms:.0f} ms"


def summary_text(tools: list[ToolSummary]) -> str:
    """``used lookup_test_plan (120 ms), search (failed)`` for an answer's ``tools``."""
    parts = []
    for tool in tools:
        how = f"{tool.ms:.0f} ms" if tool.status == "finished" and tool.ms is not None else ""
        how = how if tool.status == "finished" else tool.status
        parts.append(printable(tool.name, 80) + (f" ({how})" if how else ""))
    return "used " + ", ".join(parts)


@dataclass
class ToolProgress:
    """Turns ``agent_event`` frames into progress text; ``running`` holds the tools that are
    still running (by id: their call text), for a live status line."""

    running: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)

    def started(self, event: AgentEvent) -> str | None:
        if event.kind != "tool_started" or event.tool is None:
            return None
        text = call_text(event.tool.name, event.tool.args)
        self.running[event.tool.id] = text
        self.names[event.tool.id] = text
        return f"running {text}…"

    def ended(self, event: AgentEvent) -> tuple[str, str] | None:
        """(the call text, how it ended) for a ``tool_finished`` / ``tool_failed``."""
        if event.tool is None or event.kind not in ("tool_finished", "tool_failed"):
            return None
        fallback = call_text(event.tool.name, None)
        text = self.running.pop(event.tool.id, None) or self.names.get(event.tool.id, fallback)
        if event.kind == "tool_finished":
            return text, f"done{ms_text(event.ms)}"
        return text, "failed: " + printable(event.message or "no reason given", LINE_CHARS)

    def status_line(self) -> str | None:
        if not self.running:
            return None
        return "running " + ", ".join(self.running.values()) + "…"


class StderrProgress:
    """``send``'s progress on stderr: ``running X(…)…`` and, on the same line when nothing
    came between, `` done in 120 ms``; a failure or a status line on its own line."""

    def __init__(self, write: Callable[[str], None], *, details: bool = False) -> None:
        self.write = write
        self.details = details  # also each result's preview, on a line of its own
        self.tools = ToolProgress()
        self._open: str | None = None  # the id of a tool whose line awaits its end

    def __call__(self, event: AgentEvent) -> None:
        line = self.tools.started(event)
        if line is not None:
            self._close_line()
            self.write(line)
            self._open = event.tool.id if event.tool is not None else None
            return
        ended = self.tools.ended(event)
        if ended is not None:
            text, how = ended
            if event.tool is not None and self._open == event.tool.id:
                self._open = None
                self.write(f" {how}\n")
            else:
                self._close_line()
                self.write(f"{text} {how}\n")
            if self.details and event.result_preview:
                self.write(f"  → {preview(event.result_preview)}\n")
        elif event.kind == "status" and event.text:
            self._close_line()
            self.write(printable(event.text, LINE_CHARS) + "\n")

    def _close_line(self) -> None:
        if self._open is not None:
            self._open = None
            self.write("\n")

    def finish(self) -> None:
        self._close_line()


__all__ = ["StderrProgress", "ToolProgress", "call_text", "preview", "summary_text"]
