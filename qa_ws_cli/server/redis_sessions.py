"""Sessions in Redis: the same value as ``MemorySessionStore``'s, written through as it changes.

One session is a handful of keys sharing the hash tag ``{id}`` (so a Redis Cluster keeps them on
one node), all expiring ``ttl_s`` after the session was last used:

- ``qa-ws:s:{id}:m``  hash: ``user``, ``seq``
- ``qa-ws:s:{id}:e``  stream: the replay log, capped at ``buffer_events``; an entry's id is the
  time it was kept (its age), its fields ``s`` (seq) and ``f`` (the frame)
- ``qa-ws:s:{id}:a``  hash: chat id -> the answer's frame; ``:o`` list: their order, to cap them
- ``qa-ws:s:{id}:h``  list: the recent turns, as JSON ``[question, answer]``
- ``qa-ws:s:{id}:c``  hash: claimed chat id -> instance; ``:l:<chat id>``: its lease (PX)

Two Lua scripts make the rules atomic: ``claim`` (answered? running elsewhere? else ours) and
``append`` (next seq, log, answer, turn and release in one step). So a chat id is answered once
across the cluster, and seq grows by one whichever instance publishes. A counted claim first
counts the chat against its user's rate limit (``limits.py``'s ``rate_hit``, on the user's
own hash) in the same script: one script a chat instead of two. That script touches two hash
tags, so the store needs one Redis server (a primary, with replicas or Sentinel if wanted), not
a Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from typing import Any

import orjson
import redis.asyncio as aioredis

from qa_ws_cli.config import SessionSettings
from qa_ws_cli.lazy import LazyTuple
from qa_ws_cli.server.limits import HIT_FUNCTION, RateLimiter
from qa_ws_cli.server.memory_limits import round_retry
from qa_ws_cli.server.redis_batch import AutoPipeline
from qa_ws_cli.server.session_outputs import (
    Answered,
    Claimed,
    ClaimResult,
    Publish,
    RateLimited,
    RunningElsewhere,
)
from qa_ws_cli.server.session_store import (
    EndedClaims,
    Event,
    ResumeRecord,
    SessionStore,
    replay_after,
)

PREFIX = "qa-ws:s:"
SESSION_PARTS = ("m", "e", "a", "o", "h", "c")  # the session's keys, as KEYS[1..6] of ``append``

# one command, so that a batch boundary or an outage never leaves the record without its TTL
_CREATE = """
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'seq', 0)
return redis.call('EXPIRE', KEYS[1], ARGV[2])
"""

_CLAIM = """
local answer = redis.call('HGET', KEYS[1], ARGV[1])
if answer then return {'answered', answer} end
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[2] then return {'running', holder} end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {'claimed', redis.call('LRANGE', KEYS[4], 0, -1)}
"""

_COUNTED_CLAIM = (
    HIT_FUNCTION
    + """
local wait = rate_hit(KEYS[5], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
if wait then return {'limited', wait} end
"""
    + _CLAIM
)

_APPEND = """
local chat = ARGV[6]
if ARGV[9] == '1' and redis.call('HEXISTS', KEYS[6], chat) == 0 then return false end
if ARGV[9] == '2' and redis.call('HEXISTS', KEYS[3], chat) == 1 then return false end
redis.call('HSETNX', KEYS[1], 'user', ARGV[2])
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local floor = tonumber(ARGV[3])
if seq < floor then
  seq = floor
  redis.call('HSET', KEYS[1], 'seq', seq)
end
local frame = '{"seq":' .. seq .. ',' .. string.sub(ARGV[1], 2)
if tonumber(ARGV[4]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], '*', 's', seq, 'f', frame)
end
if chat ~= '' then
  local max_answers = tonumber(ARGV[12])
  if ARGV[7] == '1' and max_answers > 0 and redis.call('HSET', KEYS[3], chat, frame) == 1 then
    redis.call('RPUSH', KEYS[4], chat)
    if redis.call('LLEN', KEYS[4]) > max_answers then
      redis.call('HDEL', KEYS[3], redis.call('LPOP', KEYS[4]))
    end
  end
  if ARGV[8] == '1' then
    redis.call('HDEL', KEYS[6], chat)
    redis.call('DEL', KEYS[7])
  end
end
local turns = tonumber(ARGV[11])
if ARGV[10] ~= '' and turns > 0 then
  redis.call('RPUSH', KEYS[5], ARGV[10])
  redis.call('LTRIM', KEYS[5], -turns, -1)
end
for i = 1, 6 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return {seq, frame}
"""


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def claim_result(reply: list[Any]) -> ClaimResult:
    """What the claim's script answered (``_CLAIM``, ``_COUNTED_CLAIM``)."""
    kind, value = reply
    kind = as_text(kind)
    if kind == "answered":
        return Answered(as_text(value))
    if kind == "running":
        return RunningElsewhere(as_text(value))
    if kind == "limited":
        return RateLimited(round_retry(float(value)))
    return Claimed(StoredTurns(value))


def _append_condition(event: Publish) -> int:
    """``_APPEND``'s ARGV[9]: 1 only while the chat is claimed, 2 unless it was answered."""
    return 1 if event.only_if_claimed else 2 if event.instead is not None else 0


def append_result(reply: list[Any] | None) -> tuple[int, str] | None:
    """The seq and frame the append's script kept, or None (not kept: ``only_if_claimed`` and
    not claimed, or ``instead`` and answered already)."""
    if not reply:
        return None
    return int(reply[0]), as_text(reply[1])


class StoredTurns(LazyTuple[tuple[str, str]]):
    """The session's turns as the claim read them (each ``[question, answer]`` in JSON),
    parsed on first read: an agent that never looks at its history costs nothing for it."""

    __slots__ = ("_raw",)

    def __init__(self, raw: list[bytes]) -> None:
        super().__init__()
        self._raw = raw

    def _make(self) -> tuple[tuple[str, str], ...]:
        return parse_turns(self._raw)


def _prefix(session_id: str) -> str:
    """What every key of the session starts with (its id as the hash tag)."""
    return f"{PREFIX}{{{session_id}}}:"


def turn_json(turn: tuple[str, str]) -> str:
    """``[question, answer]`` as the list ``:h`` keeps it: orjson's UTF-8, or the stdlib's
    escapes for what orjson refuses (a lone surrogate, which Redis's UTF-8 could not carry)."""
    try:
        return orjson.dumps(turn).decode()
    except orjson.JSONEncodeError:
        return json.dumps(turn)


def parse_turns(raw: list[bytes]) -> tuple[tuple[str, str], ...]:
    """Parsed as one array (one call into the C decoder, not one per turn), or one by one if a
    turn is malformed: a malformed turn is left out, never a failed chat."""
    try:
        turns = json.loads(b"[" + b",".join(raw) + b"]")
        return tuple((str(q), str(a)) for q, a in turns)
    except (ValueError, TypeError):
        pass
    history: list[tuple[str, str]] = []
    for item in raw:
        try:
            question, answer = json.loads(item)
        except (ValueError, TypeError):
            continue
        history.append((str(question), str(answer)))
    return tuple(history)


def _by_seq(event: Event) -> int:
    return event[0]


class RedisSessionStore(SessionStore):
    """The session half of ``RedisStore``; every call may raise redis-py's errors."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.batch = AutoPipeline(client)  # the chat path's commands, many chats a round trip
        self._create = client.register_script(_CREATE)
        self._claim = client.register_script(_CLAIM)
        self._counted_claim = client.register_script(_COUNTED_CLAIM)
        self.limiter: RateLimiter | None = None  # set by ``RedisStore.rate_limiter``
        self._append = client.register_script(_APPEND)
        RedisSessionStore.configure(self, self.sessions)

    def configure(self, settings: SessionSettings) -> None:
        super().configure(settings)
        self.key_ttl_s = max(1, int(settings.ttl_s))  # every key's, in seconds
        self.lease_ms = int(settings.run_lease_s * 1000)

    @staticmethod
    def key(session_id: str, part: str) -> str:
        return _prefix(session_id) + part

    def _keys(self, session_id: str, chat_id: str = "") -> list[str]:
        """The session's keys (``SESSION_PARTS``, in the scripts' order), then the chat's lease."""
        base = _prefix(session_id)
        keys = [base + part for part in SESSION_PARTS]
        keys.append(f"{base}l:{chat_id}")
        return keys

    async def create(self, session_id: str, user: str) -> None:
        await self.batch.script(self._create, (self.key(session_id, "m"),), (user, self.key_ttl_s))

    async def resume(self, session_id: str, last_seq: int) -> ResumeRecord | None:
        keys = self._keys(session_id)
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hmget(keys[0], ["user", "seq"])
            pipe.xrange(keys[1])
            pipe.hkeys(keys[5])
            for key in keys[:6]:
                pipe.expire(key, self.key_ttl_s)
            meta, entries, claimed, *_ = await pipe.execute()
        try:
            user, seq = as_text(meta[0]), int(meta[1])
            events = self._events(entries)
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            return None  # unknown, or a record this version cannot read: a fresh session
        horizon = time.time() - self.sessions.buffer_age_s
        frames = replay_after(events, seq, last_seq, horizon)
        chat_ids = [as_text(c) for c in claimed]
        ended = await self.ended(session_id, chat_ids) if chat_ids else EndedClaims([], [])
        gone = {*ended.lapsed, *ended.released}
        running = [c for c in chat_ids if c not in gone]
        return ResumeRecord(user, seq, frames, running, sorted(ended.lapsed))

    @staticmethod
    def _events(entries: list[Any]) -> list[Event]:
        events: list[Event] = []
        for entry_id, fields in entries:
            at = int(as_text(entry_id).split("-", 1)[0]) / 1000
            seq, frame = int(fields[b"s"]), as_text(fields[b"f"])
            events.append((seq, at, frame))
        events.sort(key=_by_seq)  # what an outage kept was written back after later events
        return events

    async def claim(
        self, session_id: str, chat_id: str, instance: str, rate_user: str | None = None
    ) -> ClaimResult:
        return claim_result(await self.send_claim(session_id, chat_id, instance, rate_user))

    def send_claim(
        self, session_id: str, chat_id: str, instance: str, rate_user: str | None = None
    ) -> asyncio.Future[Any]:
        """The claim's script, in the next batch; its reply is for ``claim_result``. Apart so
        that ``RedisStore`` awaits the batch's reply itself: one coroutine fewer to resume."""
        base = _prefix(session_id)
        keys = [base + "a", base + "c", f"{base}l:{chat_id}", base + "h"]
        args: list[str | int] = [chat_id, instance, self.lease_ms, self.key_ttl_s]
        script, limiter = self._claim, self.limiter
        if rate_user is not None and limiter is not None:
            script = self._counted_claim
            keys.append(limiter.key(rate_user))
            args.extend(limiter.script_args())
        return self.batch.script(script, keys, args)

    async def append(
        self, session_id: str, user: str, event: Publish, min_seq: int = 0
    ) -> tuple[int, str] | None:
        return append_result(await self.send_append(session_id, user, event, min_seq))

    def send_append(
        self, session_id: str, user: str, event: Publish, min_seq: int = 0
    ) -> asyncio.Future[Any]:
        """The append's script, in the next batch; its reply is for ``append_result``."""
        s = self.sessions
        chat_id = event.reply_to or ""
        turn = turn_json(event.turn) if event.turn is not None else ""
        args: list[str | int] = [
            event.body,
            user,
            min_seq,
            s.buffer_events,
            self.key_ttl_s,
            chat_id,
            int(event.answer),
            int(event.release),
            _append_condition(event),
            turn,
            s.history_turns,
            s.max_answered_ids,
        ]
        return self.batch.script(self._append, self._keys(session_id, chat_id), args)

    async def frames_after(self, session_id: str, seq: int) -> list[tuple[int, str]]:
        entries: list[Any] = await self.client.xrange(self.key(session_id, "e")) or []
        return [(s, frame) for s, _, frame in self._events(entries) if s > seq]

    async def renew(self, claims: Iterable[tuple[str, str]], instance: str) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for session_id, chat_id in claims:
                pipe.set(self.key(session_id, f"l:{chat_id}"), instance, px=self.lease_ms)
            await pipe.execute()

    async def ended(self, session_id: str, chat_ids: Iterable[str]) -> EndedClaims:
        ids = list(chat_ids)
        async with self.client.pipeline(transaction=False) as pipe:
            for chat_id in ids:
                pipe.hexists(self.key(session_id, "c"), chat_id)
                pipe.exists(self.key(session_id, f"l:{chat_id}"))
            found = await pipe.execute()
        held = list(zip(ids, found[::2], found[1::2], strict=True))
        lapsed = [c for c, claimed, alive in held if claimed and not alive]
        return EndedClaims(lapsed, [c for c, claimed, _ in held if not claimed])

    async def touch(self, session_ids: Iterable[str]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for session_id in session_ids:
                for part in SESSION_PARTS:
                    pipe.expire(self.key(session_id, part), self.key_ttl_s)
            await pipe.execute()
