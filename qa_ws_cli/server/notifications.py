"""Notifications to one user: the value, and the per-user inbox that keeps them for a user
with no live connection until their next connect (taken once, atomically, by one connection).

The inbox is bounded by count (the oldest go first) and by age; both kinds of drop are
reported to the caller so the metrics can count them. ``MemoryInbox`` serves one process (and a
Redis store while Redis is away); the Redis inbox is a list per user (``redis_ops.py``).
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Notification:
    id: str
    message: str
    data: dict[str, Any] | None
    created: float  # epoch seconds, for the inbox's age bound

    def to_json(self) -> str:
        return json.dumps(
            {"id": self.id, "m": self.message, "d": self.data, "t": self.created},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> Notification | None:
        """The notification, or None for a malformed record (never an exception)."""
        try:
            obj = json.loads(raw)
            note_id, message, data, created = obj["id"], obj["m"], obj["d"], obj["t"]
        except (ValueError, TypeError, KeyError):
            return None
        if not (isinstance(note_id, str) and isinstance(message, str)):
            return None
        if data is not None and not isinstance(data, dict):
            return None
        if isinstance(created, bool) or not isinstance(created, int | float):
            return None
        return cls(note_id, message, data, float(created))

    def event_fields(self) -> dict[str, Any]:
        """The ``system_event``'s fields (``seq`` comes from the session log)."""
        return {"event": "notification", "id": self.id, "message": self.message, "data": self.data}


@dataclass(frozen=True, slots=True)
class InboxLimits:
    size: int = 100
    ttl_s: float = 86400.0


@dataclass(frozen=True, slots=True)
class Taken:
    """What a connect took from the inbox: the notifications to deliver, and how many had
    expired (dropped)."""

    notes: list[Notification]
    expired: int = 0


def split_expired(notes: list[Notification], ttl_s: float, now: float | None = None) -> Taken:
    cutoff = (time.time() if now is None else now) - ttl_s
    fresh = [n for n in notes if n.created >= cutoff]
    return Taken(fresh, len(notes) - len(fresh))


class MemoryInbox:
    """One process's inboxes: a bounded deque per user."""

    def __init__(self) -> None:
        self.limits = InboxLimits()
        self._boxes: dict[str, deque[Notification]] = {}

    def push(self, user: str, note: Notification) -> int:
        """Keep ``note`` for ``user``; returns how many older ones were dropped for room."""
        box = self._boxes.setdefault(user, deque())
        box.append(note)
        dropped = 0
        while len(box) > self.limits.size:
            box.popleft()
            dropped += 1
        return dropped

    def take(self, user: str) -> Taken:
        box = self._boxes.pop(user, None)
        if not box:
            return Taken([])
        return split_expired(list(box), self.limits.ttl_s)

    def prune(self, now: float | None = None) -> int:
        """Drop expired notifications of users who never came back; returns how many."""
        cutoff = (time.time() if now is None else now) - self.limits.ttl_s
        dropped = 0
        for user, box in list(self._boxes.items()):
            while box and box[0].created < cutoff:
                box.popleft()
                dropped += 1
            if not box:
                del self._boxes[user]
        return dropped

    def __len__(self) -> int:
        return sum(len(b) for b in self._boxes.values())
