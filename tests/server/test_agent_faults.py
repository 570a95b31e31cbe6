"""Agents that fail: raise, raise mid-answer, hang, stream forever (with or without awaiting).

The client always gets one protocol error with a safe message (no exception text), the server
log has the details with the connection and session ids, and other clients never notice.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.errors import AgentBusy, AgentError
from tests.conftest import make_settings, run_gateway
from tests.server.wire import WS_TEXT, RawPeer, answer_to, chat, connect, next_event, ping, until

SECRET_DETAIL = "password=hunter2 host=10.9.8.7"


class Faulty(Agent):
    """One fault per message; ``ok`` is answered normally (the bystander's messages)."""

    def __init__(self) -> None:
        self.stopped: list[str] = []  # messages whose run saw a cancellation

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        if message.startswith("ok"):
            yield f"fine: {message}"
            return
        try:
            if message == "raise":
                raise RuntimeError(SECRET_DETAIL)
            if message == "raise-late":
                yield "a first piece, "
                await asyncio.sleep(0.01)
                raise KeyError(SECRET_DETAIL)
            if message == "coded":
                raise AgentError(SECRET_DETAIL, code="db_down")
            if message == "busy":
                raise AgentBusy()
            if message == "hang":
                await asyncio.Event().wait()
            if message == "trickle":  # streams forever, politely
                while True:
                    yield "more "
                    await asyncio.sleep(0.01)
            if message == "spin":  # streams forever without ever awaiting anything
                while True:
                    yield "x"
        except (asyncio.CancelledError, GeneratorExit):
            self.stopped.append(message)
            raise


def fault_settings(tmp_path: Path, timeout_s: float = 0.6, **limits: Any) -> Any:
    return make_settings(
        tmp_path,
        agent={"timeout_s": timeout_s},
        limits=limits,
        shutdown={"drain_timeout_s": 0},
        security={"rate_limiting": {"max_requests_per_minute": 10_000, "burst": 1_000}},
    )


def assert_safe(error: dict[str, Any]) -> None:
    text = json.dumps(error)
    for leak in ("hunter2", "10.9.8.7", "RuntimeError", "KeyError", "Traceback", "db_down"):
        assert leak not in text, error
    assert isinstance(error["message"], str) and error["message"]


@pytest.mark.parametrize("message", ["raise", "raise-late"])
async def test_an_agent_that_raises_gives_a_safe_agent_error_and_logs_the_details(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture, message: str
) -> None:
    caplog.set_level(logging.INFO, logger="qa_ws.server")
    async with run_gateway(fault_settings(tmp_path), Faulty()) as gw:
        ws, hello = await connect(http, gw)
        await send(ws, message)
        events = await until(ws, answer_to("m1"), timeout=10)
        error = events[-1]
        assert error["type"] == "error" and error["code"] == "agent_error"
        assert error["reply_to"] == "m1" and isinstance(error["seq"], int)
        assert_safe(error)
        deltas = [e["delta"] for e in events if e["type"] == "agent_delta"]
        assert deltas == (["a first piece, "] if message == "raise-late" else [])
        assert (await chat(ws, "m2", "ok then"))["content"] == "fine: ok then"  # it stays

    logged = [r for r in caplog.records if r.getMessage() == "agent raised"]
    assert len(logged) == 1
    fields = logged[0].fields  # type: ignore[attr-defined]
    assert fields["connection"] == hello["connection_id"]
    assert fields["session"] == hello["session_id"] and fields["reply_to"] == "m1"
    assert logged[0].exc_info is not None and SECRET_DETAIL in str(logged[0].exc_info[1])


async def send(ws: aiohttp.ClientWebSocketResponse, content: str, msg_id: str = "m1") -> None:
    await ws.send_json({"type": "chat_message", "id": msg_id, "content": content})


async def test_agent_errors_pass_their_protocol_code_and_hide_any_other(
    tmp_path: Path, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="qa_ws.server")
    async with run_gateway(fault_settings(tmp_path), Faulty()) as gw:
        ws, hello = await connect(http, gw)
        coded = await chat(ws, "m1", "coded")
        assert coded["code"] == "agent_error"
        assert_safe(coded)
        busy = await chat(ws, "m2", "busy")  # a protocol code with a safe message passes
        assert (
            busy["code"] == "agent_busy" and busy["message"] == "the agent is busy, retry shortly"
        )
    logged = [r for r in caplog.records if r.getMessage() == "agent error"]
    assert [r.fields["agent_code"] for r in logged] == ["db_down"]  # type: ignore[attr-defined]
    assert logged[0].fields["connection"] == hello["connection_id"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("message", ["hang", "trickle", "spin"])
async def test_an_agent_that_hangs_or_streams_forever_times_out_and_others_carry_on(
    tmp_path: Path, http: aiohttp.ClientSession, message: str
) -> None:
    agent = Faulty()
    settings = fault_settings(tmp_path, timeout_s=1.0, send_queue_bytes=256 * 1024 * 1024)
    async with run_gateway(settings, agent) as gw:
        bystander, _ = await connect(http, gw, "bob")
        ws, _ = await connect(http, gw, "alice")
        await send(ws, message)
        ending = asyncio.create_task(until(ws, answer_to("m1"), timeout=15))
        for n in range(5):  # meanwhile the loop is free: another user chats
            assert (await chat(bystander, f"b{n}", f"ok {n}"))["content"] == f"fine: ok {n}"
            await ping(bystander, f"p{n}")
        events = await ending
        error = events[-1]
        assert error["type"] == "error" and error["code"] == "agent_timeout"
        assert error["reply_to"] == "m1" and error["message"]
        deltas = [e for e in events if e["type"] == "agent_delta"]
        assert (len(deltas) > 0) is (message != "hang")
        assert agent.stopped == [message]  # the agent was stopped, not left running
        assert (await chat(ws, "m2", "ok again"))["content"] == "fine: ok again"


async def test_cancel_stops_an_answer_in_flight(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    agent = Faulty()
    async with run_gateway(fault_settings(tmp_path, timeout_s=30), agent) as gw:
        ws, _ = await connect(http, gw)
        await send(ws, "trickle")
        assert (await next_event(ws))["type"] == "agent_delta"
        await ws.send_json({"type": "cancel", "id": "c1", "target": "m1"})
        error = (await until(ws, answer_to("m1")))[-1]
        assert error["type"] == "error" and error["code"] == "cancelled"
        assert agent.stopped == ["trickle"]
        assert gw.gateway.driver.inflight() == 0


async def test_a_cancel_that_arrives_with_its_chat_still_ends_it_and_frees_the_slot(
    tmp_path: Path,
) -> None:
    """Chat and cancel in one TCP write: the cancel lands before the answer's task ran."""
    settings = fault_settings(tmp_path, timeout_s=30, max_inflight_per_connection=1)
    async with run_gateway(settings, Faulty()) as gw:
        peer = await RawPeer.open(gw, gw.token())
        try:
            await peer.read_frame()  # connected
            peer.writer.write(
                peer.encode_frame(WS_TEXT, b'{"type":"chat_message","id":"m1","content":"hang"}')
                + peer.encode_frame(WS_TEXT, b'{"type":"cancel","id":"c1","target":"m1"}')
            )
            frame = await asyncio.wait_for(peer.read_frame(), 10)
            assert frame is not None and frame.opcode == WS_TEXT
            event = json.loads(frame.payload)
            assert event["code"] == "cancelled" and event["reply_to"] == "m1"
            assert gw.gateway.driver.inflight() == 0

            # the one in-flight slot is free again, and the id may be used once more
            peer.send_text(b'{"type":"chat_message","id":"m1","content":"ok now"}')
            frame = await asyncio.wait_for(peer.read_frame(), 10)
            assert frame is not None
            answers = [json.loads(frame.payload)]
            while answers[-1]["type"] == "agent_delta":
                frame = await asyncio.wait_for(peer.read_frame(), 10)
                assert frame is not None
                answers.append(json.loads(frame.payload))
            assert answers[-1]["type"] == "agent_response"
            assert answers[-1]["content"] == "fine: ok now"
        finally:
            peer.close()
