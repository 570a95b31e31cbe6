"""Per-connection deadlines on one timer of the event loop: the token's (``token_expiring``
ahead of ``exp``, then the 4001 close) and the heartbeat's (``heartbeat.py``).

A loop timer per connection held about 0.8 KiB of every idle connection (uvloop's handle, its
libuv timer, the callback and its arguments). Here a connection costs one dict entry and one
heap entry, and the loop holds a single timer, armed for the earliest deadline, so each
deadline fires when it is due, as its own timer would.

``forget`` drops a closed connection's deadline at once. Its heap entry is skipped when it comes
due, and once dead entries outnumber live ones the heap is rebuilt from the live ones (as
asyncio does with its own cancelled timers), so churn cannot grow it without bound. The timer
is armed again only for an earlier deadline: when the earliest was forgotten, the timer still
fires at its time, finds nothing due, and is armed for the next (one wake-up, where re-arming
it at once would cost every short-lived connection a timer cancelled and made).
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections.abc import Callable
from typing import NamedTuple

log = logging.getLogger("qa_ws.server")
REBUILD_SLACK = 64  # dead heap entries tolerated beyond the live count before a rebuild


class Due(NamedTuple):
    when: float  # on the ``Deadlines``' clock
    conn_id: str
    stage: int  # the caller's: which deadline of the connection this is


class Deadlines:
    """``set`` a connection's next deadline (replacing any), ``forget`` it; ``on_due(conn_id,
    stage)`` runs in the event loop when it is due and may ``set`` the next one."""

    def __init__(
        self, on_due: Callable[[str, int], None], clock: Callable[[], float] = time.time
    ) -> None:
        self._on_due = on_due
        self._clock = clock  # the wall clock for token times, monotonic for intervals
        self._live: dict[str, Due] = {}
        self._heap: list[Due] = []
        self._timer: asyncio.TimerHandle | None = None
        self._armed_for = math.inf

    def __len__(self) -> int:
        return len(self._live)

    @property
    def heap_size(self) -> int:
        """Heap entries, dead ones included (bounded: see the module's docstring)."""
        return len(self._heap)

    def set(self, conn_id: str, when: float, stage: int) -> None:
        due = Due(when, conn_id, stage)
        self._live[conn_id] = due
        heapq.heappush(self._heap, due)
        self._compact()
        self._arm()

    def forget(self, conn_id: str) -> None:
        if self._live.pop(conn_id, None) is not None:
            self._compact()

    def close(self) -> None:
        """Stop: nothing fires any more."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = math.inf
        self._live.clear()
        self._heap.clear()

    def _compact(self) -> None:
        if len(self._heap) > 2 * len(self._live) + REBUILD_SLACK:
            self._heap = list(self._live.values())
            heapq.heapify(self._heap)

    def _arm(self) -> None:
        """The loop's timer for the earliest deadline (none when nothing is due)."""
        while self._heap and self._live.get(self._heap[0].conn_id) != self._heap[0]:
            heapq.heappop(self._heap)  # dead: forgotten, or replaced by a later ``set``
        when = self._heap[0].when if self._heap else math.inf
        if when >= self._armed_for:  # the armed timer comes first: ``_fire`` arms the next
            return  # (a connection that came and went re-arms nothing: its handshake's cost)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_for = when
        if self._heap:
            delay = max(0.0, when - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer, self._armed_for = None, math.inf
        now = self._clock()
        while self._heap and self._heap[0].when <= now:
            due = heapq.heappop(self._heap)
            if self._live.get(due.conn_id) != due:
                continue
            del self._live[due.conn_id]
            try:
                self._on_due(due.conn_id, due.stage)  # may set this connection's next deadline
            except Exception:  # one connection's failure must not stop everyone else's
                log.exception(
                    "a connection deadline failed", extra={"fields": {"connection": due.conn_id}}
                )
        self._arm()
