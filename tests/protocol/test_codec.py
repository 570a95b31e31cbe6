"""Codec and events: every type round-trips; every kind of bad frame gets its error code."""

from __future__ import annotations

import json

import pytest

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


def test_error_names_the_missing_field() -> None:
    with pytest.raises(ProtocolError, match="content"):
        decode_client('{"type": "chat_message", "id": "a"}')


def test_decode_server_rejects_garbage() -> None:
    with pytest.raises(ProtocolError):
        decode_server('{"type": "nope"}')
