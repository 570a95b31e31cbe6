"""Connection deadlines on one timer: each fires when due, never early, in order; a forgotten or
replaced one never fires; churn cannot grow the heap; one failing callback stops no other."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from qa_ws_cli.server.deadlines import REBUILD_SLACK, Deadlines


class Fired:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, float]] = []

    def __call__(self, conn_id: str, stage: int) -> None:
        self.calls.append((conn_id, stage, time.time()))

    async def until(self, count: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)


async def test_deadlines_fire_in_order_and_never_before_they_are_due() -> None:
    fired = Fired()
    deadlines = Deadlines(fired)
    now = time.time()
    deadlines.set("c", now + 0.30, 0)
    deadlines.set("a", now + 0.10, 0)
    deadlines.set("b", now + 0.20, 1)  # earlier than what the timer was armed for: re-armed
    await fired.until(3)
    assert [(c, s) for c, s, _ in fired.calls] == [("a", 0), ("b", 1), ("c", 0)]
    for (_, _, at), due in zip(fired.calls, (0.10, 0.20, 0.30), strict=True):
        assert at >= now + due
    assert len(deadlines) == 0 and deadlines.heap_size == 0
    deadlines.close()


async def test_a_forgotten_or_replaced_deadline_never_fires() -> None:
    fired = Fired()
    deadlines = Deadlines(fired)
    now = time.time()
    deadlines.set("gone", now + 0.05, 0)
    deadlines.set("moved", now + 0.05, 0)
    deadlines.set("moved", now + 0.15, 1)  # the connection's next deadline replaces its first
    deadlines.set("kept", now + 0.10, 0)
    deadlines.forget("gone")
    deadlines.forget("never set")  # harmless
    await fired.until(2)
    await asyncio.sleep(0.1)
    assert [(c, s) for c, s, _ in fired.calls] == [("kept", 0), ("moved", 1)]
    deadlines.close()


async def test_the_next_deadline_fires_on_time_after_the_earliest_is_forgotten() -> None:
    fired = Fired()
    deadlines = Deadlines(fired)
    now = time.time()
    deadlines.set("first", now + 0.05, 0)  # the timer is armed for it
    deadlines.set("second", now + 0.15, 0)
    deadlines.forget("first")  # its connection closed: the timer still wakes at 0.05
    deadlines.set("third", now + 0.25, 0)
    await fired.until(2)
    assert [(c, s) for c, s, _ in fired.calls] == [("second", 0), ("third", 0)]
    for (_, _, at), due in zip(fired.calls, (0.15, 0.25), strict=True):
        assert at >= now + due  # neither early (the wake-up at 0.05 fired nothing) nor lost
    deadlines.close()
    deadlines.set("after close", time.time() + 0.05, 0)  # a fresh start arms a timer again
    await fired.until(3)
    assert fired.calls[-1][0] == "after close"
    deadlines.close()


async def test_a_callback_sets_the_connection_s_next_deadline() -> None:
    """The token's notice, then its close, as the gateway chains them."""
    fired = Fired()

    def notice_then_close(conn_id: str, stage: int) -> None:
        fired(conn_id, stage)
        if stage == 0:
            deadlines.set(conn_id, time.time() + 0.05, 1)

    deadlines = Deadlines(notice_then_close)
    deadlines.set("alice", time.time() + 0.05, 0)
    await fired.until(2)
    assert [(c, s) for c, s, _ in fired.calls] == [("alice", 0), ("alice", 1)]
    deadlines.close()


async def test_connections_that_come_and_go_do_not_grow_the_heap() -> None:
    deadlines = Deadlines(Fired())
    far = time.time() + 3600
    for n in range(10_000):
        deadlines.set(f"c{n}", far + n, 1)
        if n >= 10:
            deadlines.forget(f"c{n - 10}")  # ten open at a time, as on a server with churn
    assert len(deadlines) == 10
    assert deadlines.heap_size <= 2 * len(deadlines) + REBUILD_SLACK + 1
    deadlines.close()
    assert len(deadlines) == 0


async def test_one_failing_callback_stops_no_other_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fired = Fired()

    def fails_for_bad(conn_id: str, stage: int) -> None:
        if conn_id == "bad":
            raise RuntimeError("boom")
        fired(conn_id, stage)

    deadlines = Deadlines(fails_for_bad)
    now = time.time()
    deadlines.set("bad", now + 0.05, 0)
    deadlines.set("good", now + 0.05, 0)
    deadlines.set("later", now + 0.15, 0)
    with caplog.at_level(logging.ERROR, logger="qa_ws.server"):
        await fired.until(2)
    assert [c for c, _, _ in fired.calls] == ["good", "later"]
    assert "a connection deadline failed" in caplog.text
    deadlines.close()


async def test_after_close_nothing_fires() -> None:
    fired = Fired()
    deadlines = Deadlines(fired)
    deadlines.set("a", time.time() + 0.05, 0)
    deadlines.close()
    await asyncio.sleep(0.15)
    assert fired.calls == []
