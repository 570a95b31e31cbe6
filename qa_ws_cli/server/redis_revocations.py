"""Revocations in Redis, shared by every instance and by ``qa-ws token revoke --redis-url``.

Two hashes: ``qa-ws:revoked:jti`` (token id -> its expiry) and ``qa-ws:revoked:sub`` (user ->
JSON ``{"before": t, "exp": t}``: that user's tokens issued before ``before`` are refused until
``exp``). A revocation is written, then announced on the instances' channel; each instance
reads both hashes again and closes the revoked connections it holds with 4003 (and reads them
every few seconds anyway, so an announcement missed during an outage is caught up).
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from qa_ws_cli.auth.revocation import Revocations
from qa_ws_cli.server.redis_batch import REDIS_FAILURES
from qa_ws_cli.server.redis_sessions import as_text

IDS_KEY = "qa-ws:revoked:jti"
SUBJECTS_KEY = "qa-ws:revoked:sub"
CHANNEL = "qa-ws:cluster"
ANNOUNCEMENT = json.dumps({"v": 2, "k": "revoke", "o": "cli"})


def parse_revocations(
    ids: dict[Any, Any], subjects: dict[Any, Any], now: float | None = None
) -> tuple[dict[str, float], dict[str, float]]:
    """The live entries of both hashes; malformed or expired ones are left out."""
    now = time.time() if now is None else now
    live_ids: dict[str, float] = {}
    for jti, exp in ids.items():
        try:
            if float(exp) > now:
                live_ids[as_text(jti)] = float(exp)
        except (TypeError, ValueError):
            continue
    live_subjects: dict[str, float] = {}
    for sub, raw in subjects.items():
        try:
            entry = json.loads(raw)
            if float(entry["exp"]) > now:
                live_subjects[as_text(sub)] = float(entry["before"])
        except (TypeError, ValueError, KeyError):
            continue
    return live_ids, live_subjects


async def read_revocations(
    client: aioredis.Redis,
) -> tuple[dict[str, float], dict[str, float]]:
    """Both hashes' live entries, for an instance (asyncio); the expired ones are deleted."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(IDS_KEY)
        pipe.hgetall(SUBJECTS_KEY)
        ids, subjects = await pipe.execute()
    live_ids, live_subjects = parse_revocations(ids, subjects)
    gone_ids = [k for k in ids if as_text(k) not in live_ids]
    gone_subjects = [k for k in subjects if as_text(k) not in live_subjects]
    with contextlib.suppress(*REDIS_FAILURES):  # what is left is dropped at the next read
        if gone_ids:
            await client.hdel(IDS_KEY, *gone_ids)
        if gone_subjects:
            await client.hdel(SUBJECTS_KEY, *gone_subjects)
    return live_ids, live_subjects


class RedisRevocations(Revocations):
    """The command line's side: write, announce, read (synchronous redis-py)."""

    def __init__(self, url: str, *, timeout_s: float = 3.0) -> None:
        self.url = url
        self.client = redis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )

    def revoke(self, jti: str, exp: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(IDS_KEY, jti, exp)
        pipe.publish(CHANNEL, ANNOUNCEMENT)
        pipe.execute()

    def revoke_subject(self, sub: str, before: float, keep_until: float) -> None:
        entry = json.dumps({"before": before, "exp": keep_until})
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(SUBJECTS_KEY, sub, entry)
        pipe.publish(CHANNEL, ANNOUNCEMENT)
        pipe.execute()

    def _read(self) -> tuple[dict[str, float], dict[str, float]]:
        ids: Any = self.client.hgetall(IDS_KEY)
        subjects: Any = self.client.hgetall(SUBJECTS_KEY)
        return parse_revocations(ids, subjects)

    def revoked_ids(self) -> frozenset[str]:
        return frozenset(self._read()[0])

    def revoked_subjects(self) -> dict[str, float]:
        return self._read()[1]

    def close(self) -> None:
        self.client.close()
