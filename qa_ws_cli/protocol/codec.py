"""Text <-> event, with no I/O: the server and the clients share it.

``decode_client`` turns one text frame into a typed client event or raises ``ProtocolError``
with the protocol's error code and, when the frame named a usable ``id``, its ``reply_to``.
A key given twice in one object is ``invalid_json``: pydantic-core and ``json`` both keep the
last one, so ``{"type": "ping", "type": "chat_message"}`` would be read as a chat by one parser
and perhaps a ping by the next. jiter (pydantic's JSON parser) refuses such a frame while it
parses it (``catch_duplicate_keys``), then pydantic validates the parsed value: one parse.

``encode`` serializes any event model; ``encode_fields`` writes the same text for the frames of
every chat and handshake (the answer, a delta, a pong, ``connected``) straight from the values
the server made, without building the model.
"""

from __future__ import annotations

import re
from typing import Any

import jiter
import orjson
from pydantic import TypeAdapter, ValidationError

from qa_ws_cli.errors import ProtocolError
from qa_ws_cli.protocol.codes import ErrorCode
from qa_ws_cli.protocol.events import (
    ID_PATTERN,
    AgentDelta,
    AgentResponse,
    ClientEvent,
    Pong,
    ServerEvent,
    SystemEvent,
    utc_timestamp,
)

_client_adapter: TypeAdapter[ClientEvent] = TypeAdapter(ClientEvent)
_server_adapter: TypeAdapter[ServerEvent] = TypeAdapter(ServerEvent)
# the adapter's own validator (a documented attribute): ``TypeAdapter.validate_python`` is a
# Python wrapper that checks its keyword arguments first, on every frame
_validate_client = _client_adapter.validator.validate_python
_id_re = re.compile(ID_PATTERN)


_DUPLICATE = "the frame is not valid JSON (a key appears twice)"
_DUPLICATE_PREFIX = "Detected duplicate key"  # jiter's message (tests pin our reading of it)


def decode_client(text: str | bytes) -> ClientEvent:
    """Parse a client frame: jiter's parse (a key twice in any object refused), then
    pydantic's validation of the parsed value."""
    try:
        raw = text.encode() if isinstance(text, str) else text
        # only keys cached (a few, the protocol's): what clients say stays out of jiter's cache
        data = jiter.from_json(raw, catch_duplicate_keys=True, cache_mode="keys")
    except ValueError as exc:  # also nesting past jiter's limit (200), and UnicodeEncodeError
        duplicate = str(exc).startswith(_DUPLICATE_PREFIX)
        message = _DUPLICATE if duplicate else "the frame is not valid JSON"
        raise ProtocolError(message, code=ErrorCode.INVALID_JSON) from None
    try:
        event: ClientEvent = _validate_client(data)
        return event
    except ValidationError as exc:
        raise _explain(data, exc) from None


def _explain(data: Any, exc: ValidationError) -> ProtocolError:
    """Slow path, only for bad frames: name the field, and the id to reply to if usable."""
    if not isinstance(data, dict):
        return ProtocolError("a frame must be a JSON object", code=ErrorCode.INVALID_MESSAGE)
    msg_id = data.get("id")
    reply_to = msg_id if isinstance(msg_id, str) and _id_re.fullmatch(msg_id) else None
    kind = data.get("type")
    if "type" not in data:
        return ProtocolError("missing field 'type'", code=ErrorCode.INVALID_MESSAGE)
    if kind not in ("chat_message", "ping", "cancel"):
        return ProtocolError(
            f"unknown type {str(kind)[:40]!r}", code=ErrorCode.INVALID_MESSAGE, reply_to=reply_to
        )
    err = exc.errors(include_url=False)[0]
    field = ".".join(str(p) for p in err["loc"][1:]) or "frame"
    reason = "missing" if err["type"] == "missing" else "invalid"
    return ProtocolError(
        f"{reason} field {field!r} in {kind}", code=ErrorCode.INVALID_MESSAGE, reply_to=reply_to
    )


def decode_server(text: str | bytes) -> ServerEvent:
    """Parse a server frame (client side); raises ``ProtocolError`` on anything else."""
    try:
        return _server_adapter.validate_json(text)
    except ValidationError:
        raise ProtocolError("the server sent a frame this client does not understand") from None


def encode(event: Any) -> str:
    """One event -> one text frame; absent optional fields are left out."""
    text: str = event.model_dump_json(exclude_none=True)
    return text


FastEvent = type[AgentResponse] | type[AgentDelta] | type[Pong] | type[SystemEvent]
_TYPE_OF: dict[FastEvent, str] = {
    kind: kind.model_fields["type"].default
    for kind in (AgentResponse, AgentDelta, Pong, SystemEvent)
}


def encode_fields(kind: FastEvent, **fields: Any) -> str:
    """``encode(kind(**fields))``, the same text (tests pin it), for fields the server made:
    each of its field's type, none of them None, given in the model's order. Building and
    dumping the model takes about 34,000 instructions for an answer and 65,000 for
    ``connected``; this, about a tenth. What orjson refuses (a lone surrogate in an agent's
    text) goes through the model, which reports it as it always did."""
    try:
        return orjson.dumps({"ts": utc_timestamp(), "type": _TYPE_OF[kind], **fields}).decode()
    except orjson.JSONEncodeError:
        return encode(kind(**fields))
