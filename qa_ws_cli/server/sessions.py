"""Sessions: per-session ``seq``, a replay buffer bounded by count and age, idempotent ids.

A session outlives its connections: answers keep flowing into it while the client is away
and are replayed on resume. Detached sessions are dropped after ``ttl_s``, so the memory of
users who left is given back.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from qa_ws_cli.agents.base import Turn
from qa_ws_cli.config import SessionSettings
from qa_ws_cli.protocol.codec import encode
from qa_ws_cli.server.connections import Connection


@dataclass(slots=True)
class ChatRun:
    """One answer in flight, and why it was stopped, if it was: ``cancelled_by`` names the
    client's ``cancel``; ``timed_out`` is set by its deadline timer."""

    task: asyncio.Task[None]
    started: float
    deadline: asyncio.TimerHandle | None = None
    cancelled_by: str | None = None
    timed_out: bool = False
    origin: Connection | None = field(default=None, repr=False)

    def expire(self) -> None:
        self.timed_out = True
        self.task.cancel()


class Session:
    __slots__ = (
        "answers",
        "buffer",
        "buffer_events",
        "connection",
        "detached_at",
        "history",
        "history_turns",
        "id",
        "inflight",
        "max_answers",
        "seq",
        "user",
    )

    def __init__(self, session_id: str, user: str, settings: SessionSettings) -> None:
        self.id = session_id
        self.user = user
        self.seq = 0
        # created on first use: an empty deque costs 600 bytes, and most sessions sit idle
        self.buffer: deque[tuple[int, float, str]] | None = None
        self.buffer_events = settings.buffer_events
        self.answers: dict[str, str] = {}
        self.max_answers = settings.max_answered_ids
        self.inflight: dict[str, ChatRun] = {}
        self.history: deque[Turn] | None = None
        self.history_turns = settings.history_turns
        self.connection: Connection | None = None
        self.detached_at: float | None = time.monotonic()

    def publish(self, make: Callable[[int], Any]) -> str:
        """Emit a replayable event: give it the next ``seq``, keep it, send it if attached."""
        self.seq += 1
        frame = encode(make(self.seq))
        if self.buffer_events:
            if self.buffer is None:
                self.buffer = deque(maxlen=self.buffer_events)
            self.buffer.append((self.seq, time.monotonic(), frame))
        if self.connection is not None:
            self.connection.send(frame)
        return frame

    def send_live(self, frame: str) -> None:
        """Emit a non-replayable frame (``agent_delta``, ``pong``) to whoever is attached."""
        if self.connection is not None:
            self.connection.send(frame)

    def remember_answer(self, chat_id: str, frame: str) -> None:
        if not self.max_answers:
            return
        answers = self.answers
        answers[chat_id] = frame
        if len(answers) > self.max_answers:
            del answers[next(iter(answers))]  # the oldest: dicts keep insertion order

    def remember_turn(self, question: str, answer: str) -> None:
        """Recent turns, for backends that send history (bounded by ``history_turns``)."""
        if not self.history_turns:
            return
        if self.history is None:
            self.history = deque(maxlen=2 * self.history_turns)
        self.history.extend((Turn("user", question), Turn("assistant", answer)))

    def snapshot(self) -> dict[str, Any]:
        """What a later instance needs to resume this session (JSON-safe; ages, not clocks)."""
        now = time.monotonic()
        return {
            "id": self.id,
            "user": self.user,
            "seq": self.seq,
            "buffer": [[seq, now - at, frame] for seq, at, frame in self.buffer or ()],
            "answers": self.answers,
            "history": [[turn.role, turn.content] for turn in self.history or ()],
        }

    def replay_after(self, last_seq: int, max_age_s: float) -> list[str] | None:
        """The kept frames after ``last_seq``, or None when the gap cannot be filled."""
        if last_seq < 0 or last_seq > self.seq:
            return None
        buffer = self.buffer
        horizon = time.monotonic() - max_age_s
        while buffer and buffer[0][1] < horizon:
            buffer.popleft()
        if last_seq == self.seq:
            return []
        if not buffer or buffer[0][0] > last_seq + 1:
            return None
        return [frame for seq, _, frame in buffer if seq > last_seq]


class SessionManager:
    def __init__(self, settings: SessionSettings) -> None:
        self.settings = settings
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, user: str) -> Session:
        session = Session(uuid.uuid4().hex, user, self.settings)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def restore(self, snapshot: dict[str, Any]) -> Session:
        """A session handed over by an instance that drained (see ``Session.snapshot``)."""
        session = Session(str(snapshot["id"]), str(snapshot["user"]), self.settings)
        session.seq = int(snapshot["seq"])
        now = time.monotonic()
        if session.buffer_events:
            kept = snapshot["buffer"]
            session.buffer = deque(
                ((int(seq), now - float(age), str(frame)) for seq, age, frame in kept),
                maxlen=session.buffer_events,
            )
        for chat_id, frame in snapshot["answers"].items():
            session.remember_answer(str(chat_id), str(frame))
        turns = snapshot["history"]
        for (_, question), (_, answer) in zip(turns[::2], turns[1::2], strict=False):
            session.remember_turn(str(question), str(answer))
        self._sessions[session.id] = session
        return session

    def attach(self, session: Session, conn: Connection) -> Connection | None:
        """Bind ``conn``; returns a connection that held the session before (to be closed)."""
        previous = session.connection
        session.connection = conn
        session.detached_at = None
        conn.session = session
        return previous if previous is not conn else None

    def detach(self, session: Session, conn: Connection) -> None:
        if session.connection is conn:
            session.connection = None
            session.detached_at = time.monotonic()

    def sweep(self, now: float | None = None) -> int:
        """Drop sessions detached for longer than the TTL; cancel what they still run."""
        now = time.monotonic() if now is None else now
        horizon = now - self.settings.ttl_s
        expired = [
            s
            for s in self._sessions.values()
            if s.detached_at is not None and s.detached_at < horizon
        ]
        for session in expired:
            for run in session.inflight.values():
                run.task.cancel()
            del self._sessions[session.id]
        return len(expired)

    def snapshots(self) -> list[dict[str, Any]]:
        return [session.snapshot() for session in self._sessions.values()]

    def inflight(self) -> int:
        return sum(len(s.inflight) for s in self._sessions.values())

    def runs(self) -> list[ChatRun]:
        return [run for s in self._sessions.values() for run in s.inflight.values()]
