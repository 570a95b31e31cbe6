"""Codec and events: every type round-trips; every kind of bad frame gets its error code."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic_core import PydanticSerializationError

from qa_ws_cli.errors import ProtocolError
from qa_ws_cli.protocol import (
    AgentDelta,
    AgentResponse,
    Cancel,
    ChatMessage,
    ErrorEvent,
    Ping,
    Pong,
    SystemEvent,
    decode_client,
    decode_server,
    encode,
    utc_timestamp,
)
from qa_ws_cli.protocol.codec import encode_fields


@pytest.mark.parametrize(
    "event",
    [
        ChatMessage(id="m-1", content="how do I test a login form?"),
        Ping(id="p.1"),
        Cancel(id="c:1", target="m-1"),
    ],
)
def test_client_events_round_trip(event: object) -> None:
    assert decode_client(encode(event)) == event


@pytest.mark.parametrize(
    "event",
    [
        SystemEvent(
            event="connected",
            session_id="s",
            connection_id="c",
            user="u",
            resumed=False,
            replayed=0,
            server={"name": "qa-ws"},
            limits={"x": 1},
        ),
        SystemEvent(event="broadcast", message="hello", seq=3),
        SystemEvent(event="shutdown", reconnect_after_ms=1000, seq=4),
        SystemEvent(event="token_expiring", expires_at="2030-01-01T00:00:00.000Z", seq=5),
        AgentDelta(reply_to="m-1", delta="piece"),
        AgentResponse(reply_to="m-1", content="whole", latency_ms=12.5, seq=1),
        ErrorEvent(
            code="rate_limited", message="slow down", reply_to="m-2", retry_after=2.0, seq=2
        ),
        Pong(reply_to="p.1"),
    ],
)
def test_server_events_round_trip(event: object) -> None:
    assert decode_server(encode(event)) == event


def test_error_without_reply_to_says_null_and_omits_seq() -> None:
    data = json.loads(encode(ErrorEvent(code="invalid_json", message="bad")))
    assert data["reply_to"] is None
    assert "seq" not in data and "retry_after" not in data


def test_every_server_event_has_a_millisecond_utc_timestamp() -> None:
    data = json.loads(encode(Pong(reply_to="x")))
    assert data["ts"].endswith("Z") and len(data["ts"]) == len("2026-01-01T00:00:00.000Z")
    assert utc_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert utc_timestamp(1.5) == "1970-01-01T00:00:01.500Z"


def test_unknown_fields_are_ignored() -> None:
    event = decode_client('{"type":"ping","id":"a","extra":{"nested":true}}')
    assert event == Ping(id="a")


@pytest.mark.parametrize(
    ("frame", "code", "reply_to"),
    [
        ("{not json", "invalid_json", None),
        ("", "invalid_json", None),
        ('"just a string"', "invalid_message", None),
        ("[1, 2]", "invalid_message", None),
        ('{"id": "a"}', "invalid_message", None),
        ('{"type": "shout", "id": "a"}', "invalid_message", "a"),
        ('{"type": "chat_message", "id": "a"}', "invalid_message", "a"),
        ('{"type": "chat_message", "id": "a", "content": ""}', "invalid_message", "a"),
        ('{"type": "chat_message", "id": "a", "content": 5}', "invalid_message", "a"),
        ('{"type": "chat_message", "id": "has space", "content": "x"}', "invalid_message", None),
        (
            '{"type": "chat_message", "id": "' + "x" * 65 + '", "content": "x"}',
            "invalid_message",
            None,
        ),
        ('{"type": "ping"}', "invalid_message", None),
        ('{"type": "cancel", "id": "c"}', "invalid_message", "c"),
        ('{"type": null, "id": "c"}', "invalid_message", "c"),
    ],
)
def test_bad_frames_get_their_error_code(frame: str, code: str, reply_to: str | None) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_client(frame)
    assert caught.value.code == code
    assert caught.value.reply_to == reply_to
    assert caught.value.message


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "ping", "id": "a", "type": "chat_message", "content": "x"}',
        ' \n\t{"type": "ping", "id": "a", "id": "b"}',  # after whitespace
        '{"type": "ping", "id": "a", "extra": {"k": 1, "k": 2}}',  # in a nested object
        '{"type": "ping", "id": "a", "extra": [{"k": 1}, {"k": 2, "\\u006b": 3}]}',  # escaped
        '{"type": "ping", "\\u0069d": "a", "id": "b"}',
    ],
)
def test_a_key_twice_in_any_object_is_invalid_json(frame: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_client(frame)
    assert caught.value.code == "invalid_json"
    assert "twice" in caught.value.message
    assert caught.value.reply_to is None  # which of the two ids would it be?


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "chat_message", "id": "a", "content": "half \\ud800 a pair"}',  # no character
        '{"type": "ping", "id": "a", "x": ' + "[" * 201 + "]" * 201 + "}",  # 202 levels
        '{"type": "ping", "id": "a", "x": ' + "9" * 4301 + "}",  # past Python's int digits
        '{"type": "ping", "id": "a"} trailing',
        '\ufeff{"type": "ping", "id": "a"}',  # a byte-order mark is not JSON's
    ],
)
def test_what_is_not_json_text_is_invalid_json(frame: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_client(frame)
    assert (caught.value.code, caught.value.reply_to) == ("invalid_json", None)
    assert caught.value.message == "the frame is not valid JSON"


def test_json_text_at_the_documented_limits_is_read() -> None:
    deep = '{"type": "ping", "id": "a", "x": ' + "[" * 200 + "]" * 200 + "}"  # 201 levels
    long = '{"type": "ping", "id": "b", "x": ' + "9" * 4300 + "}"
    assert decode_client(deep) == Ping(id="a") and decode_client(long) == Ping(id="b")


def test_frames_are_read_the_same_as_text_or_as_utf8_bytes() -> None:
    frame = '{"type": "chat_message", "id": "a", "content": "é 漢字 😀"}'
    assert (
        decode_client(frame)
        == decode_client(frame.encode())
        == ChatMessage(id="a", content="é 漢字 😀")
    )


def test_one_key_in_two_objects_and_leading_whitespace_are_fine() -> None:
    assert decode_client('{"type":"ping","id":"a","x":{"id":1},"y":[{"id":2}]}') == Ping(id="a")
    assert decode_client(' \r\n {"type": "ping", "id": "a"} \n') == Ping(id="a")


def test_error_names_the_missing_field() -> None:
    with pytest.raises(ProtocolError, match="content"):
        decode_client('{"type": "chat_message", "id": "a"}')


def test_decode_server_rejects_garbage() -> None:
    with pytest.raises(ProtocolError):
        decode_server('{"type": "nope"}')


_TRICKY = [
    "echo: hello",
    'quotes " and \\ backslashes',
    "controls \x00\x01\x1f\x7f\n\r\t and C1 \x85",
    "é, 漢字, 😀, U+2028 \u2028 and U+2029 \u2029",
    "</script><script>alert(1)</script>",
    "x" * 9000,
]
_TS = re.compile(r'^\{"ts":"[^"]+",')


def _without_ts(text: str) -> str:
    assert _TS.match(text), text
    return _TS.sub("{", text, count=1)


@pytest.mark.parametrize("text", _TRICKY)
def test_encode_fields_writes_what_the_model_writes(text: str) -> None:
    """The frames of every chat, delta, ping and handshake skip the model: byte for byte the
    same text (bar the timestamp's milliseconds), key order included."""
    limits = {"max_message_bytes": 65536, "max_requests_per_minute": None, "heartbeat_s": 20.0}
    cases: list[tuple[type[Any], dict[str, Any]]] = [
        (AgentResponse, {"reply_to": "c-1", "content": text, "latency_ms": 12.3}),
        (AgentResponse, {"reply_to": "c-1", "content": text, "latency_ms": 0.0}),
        (AgentDelta, {"reply_to": "c:2", "delta": text}),
        (Pong, {"reply_to": "p.1"}),
        (
            SystemEvent,
            {
                "event": "connected",
                "session_id": "0" * 32,
                "connection_id": "f" * 16,
                "user": text,
                "resumed": False,
                "replayed": 3,
                "server": {"name": text, "instance": "i-1", "version": "0.1", "protocol": 1},
                "limits": limits,
            },
        ),
    ]
    for kind, fields in cases:
        fast = encode_fields(kind, **fields)
        assert _without_ts(fast) == _without_ts(encode(kind(**fields))), kind
        assert decode_server(fast) == kind(**fields, ts=json.loads(fast)["ts"])


def test_encode_fields_hands_what_orjson_refuses_to_the_model() -> None:
    """A lone surrogate (an agent's broken text) is refused as the model always refused it."""
    with pytest.raises(PydanticSerializationError):
        encode_fields(AgentDelta, reply_to="c-1", delta="half \ud800 a pair")
    with pytest.raises(PydanticSerializationError):
        encode(AgentDelta(reply_to="c-1", delta="half \ud800 a pair"))
