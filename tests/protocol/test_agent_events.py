"""agent_event frames, the answer's tools and attachments, and chat_message attachments."""

from __future__ import annotations

import json

import pytest

from qa_ws_cli.agents.events import (
    Attachment,
    Reasoning,
    Status,
    ToolFailed,
    ToolFinished,
    ToolLog,
    ToolStarted,
    to_frame,
)
from qa_ws_cli.errors import ProtocolError
from qa_ws_cli.protocol import AgentEvent, AgentResponse, ChatMessage, decode_client, decode_server
from qa_ws_cli.protocol.codec import encode
from qa_ws_cli.protocol.events import MAX_ATTACHMENTS, TOOL_ARGS_MAX_ITEMS


def frame(event: object) -> dict[str, object]:
    built = to_frame(event, "m-1")  # type: ignore[arg-type]
    assert built is not None
    decoded = decode_server(encode(built))  # a client reads what the server wrote
    assert isinstance(decoded, AgentEvent)
    data: dict[str, object] = json.loads(encode(built))
    return data


def test_tool_events_become_frames_with_clipped_strings() -> None:
    args = {"feature": "x" * 1000, "nested": {"a": [1, {"b": {"c": {"d": "deep"}}}]}, "n": 3}
    started = frame(ToolStarted("call-1", "lookup_test_plan", args))
    assert started["type"] == "agent_event"
    assert started["reply_to"] == "m-1"
    assert started["kind"] == "tool_started"
    tool = started["tool"]
    assert isinstance(tool, dict)
    assert tool["id"] == "call-1"
    assert tool["args"]["feature"] == "x" * 199 + "…"
    assert tool["args"]["nested"] == {"a": [1, {"b": "…"}]}  # args itself is level 1 of 4
    assert tool["args"]["n"] == 3
    assert "seq" not in started
    finished = frame(ToolFinished("call-1", "lookup_test_plan", "r" * 2000, 120.04))
    assert finished["result_preview"] == "r" * 499 + "…"
    assert finished["ms"] == 120.0
    assert "args" not in finished["tool"]  # type: ignore[operator]
    failed = frame(ToolFailed("call-2", "run_check", "boom"))
    assert (failed["kind"], failed["message"]) == ("tool_failed", "boom")


def test_args_are_bounded_in_count_and_non_json_values_become_text() -> None:
    many = {f"k{i}": i for i in range(100)}
    tool = frame(ToolStarted("c", "t", {"many": many, "obj": object()}))["tool"]
    assert isinstance(tool, dict)
    assert len(tool["args"]["many"]) == TOOL_ARGS_MAX_ITEMS
    assert tool["args"]["obj"].startswith("<object object")


def test_reasoning_and_status_frames_and_attachments_are_not_live() -> None:
    assert frame(Reasoning("thinking"))["text"] == "thinking"
    assert frame(Status("searching"))["kind"] == "status"
    assert to_frame(Attachment("a.png", "image/png", b"x"), "m-1") is None


def test_tool_log_summarises_an_answer() -> None:
    ticks = iter([0.0, 0.2, 1.0, 1.5, 2.0])
    log = ToolLog(clock=lambda: next(ticks))
    log.add(ToolStarted("1", "lookup", {}))
    log.add("text pieces are ignored")
    log.add(ToolFinished("1", "lookup", "ok", ms=120.0))
    log.add(ToolStarted("2", "run_check", {}))
    log.add(ToolFailed("2", "run_check", "boom"))
    log.add(ToolStarted("3", "slow", {}))
    summary = [s.model_dump() for s in log.summary()]
    assert summary == [
        {"name": "lookup", "status": "finished", "ms": 120.0},
        {"name": "run_check", "status": "failed", "ms": 500.0},
        {"name": "slow", "status": "interrupted", "ms": None},
    ]
    response = AgentResponse(reply_to="m-1", content="a", latency_ms=1, tools=log.summary())
    decoded = decode_server(encode(response))
    assert isinstance(decoded, AgentResponse)
    assert decoded.tools is not None
    assert [t.status for t in decoded.tools] == ["finished", "failed", "interrupted"]


def test_chat_message_attachments_are_ids_up_to_the_cap() -> None:
    ok = decode_client(json.dumps({"type": "chat_message", "id": "a", "content": "c"}))
    assert isinstance(ok, ChatMessage)
    assert ok.attachments is None
    ids = [f"f-{i}" for i in range(MAX_ATTACHMENTS)]
    msg = {"type": "chat_message", "id": "a", "content": "c", "attachments": ids}
    decoded = decode_client(json.dumps(msg))
    assert isinstance(decoded, ChatMessage)
    assert decoded.attachments == ids
    for bad in ([*ids, "one-too-many"], ["no spaces allowed"], "f-1", [1]):
        with pytest.raises(ProtocolError) as caught:
            decode_client(json.dumps({**msg, "attachments": bad}))
        assert caught.value.code == "invalid_message"
        assert caught.value.reply_to == "a"
        assert "attachments" in caught.value.message
