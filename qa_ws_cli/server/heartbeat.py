"""Dead-peer detection (``limits.heartbeat_s``) for every connection, on one timer.

aiohttp's heartbeat holds a loop timer per connection, about 0.8 KiB of every idle one, and
schedules a callback for every message received. This one keeps each connection's next check
in a shared ``Deadlines``, and does what aiohttp's does: a connection heard from (any frame, a
pong included) within ``heartbeat_s`` is checked again ``heartbeat_s`` after it was last heard;
one that was not is sent a ping, and if nothing comes back within half the interval it is
dropped: the socket is closed without a close frame (it would not read one), and its close
code is 1006.
"""

from __future__ import annotations

import time

from aiohttp import WSCloseCode

from qa_ws_cli.server.connections import Connection, ConnectionManager
from qa_ws_cli.server.deadlines import Deadlines

_PROBE, _AWAIT_PONG = 0, 1


class Heartbeat:
    def __init__(self, connections: ConnectionManager, interval_s: float) -> None:
        self.connections = connections
        self.interval_s = interval_s  # 0: no heartbeat
        self.deadlines = Deadlines(self._due, time.monotonic)

    def watch(self, conn: Connection) -> None:
        if self.interval_s:
            self.deadlines.set(conn.id, conn.heard_at + self.interval_s, _PROBE)

    def forget(self, conn: Connection) -> None:
        self.deadlines.forget(conn.id)

    def close(self) -> None:
        self.deadlines.close()

    def _due(self, conn_id: str, stage: int) -> None:
        conn = self.connections.get(conn_id)
        if conn is None or conn.closing:
            return
        now = time.monotonic()
        if stage == _PROBE and now - conn.heard_at < self.interval_s:
            self.deadlines.set(conn_id, conn.heard_at + self.interval_s, _PROBE)
        elif stage == _PROBE:
            conn.pinged_at = now
            conn.ping()
            self.deadlines.set(conn_id, now + self.interval_s / 2, _AWAIT_PONG)
        elif conn.heard_at >= conn.pinged_at:  # answered (or anything else came)
            self.deadlines.set(conn_id, conn.heard_at + self.interval_s, _PROBE)
        else:
            conn.drop(WSCloseCode.ABNORMAL_CLOSURE)
