"""Text <-> event, with no I/O: the server and the clients share it.

``decode_client`` turns one text frame into a typed client event or raises ``ProtocolError``
with the protocol's error code and, when the frame named a usable ``id``, its ``reply_to``.
A key given twice in one object is ``invalid_json``: pydantic-core and ``json`` both keep the
last one, so ``{"type": "ping", "type": "chat_message"}`` would be read as a chat by one parser
and perhaps a ping by the next. The check is a second pass with the C ``json`` decoder, only
once the frame has validated (so it is JSON): ``raw_decode``, which skips ``decode``'s two
whitespace regexes (a third of the pass), unless the frame starts with whitespace.

``encode`` serializes any event model; ``encode_fields`` writes the same text for the frames of
every chat and handshake (the answer, a delta, a pong, ``connected``) straight from the values
the server made, without building the model.
"""

from __future__ import annotations

import json
import re
from typing import Any

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
_id_re = re.compile(ID_PATTERN)


class DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise DuplicateKeyError("a key appears twice in one object")
    return obj


_strict_json = json.JSONDecoder(object_pairs_hook=_unique_keys)
_DUPLICATE = "the frame is not valid JSON (a key appears twice)"


def decode_client(text: str | bytes) -> ClientEvent:
    """Parse a client frame; the fast path is one validation in pydantic-core, then the
    duplicate-key pass."""
    try:
        event = _client_adapter.validate_json(text)
    except ValidationError as exc:
        raise _explain(text, exc) from None
    try:
        _unique_everywhere(text if isinstance(text, str) else text.decode())
    except DuplicateKeyError:
        raise ProtocolError(_DUPLICATE, code=ErrorCode.INVALID_JSON) from None
    return event


def _unique_everywhere(text: str) -> None:
    """Raise ``DuplicateKeyError`` if an object of ``text`` (valid JSON) has a key twice."""
    try:
        _strict_json.raw_decode(text)
    except DuplicateKeyError:
        raise
    except ValueError:  # whitespace before the value: the decoder that skips it
        _strict_json.decode(text)


def _explain(text: str | bytes, exc: ValidationError) -> ProtocolError:
    """Slow path, only for bad frames: tell JSON errors from schema errors, name the field."""
    try:
        raw = text if isinstance(text, str) else text.decode()
        data = _strict_json.decode(raw)
    except DuplicateKeyError:
        return ProtocolError(_DUPLICATE, code=ErrorCode.INVALID_JSON)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nesting deeper than json's stack
        return ProtocolError("the frame is not valid JSON", code=ErrorCode.INVALID_JSON)
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
