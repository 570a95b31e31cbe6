"""Session records in a real ``redis-server``: what a record this version cannot read does.

A record written by another version, or damaged by hand, must be treated as missing (a fresh
session), never a failed handshake; a damaged history turn is left out, never a failed chat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
import redis

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.server.redis_sessions import StoredTurns, parse_turns, turn_json
from qa_ws_cli.server.redis_store import RedisStore
from tests.conftest import Running, make_settings, run_gateway
from tests.redis_server import RedisServer
from tests.server.wire import chat, connect


class HistoryAgent(Agent):
    """Answers with the history it was given."""

    async def chat(self, message: str, context: ChatContext | None = None) -> str:
        history = context.history if context is not None else ()
        return f"{len(history)} turns: {[t.content for t in history]}"


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_server.url) as client:
        yield client


@pytest.fixture
async def gateway(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Running]:
    settings = make_settings(tmp_path, agent={"spec": "echo"})
    async with run_gateway(settings, HistoryAgent(), RedisStore(redis_server.url)) as gw:
        yield gw


def key(session_id: str, part: str) -> str:
    return f"qa-ws:s:{{{session_id}}}:{part}"


@pytest.mark.parametrize(
    "damage",
    [
        {"m": {"user": "alice", "seq": "not a number"}},
        {"m": {"user": "alice"}},  # no seq
        {"e": [{"x": "no seq, no frame"}]},
        {"e": [{"s": "NaN?", "f": "{}"}]},
    ],
)
async def test_a_session_record_this_version_cannot_read_is_a_fresh_session(
    gateway: Running, client: redis.Redis, http: aiohttp.ClientSession, damage: dict[str, object]
) -> None:
    ws, hello = await connect(http, gateway, "alice")
    assert (await chat(ws, "q1", "kept?"))["type"] == "agent_response"
    await ws.close()
    sid = hello["session_id"]
    for part, value in damage.items():
        if part == "m":
            client.delete(key(sid, "m"))
            client.hset(key(sid, "m"), mapping=value)  # type: ignore[arg-type]
        else:
            for fields in value:  # type: ignore[attr-defined]
                client.xadd(key(sid, "e"), fields)

    again, fresh = await connect(http, gateway, "alice", params={"session_id": sid, "last_seq": 0})
    assert fresh["resumed"] is False and fresh["session_id"] != sid
    assert (await chat(again, "q2", "still answered"))["type"] == "agent_response"


async def test_a_damaged_history_turn_is_left_out_and_the_chat_answered(
    gateway: Running, client: redis.Redis, http: aiohttp.ClientSession
) -> None:
    ws, hello = await connect(http, gateway, "alice")
    assert (await chat(ws, "q1", "first"))["content"] == "0 turns: []"
    client.rpush(key(hello["session_id"], "h"), b"{not json", b'["only one"]')
    answer = await chat(ws, "q2", "second")
    assert answer["content"] == "2 turns: ['first', '0 turns: []']"


def test_stored_turns_are_parsed_on_first_read_and_compare_as_a_tuple() -> None:
    raw = [b'["q1", "a1"]', b'["q2", "a2"]']
    turns = StoredTurns(raw)
    raw.append(b'["q3", "a3"]')  # not read yet: the first read sees what the claim returned
    assert len(turns) == 3 and turns[0] == ("q1", "a1") and turns[-1] == ("q3", "a3")
    assert turns == (("q1", "a1"), ("q2", "a2"), ("q3", "a3")) and turns[1:2] == (("q2", "a2"),)
    assert hash(turns) == hash(tuple(turns))
    assert parse_turns([b'["q", "a"]', b"[1, 2, 3]", b"7", b'["x", 2]']) == (
        ("q", "a"),
        ("x", "2"),
    )


async def test_a_turn_in_any_script_comes_back_in_the_history_as_it_was_said(
    gateway: Running, client: redis.Redis, http: aiohttp.ClientSession
) -> None:
    ws, hello = await connect(http, gateway, "alice")
    said = 'é 漢字 😀 "quoted" \\ back\nslash </script>'
    assert (await chat(ws, "q1", said))["content"] == "0 turns: []"
    answer = await chat(ws, "q2", "again")
    assert answer["content"] == f"2 turns: {[said, '0 turns: []']}"
    kept = client.lrange(key(hello["session_id"], "h"), 0, -1)
    assert "漢字".encode() in kept[0]  # stored as UTF-8, as orjson writes it


def test_a_turn_orjson_refuses_is_kept_with_the_stdlib_s_escapes() -> None:
    lone = "half \ud800 a pair"  # a lone surrogate: not UTF-8, so orjson refuses it
    kept = turn_json((lone, "answer"))
    assert kept.isascii() and parse_turns([kept.encode()]) == ((lone, "answer"),)
    assert turn_json(("é", "😀")) == '["é","😀"]'


async def test_a_new_session_s_record_is_written_with_its_ttl_in_one_command(
    redis_server: RedisServer, client: redis.Redis
) -> None:
    """Even where the batch splits (a full batch, here one command a batch): written in two,
    an outage between them would leave a record that never expires."""
    store = RedisStore(redis_server.url)
    store.batch.max_batch = 1
    try:
        await store.create("s0", "alice")  # Redis learns the script (NOSCRIPT, then again)
        sent = store.batch.batches
        await store.create("s1", "alice")
        assert store.batch.batches == sent + 1
        assert client.hgetall(key("s1", "m")) == {b"user": b"alice", b"seq": b"0"}
        assert 0 < client.ttl(key("s1", "m")) <= store.sessions.ttl_s
    finally:
        await store.aclose()
