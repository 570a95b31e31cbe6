"""The per-user inbox, memory and Redis: bounded by count (oldest first) and by age, taken
once, malformed records ignored."""

from __future__ import annotations

import time

import pytest

from qa_ws_cli.server.notifications import InboxLimits, MemoryInbox, Notification
from qa_ws_cli.server.redis_store import RedisStore
from qa_ws_cli.server.store import MemoryStore, Store
from tests.redis_server import RedisServer


def note(text: str, age_s: float = 0.0) -> Notification:
    return Notification(text, text, {"k": text}, time.time() - age_s)


def test_the_memory_inbox_drops_the_oldest_and_the_expired() -> None:
    inbox = MemoryInbox()
    inbox.limits = InboxLimits(size=2, ttl_s=60)
    assert [inbox.push("u", note(t)) for t in ("a", "b", "c")] == [0, 0, 1]
    inbox.push("v", note("old", age_s=120))
    taken = inbox.take("u")
    assert [n.message for n in taken.notes] == ["b", "c"] and taken.expired == 0
    assert inbox.take("u").notes == []  # taken once
    assert inbox.prune() == 1 and len(inbox) == 0  # "old" expired unread


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "[]",
        '{"id": 1, "m": "x", "d": null, "t": 0}',
        '{"id": "a", "m": "x", "d": 3, "t": 0}',
        '{"id": "a", "m": "x", "d": null, "t": true}',
        '{"id": "a"}',
    ],
)
def test_a_malformed_record_is_no_notification(raw: str) -> None:
    assert Notification.from_json(raw) is None


async def _exercise(store: Store) -> None:
    store.configure_inbox(InboxLimits(size=2, ttl_s=60))
    assert await store.keep_notification("ann", note("stale", age_s=600)) == 0
    assert await store.keep_notification("ann", note("one")) == 0
    assert await store.keep_notification("ann", note("two")) == 1  # "stale" went first
    taken = await store.take_notifications("ann")
    assert [n.message for n in taken.notes] == ["one", "two"] and taken.notes[0].data == {
        "k": "one"
    }
    assert (await store.take_notifications("ann")).notes == []
    await store.keep_notification("bo", note("late", age_s=600))
    taken = await store.take_notifications("bo")
    assert (taken.notes, taken.expired) == ([], 1)


async def test_the_memory_store_inbox() -> None:
    await _exercise(MemoryStore())


async def test_the_redis_store_inbox(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    try:
        await _exercise(store)
        redis_server.stop()  # away: kept in this instance's memory ...
        assert await store.keep_notification("cy", note("during")) == 0
        redis_server.start()
        await store.ping()
        # ... and handed over by the first take once Redis is back
        assert [n.message for n in (await store.take_notifications("cy")).notes] == ["during"]
        assert (await store.take_notifications("cy")).notes == []
    finally:
        await store.aclose()
