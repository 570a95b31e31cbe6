"""What an agent may yield besides text pieces, and what it receives as attachments.

A backend's ``events(message, context)`` yields ``str`` pieces of the answer and, in between,
these typed objects: a tool call starting, finishing or failing, a piece of reasoning, a status
line, or a file the agent produced. The gateway turns them into the protocol's ``agent_event``
frames (``to_frame``) and keeps a summary of the tools for ``agent_response`` (``ToolLog``).
Unknown backend events never get this far: each backend drops what it cannot map.

The names follow the AG-UI protocol's ideas (TOOL_CALL_START / END / RESULT, REASONING) so a
front end that knows those finds them here under the same shape.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from qa_ws_cli.protocol.events import (
    RESULT_PREVIEW_MAX_CHARS,
    AgentEvent,
    ToolCall,
    ToolSummary,
    clip_json,
    clip_text,
)

TEXT_MIMES = frozenset(
    {
        "text/plain",
        "text/markdown",
        "text/csv",
        "text/x-log",
        "application/json",
        "application/xml",
    }
)
IMAGE_MIMES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file: one the user attached (in ``ChatContext.attachments``) or one the agent made.

    ``mime`` is the type the gateway sniffed from the content (never taken from the name).
    """

    name: str
    mime: str
    data: bytes = field(repr=False)

    @property
    def is_image(self) -> bool:
        return self.mime in IMAGE_MIMES

    @property
    def is_text(self) -> bool:
        return self.mime in TEXT_MIMES


@dataclass(frozen=True, slots=True)
class ToolStarted:
    """The agent called a tool; ``args`` is the call's JSON object."""

    id: str
    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """A tool returned; ``ms`` is its run time when the backend reports it."""

    id: str
    name: str
    result_preview: str = ""
    ms: float | None = None


@dataclass(frozen=True, slots=True)
class ToolFailed:
    """A tool raised; ``message`` is the backend's text, shortened for the client."""

    id: str
    name: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's reasoning, shown apart from the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class Status:
    """A progress line from a backend that reports one (``searching the test plans``)."""

    text: str


ToolEvent = ToolStarted | ToolFinished | ToolFailed
RunEvent = ToolStarted | ToolFinished | ToolFailed | Reasoning | Status | Attachment
Piece = str | RunEvent
RUN_EVENT_TYPES: tuple[type, ...] = (
    ToolStarted,
    ToolFinished,
    ToolFailed,
    Reasoning,
    Status,
    Attachment,
)


def to_frame(event: RunEvent, reply_to: str) -> AgentEvent | None:
    """The ``agent_event`` frame for one event; ``None`` for an ``Attachment``.

    Produced files are not live events: they go into the answer's ``attachments`` once the
    gateway has stored them. Strings are clipped to the protocol's documented limits here.
    """
    if isinstance(event, ToolStarted):
        tool = ToolCall(id=event.id, name=clip_text(event.name), args=clip_json(dict(event.args)))
        return AgentEvent(reply_to=reply_to, kind="tool_started", tool=tool)
    if isinstance(event, ToolFinished):
        return AgentEvent(
            reply_to=reply_to,
            kind="tool_finished",
            tool=ToolCall(id=event.id, name=clip_text(event.name)),
            result_preview=clip_text(event.result_preview, RESULT_PREVIEW_MAX_CHARS),
            ms=None if event.ms is None else round(event.ms, 1),
        )
    if isinstance(event, ToolFailed):
        return AgentEvent(
            reply_to=reply_to,
            kind="tool_failed",
            tool=ToolCall(id=event.id, name=clip_text(event.name)),
            message=clip_text(event.message, RESULT_PREVIEW_MAX_CHARS),
        )
    if isinstance(event, Reasoning):
        return AgentEvent(reply_to=reply_to, kind="reasoning", text=event.text)
    if isinstance(event, Status):
        return AgentEvent(reply_to=reply_to, kind="status", text=clip_text(event.text))
    return None


ToolStatus = Literal["finished", "failed", "interrupted"]


@dataclass(slots=True)
class _ToolRun:
    name: str
    started: float
    status: ToolStatus = "interrupted"
    ms: float | None = None


class ToolLog:
    """The tools of one answer, for ``agent_response.tools``: feed every event to ``add``.

    A tool that started and never finished (the run was cancelled or failed) is reported as
    ``interrupted``; when the backend gives no duration, the time between the two events is.
    """

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._runs: dict[str, _ToolRun] = {}

    def add(self, event: object) -> None:
        if isinstance(event, ToolStarted):
            self._runs[event.id] = _ToolRun(event.name, self._clock())
        elif isinstance(event, ToolFinished | ToolFailed):
            now = self._clock()
            run = self._runs.get(event.id)
            if run is None:  # an end without a start: it took no time we saw
                run = self._runs[event.id] = _ToolRun(event.name, now)
            run.status = "finished" if isinstance(event, ToolFinished) else "failed"
            given = event.ms if isinstance(event, ToolFinished) else None
            run.ms = given if given is not None else (now - run.started) * 1000

    def summary(self) -> list[ToolSummary]:
        return [
            ToolSummary(
                name=clip_text(run.name),
                status=run.status,
                ms=None if run.ms is None else round(run.ms, 1),
            )
            for run in self._runs.values()
        ]
