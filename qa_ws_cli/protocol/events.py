"""Typed events of wire protocol v1: one discriminated union per direction.

Client events are validated strictly enough to answer ``invalid_message`` with the reason;
unknown fields are ignored, as the protocol promises. Server events are what the gateway
emits; the client library decodes them with the same models.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
ChatId = Annotated[str, Field(pattern=ID_PATTERN)]

# Limits of agent events and attachments (docs/protocol.md, "Agent events" and "Files")
MAX_ATTACHMENTS = 8
TOOL_TEXT_MAX_CHARS = 200
RESULT_PREVIEW_MAX_CHARS = 500
TOOL_ARGS_MAX_ITEMS = 20
TOOL_ARGS_MAX_DEPTH = 4
ELLIPSIS = "…"

_ts_cache: list[Any] = [-1, ""]
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


def utc_timestamp(now: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds; the second part is cached and the millisecond parts
    made once (it is on every frame)."""
    now = time.time() if now is None else now
    sec = int(now)
    if sec != _ts_cache[0]:
        _ts_cache[0] = sec
        _ts_cache[1] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    second: str = _ts_cache[1]
    return second + _MILLIS[int((now - sec) * 1000)]


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# -- client to server ------------------------------------------------------------------


class ChatMessage(_Event):
    type: Literal["chat_message"] = "chat_message"
    id: ChatId
    content: Annotated[str, Field(min_length=1)]
    attachments: Annotated[list[ChatId], Field(max_length=MAX_ATTACHMENTS)] | None = None


class Ping(_Event):
    type: Literal["ping"] = "ping"
    id: ChatId


class Cancel(_Event):
    type: Literal["cancel"] = "cancel"
    id: ChatId
    target: ChatId


ClientEvent = Annotated[ChatMessage | Ping | Cancel, Field(discriminator="type")]


# -- server to client ------------------------------------------------------------------


class _ServerEvent(_Event):
    ts: str = Field(default_factory=utc_timestamp)


class SystemEvent(_ServerEvent):
    """``connected``, ``broadcast``, ``notification``, ``shutdown`` or ``token_expiring``;
    unused fields absent."""

    type: Literal["system_event"] = "system_event"
    event: str
    seq: int | None = None
    session_id: str | None = None
    connection_id: str | None = None
    user: str | None = None
    resumed: bool | None = None
    replayed: int | None = None
    server: dict[str, Any] | None = None
    limits: dict[str, Any] | None = None
    message: str | None = None
    reconnect_after_ms: int | None = None
    expires_at: str | None = None
    id: str | None = None  # of a notification
    data: dict[str, Any] | None = None  # of a notification


class AgentDelta(_ServerEvent):
    type: Literal["agent_delta"] = "agent_delta"
    reply_to: str
    delta: str


class ToolCall(_Event):
    """A tool in an ``agent_event``: ``args`` only on ``tool_started``."""

    id: str
    name: str
    args: dict[str, Any] | None = None


class AgentEvent(_ServerEvent):
    """Live progress of an answer (like ``agent_delta``: no ``seq``, never replayed).

    ``kind`` is a plain string so that a client meeting a kind newer than itself can skip it.
    """

    type: Literal["agent_event"] = "agent_event"
    reply_to: str
    kind: str
    tool: ToolCall | None = None
    result_preview: str | None = None
    ms: float | None = None
    message: str | None = None
    text: str | None = None


class ToolSummary(_Event):
    name: str
    status: str
    ms: float | None = None


class FileInfo(_Event):
    """A file an answer produced: fetch it at ``url`` (signed, no token) before ``expires_at``."""

    file_id: str
    name: str
    mime: str
    size: int
    url: str
    expires_at: str


class AgentResponse(_ServerEvent):
    type: Literal["agent_response"] = "agent_response"
    reply_to: str
    content: str
    latency_ms: float
    seq: int | None = None
    tools: list[ToolSummary] | None = None
    attachments: list[FileInfo] | None = None


class ErrorEvent(_ServerEvent):
    type: Literal["error"] = "error"
    code: str
    message: str
    reply_to: str | None = None
    retry_after: float | None = None
    seq: int | None = None

    @model_serializer(mode="wrap")
    def _keep_reply_to(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        data.setdefault("reply_to", None)  # the protocol says "reply_to (or null)"
        return data


class Pong(_ServerEvent):
    type: Literal["pong"] = "pong"
    reply_to: str


ServerEvent = Annotated[
    SystemEvent | AgentDelta | AgentEvent | AgentResponse | ErrorEvent | Pong,
    Field(discriminator="type"),
]


# -- clipping what a backend reports -----------------------------------------------------


def clip_text(text: str, limit: int = TOOL_TEXT_MAX_CHARS) -> str:
    """At most ``limit`` characters; a clipped string ends with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def clip_json(value: Any, depth: int = 0) -> Any:
    """A tool's arguments as the protocol sends them: strings clipped, containers bounded.

    Objects and arrays keep their first ``TOOL_ARGS_MAX_ITEMS`` entries; below
    ``TOOL_ARGS_MAX_DEPTH`` levels a container becomes the string ``"…"``. Anything that is
    not JSON (a backend's own object) becomes its clipped ``str``.
    """
    if isinstance(value, str):
        return clip_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict | list | tuple):
        if depth >= TOOL_ARGS_MAX_DEPTH:
            return ELLIPSIS
        if isinstance(value, dict):
            items = list(value.items())[:TOOL_ARGS_MAX_ITEMS]
            return {clip_text(str(k)): clip_json(v, depth + 1) for k, v in items}
        return [clip_json(v, depth + 1) for v in value[:TOOL_ARGS_MAX_ITEMS]]
    return clip_text(str(value))
