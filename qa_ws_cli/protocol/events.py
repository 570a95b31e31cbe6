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

_ts_cache: list[Any] = [-1, ""]


def utc_timestamp(now: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds; the second part is cached (it is on every frame)."""
    now = time.time() if now is None else now
    sec = int(now)
    if sec != _ts_cache[0]:
        _ts_cache[0] = sec
        _ts_cache[1] = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_ts_cache[1]}.{int((now - sec) * 1000):03d}Z"


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# -- client to server ------------------------------------------------------------------


class ChatMessage(_Event):
    type: Literal["chat_message"] = "chat_message"
    id: ChatId
    content: Annotated[str, Field(min_length=1)]


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
    """``connected``, ``broadcast``, ``shutdown`` or ``token_expiring``; unused fields absent."""

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


class AgentDelta(_ServerEvent):
    type: Literal["agent_delta"] = "agent_delta"
    reply_to: str
    delta: str


class AgentResponse(_ServerEvent):
    type: Literal["agent_response"] = "agent_response"
    reply_to: str
    content: str
    latency_ms: float
    seq: int | None = None


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
    SystemEvent | AgentDelta | AgentResponse | ErrorEvent | Pong, Field(discriminator="type")
]
