"""Where sessions live: one ``SessionStore`` interface, kept in memory or in Redis.

A session is a typed value: its user, its last ``seq``, the replay log of its replayable
events (bounded by count and age), the answers to its chat ids (bounded by count), its recent
turns, and its claims: the chat ids being answered, each with the instance that runs it and a
lease that instance renews. ``MemorySessionStore`` keeps it in this process (the embedded
default); ``RedisSessionStore`` (``redis_sessions.py``) keeps it where every instance can
resume it. The replay rules below are shared by both.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from qa_ws_cli.config import SessionSettings
from qa_ws_cli.server.session_core import with_seq
from qa_ws_cli.server.session_outputs import (
    Answered,
    Claimed,
    ClaimResult,
    Publish,
    RunningElsewhere,
)

Event = tuple[int, float, str]  # (seq, wall-clock time it was kept, frame)


@dataclass(frozen=True, slots=True)
class ResumeRecord:
    """What an instance needs to resume a session at ``last_seq``."""

    user: str
    seq: int
    frames: list[str] | None  # the kept frames after last_seq; None: the gap cannot be filled
    running: list[str] = field(default_factory=list)  # claimed, lease alive
    interrupted: list[str] = field(default_factory=list)  # claimed, lease lapsed


class EndedClaims(NamedTuple):
    """Of some chat ids run elsewhere, those no longer running anywhere."""

    lapsed: list[str]  # still claimed, the lease lapsed: their instance died
    released: list[str]  # not claimed: answered, failed or given up


def replay_after(
    events: Sequence[Event], seq: int, last_seq: int, horizon: float
) -> list[str] | None:
    """The frames after ``last_seq`` kept since ``horizon``, or None when they are not all kept."""
    if last_seq < 0 or last_seq > seq:
        return None
    if last_seq == seq:
        return []
    kept = [(s, frame) for s, at, frame in events if at >= horizon]
    if not kept or kept[0][0] > last_seq + 1:
        return None
    return [frame for s, frame in kept if s > last_seq]


class SessionStore(ABC):
    """The session half of a store; ``Store`` (``store.py``) adds what instances share."""

    sessions: SessionSettings = SessionSettings()

    def configure(self, settings: SessionSettings) -> None:
        self.sessions = settings

    @abstractmethod
    async def create(self, session_id: str, user: str) -> None:
        """A new, empty session of ``user``."""

    @abstractmethod
    async def resume(self, session_id: str, last_seq: int) -> ResumeRecord | None:
        """The session, or None when it is unknown, expired or its record is malformed."""

    @abstractmethod
    async def claim(
        self, session_id: str, chat_id: str, instance: str, rate_user: str | None = None
    ) -> ClaimResult:
        """Atomically: the stored answer, the instance running it, or the claim is ours.

        With ``rate_user``, the chat is first counted against that user's rate limit (the
        limiter this store made, ``Store.rate_limiter``), in the same step: over it, the answer
        is ``RateLimited`` and nothing is claimed. A store without a limiter ignores it."""

    @abstractmethod
    async def append(
        self, session_id: str, user: str, event: Publish, min_seq: int = 0
    ) -> tuple[int, str] | None:
        """Keep a replayable event: its ``seq`` (at least ``min_seq``) and its frame; None when
        ``event.only_if_claimed`` and the claim is gone, or ``event.instead`` and the chat was
        answered already."""

    @abstractmethod
    async def frames_after(self, session_id: str, seq: int) -> list[tuple[int, str]]:
        """The kept frames after ``seq`` (to close the gap between a resume and its attach)."""

    @abstractmethod
    async def renew(self, claims: Iterable[tuple[str, str]], instance: str) -> None:
        """Renew the leases of ``(session_id, chat_id)`` runs this instance is running."""

    @abstractmethod
    async def ended(self, session_id: str, chat_ids: Iterable[str]) -> EndedClaims:
        """Those of ``chat_ids`` whose claim lapsed, and those no longer claimed."""

    @abstractmethod
    async def touch(self, session_ids: Iterable[str]) -> None:
        """Keep attached sessions alive: their TTL counts from now."""

    def expired_sessions(self) -> list[str]:
        """Sessions dropped since the last call (their runs on this instance are stopped)."""
        return []


@dataclass(slots=True)
class SessionRecord:
    user: str
    expires_at: float
    seq: int = 0
    events: deque[Event] | None = None  # made on first use: most sessions stay empty
    answers: dict[str, str] | None = None  # made on first use too (an idle session has none)
    history: deque[tuple[str, str]] | None = None
    claims: dict[str, tuple[str, float]] | None = None  # chat id: (instance, lease)


class MemorySessionStore(SessionStore):
    """Sessions in this process: one instance, or the fallback while Redis is away."""

    def __init__(self) -> None:
        self.records: dict[str, SessionRecord] = {}
        self._expired: list[str] = []

    def __len__(self) -> int:
        return len(self.records)

    def _get(self, session_id: str, now: float | None = None) -> SessionRecord | None:
        record = self.records.get(session_id)
        if record is not None and record.expires_at < (time.time() if now is None else now):
            del self.records[session_id]
            self._expired.append(session_id)
            return None
        return record

    def _record(self, session_id: str, user: str, now: float) -> SessionRecord:
        record = self._get(session_id, now)
        if record is None:
            record = SessionRecord(user, now + self.sessions.ttl_s)
            self.records[session_id] = record
        return record

    async def create(self, session_id: str, user: str) -> None:
        self._record(session_id, user, time.time())

    async def resume(self, session_id: str, last_seq: int) -> ResumeRecord | None:
        record = self._get(session_id)
        if record is None:
            return None
        now = time.time()
        record.expires_at = now + self.sessions.ttl_s
        horizon = now - self.sessions.buffer_age_s
        frames = replay_after(record.events or (), record.seq, last_seq, horizon)
        held = (record.claims or {}).items()
        running = [c for c, (_, lease) in held if lease >= now]
        lapsed = [c for c, (_, lease) in held if lease < now]
        return ResumeRecord(record.user, record.seq, frames, running, lapsed)

    async def claim(
        self, session_id: str, chat_id: str, instance: str, rate_user: str | None = None
    ) -> ClaimResult:
        return self.claim_now(session_id, chat_id, instance)

    def claim_now(self, session_id: str, chat_id: str, instance: str) -> ClaimResult:
        """``claim`` for a caller that need not await (the memory store's counted claim)."""
        now = time.time()
        record = self._get(session_id, now)
        if record is None:
            return Claimed()
        stored = record.answers.get(chat_id) if record.answers is not None else None
        if stored is not None:
            return Answered(stored)
        if record.claims is None:
            record.claims = {}
        holder = record.claims.get(chat_id)
        if holder is not None and holder[1] >= now and holder[0] != instance:
            return RunningElsewhere(holder[0])
        record.claims[chat_id] = (instance, now + self.sessions.run_lease_s)
        return Claimed(tuple(record.history or ()))

    async def append(
        self, session_id: str, user: str, event: Publish, min_seq: int = 0
    ) -> tuple[int, str] | None:
        return self.append_now(session_id, user, event, min_seq)

    def append_now(
        self, session_id: str, user: str, event: Publish, min_seq: int = 0
    ) -> tuple[int, str] | None:
        """``append`` for a caller that need not await (the driver, on the memory store)."""
        now = time.time()
        record = self._record(session_id, user, now)
        settings = self.sessions
        chat_id = event.reply_to
        if event.only_if_claimed and (chat_id is None or chat_id not in (record.claims or ())):
            return None
        if event.instead is not None and chat_id in (record.answers or ()):
            return None
        record.seq = seq = max(record.seq + 1, min_seq)
        frame = with_seq(event.body, seq)
        if settings.buffer_events:
            if record.events is None:
                record.events = deque(maxlen=settings.buffer_events)
            record.events.append((seq, now, frame))
        if chat_id is not None:
            if event.answer and settings.max_answered_ids:
                if record.answers is None:
                    record.answers = {}
                answers = record.answers
                answers[chat_id] = frame
                if len(answers) > settings.max_answered_ids:
                    del answers[next(iter(answers))]  # the oldest: dicts keep insertion order
            if event.release and record.claims:
                record.claims.pop(chat_id, None)
        if event.turn is not None and settings.history_turns:
            if record.history is None:
                record.history = deque(maxlen=settings.history_turns)
            record.history.append(event.turn)
        record.expires_at = now + settings.ttl_s
        return seq, frame

    async def frames_after(self, session_id: str, seq: int) -> list[tuple[int, str]]:
        record = self._get(session_id)
        if record is None:
            return []
        return [(s, frame) for s, _, frame in record.events or () if s > seq]

    async def renew(self, claims: Iterable[tuple[str, str]], instance: str) -> None:
        lease = time.time() + self.sessions.run_lease_s
        for session_id, chat_id in claims:
            record = self.records.get(session_id)
            if record is not None and record.claims and chat_id in record.claims:
                record.claims[chat_id] = (instance, lease)

    async def ended(self, session_id: str, chat_ids: Iterable[str]) -> EndedClaims:
        record = self._get(session_id)
        ids = list(chat_ids)
        held = record.claims or {} if record is not None else {}
        now = time.time()
        lapsed = [c for c in ids if c in held and held[c][1] < now]
        return EndedClaims(lapsed, [c for c in ids if c not in held])

    async def touch(self, session_ids: Iterable[str]) -> None:
        expires_at = time.time() + self.sessions.ttl_s
        for session_id in session_ids:
            record = self.records.get(session_id)
            if record is not None:
                record.expires_at = expires_at

    def sweep(self) -> int:
        """Drop expired sessions (the memory of users who left)."""
        now = time.time()
        expired = [sid for sid, record in self.records.items() if record.expires_at < now]
        for session_id in expired:
            del self.records[session_id]
        self._expired.extend(expired)
        return len(expired)

    def expired_sessions(self) -> list[str]:
        expired, self._expired = self._expired, []
        return expired
