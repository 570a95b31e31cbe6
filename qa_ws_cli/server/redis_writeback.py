"""What an instance kept in its memory while Redis was away, written back once Redis answers.

During an outage each instance serves its sessions from its own memory (``RedisStore.local``):
the events it published, the answers it gave, the turns said, the chats it claimed. Left there,
Redis would not know them once it is back: a resume, on this instance too, could not fill the
gap; an id answered meanwhile would be answered again; and the claims those answers released
only in memory would lapse in Redis into ``agent_interrupted`` for chats that were answered.
So each session the memory holds is written back in one script: the events past Redis's
``seq`` (Redis keeps a session's events sorted by ``seq`` when it reads them), the answers
(their claims released), the turns, the claims still running here; then the memory forgets it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import orjson

from qa_ws_cli.server.redis_batch import REDIS_FAILURES
from qa_ws_cli.server.redis_sessions import SESSION_PARTS, turn_json
from qa_ws_cli.server.session_store import MemorySessionStore, SessionRecord

if TYPE_CHECKING:
    from qa_ws_cli.server.redis_sessions import RedisSessionStore

log = logging.getLogger("qa_ws.server")

# KEYS: the session's m e a o h c; ARGV: user, ttl, buffer_events, max_answered_ids,
# history_turns, lease ms, the lease keys' prefix, then the record as JSON (``record_json``)
WRITE_BACK = """
local kept = cjson.decode(ARGV[8])
redis.call('HSETNX', KEYS[1], 'user', ARGV[1])
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq')) or 0
local buffer = tonumber(ARGV[3])
for _, event in ipairs(kept.events) do
  if event[1] > seq and buffer > 0 then
    redis.call('XADD', KEYS[2], 'MAXLEN', buffer, '*', 's', event[1], 'f', event[2])
  end
end
if kept.seq > seq then redis.call('HSET', KEYS[1], 'seq', kept.seq) end
local max_answers = tonumber(ARGV[4])
for _, answer in ipairs(kept.answers) do
  if max_answers > 0 and redis.call('HSET', KEYS[3], answer[1], answer[2]) == 1 then
    redis.call('RPUSH', KEYS[4], answer[1])
    if redis.call('LLEN', KEYS[4]) > max_answers then
      redis.call('HDEL', KEYS[3], redis.call('LPOP', KEYS[4]))
    end
  end
  redis.call('HDEL', KEYS[6], answer[1])
  redis.call('DEL', ARGV[7] .. answer[1])
end
for _, claim in ipairs(kept.claims) do
  redis.call('HSET', KEYS[6], claim[1], claim[2])
  redis.call('SET', ARGV[7] .. claim[1], claim[2], 'PX', ARGV[6])
end
local turns = tonumber(ARGV[5])
if turns > 0 then
  for _, turn in ipairs(kept.turns) do redis.call('RPUSH', KEYS[5], turn) end
  redis.call('LTRIM', KEYS[5], -turns, -1)
end
for i = 1, 6 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return #kept.events
"""


def record_json(record: SessionRecord, now: float) -> str:
    """What the memory kept of a session: events in ``seq`` order, answers, turns, and the
    claims whose lease is alive and that no answer released."""
    answers = record.answers or {}
    claims = [
        (chat_id, instance)
        for chat_id, (instance, lease) in (record.claims or {}).items()
        if lease >= now and chat_id not in answers
    ]
    kept = {
        "seq": record.seq,
        "events": sorted((seq, frame) for seq, _, frame in record.events or ()),
        "answers": list(answers.items()),
        "turns": [turn_json(turn) for turn in record.history or ()],
        "claims": claims,
    }
    return orjson.dumps(kept).decode()


async def write_back(store: RedisSessionStore, memory: MemorySessionStore) -> int:
    """Write back (and forget) every live session ``memory`` holds; how many were. A failure
    leaves the rest in memory, for the next time Redis comes back."""
    script = store.client.register_script(WRITE_BACK)
    settings = store.sessions
    written = 0
    for session_id, record in list(memory.records.items()):
        now = time.time()
        if record.expires_at >= now:
            keys = [store.key(session_id, part) for part in SESSION_PARTS]
            args: list[str | int] = [
                record.user,
                store.key_ttl_s,
                settings.buffer_events,
                settings.max_answered_ids,
                settings.history_turns,
                store.lease_ms,
                store.key(session_id, "l:"),
                record_json(record, now),
            ]
            try:
                await script(keys=keys, args=args)
            except REDIS_FAILURES as exc:
                log.warning("writing back the outage's sessions stopped (%s)", type(exc).__name__)
                return written
            written += 1
        if memory.records.get(session_id) is record:
            del memory.records[session_id]
    return written
