"""The operator's duties on this instance: notifications to one user, the inbox a connect
empties, the report of live connections, and disconnecting them (close code 4002).

``Operator`` is what the store reaches on each instance (``OperatorPeer``); the HTTP side is
``admin.py``. A notification is a replayable ``system_event`` published into each of the
user's attached sessions, so it gets a ``seq`` and survives a reconnect like any session event.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from qa_ws_cli import __version__
from qa_ws_cli.config import NotificationSettings
from qa_ws_cli.protocol.codes import CloseCode
from qa_ws_cli.protocol.events import utc_timestamp
from qa_ws_cli.server.connections import Connection, ConnectionManager
from qa_ws_cli.server.driver import LocalSession, SessionDriver
from qa_ws_cli.server.logs import log_event
from qa_ws_cli.server.metrics import Metrics
from qa_ws_cli.server.notifications import InboxLimits, Notification
from qa_ws_cli.server.store import InstanceReport, Store

log = logging.getLogger("qa_ws.server")
DISCONNECT_REASON = "disconnected by an operator"


@dataclass(frozen=True, slots=True)
class NotifyResult:
    delivered_to: int
    stored: bool
    dropped: int  # older notifications the inbox dropped to make room


class Operator:
    def __init__(
        self,
        store: Store,
        driver: SessionDriver,
        connections: ConnectionManager,
        metrics: Metrics,
        *,
        instance: str,
        name: str,
        settings: NotificationSettings,
    ) -> None:
        self.store = store
        self.driver = driver
        self.connections = connections
        self.metrics = metrics
        self.instance = instance
        self.name = name
        store.configure_inbox(InboxLimits(settings.inbox_size, settings.ttl_s))
        store.attach_operator(self)
        metrics.build.info({"version": __version__, "instance": instance, "name": name})

    # -- notifications ---------------------------------------------------------------------------

    async def notify(self, user: str, message: str, data: dict[str, Any] | None) -> NotifyResult:
        """To every live connection of ``user`` in the cluster, else into their inbox."""
        note = Notification(uuid.uuid4().hex, message, data, time.time())
        delivered = await self.store.notify(user, note)
        if delivered:
            return NotifyResult(delivered, False, 0)
        # A connect racing this keeps it for the user's next connect: late, never twice.
        dropped = await self.store.keep_notification(user, note)
        self.metrics.notes_stored.inc()
        if dropped:
            self.metrics.notes_overflowed.inc(dropped)
            log_event(log, "inbox_overflow", logging.WARNING, user=user, dropped=dropped)
        return NotifyResult(0, True, dropped)

    async def deliver_notification(self, user: str, note: Notification) -> int:
        delivered = 0
        for local, conn in self.driver.each_attached():
            if conn.user == user:
                outputs = local.core.system(conn.id, **note.event_fields())
                await self.driver.apply(local, outputs)
                delivered += bool(outputs)
        if delivered:
            self.metrics.notes_delivered.inc(delivered)
        return delivered

    async def deliver_inbox(self, local: LocalSession, conn: Connection) -> None:
        """At a connect: what the user's inbox held, once (the take is atomic in the store)."""
        taken = await self.store.take_notifications(conn.user)
        if taken.expired:
            self.metrics.notes_expired.inc(taken.expired)
        for i, note in enumerate(taken.notes):
            outputs = local.core.system(conn.id, **note.event_fields())
            if not outputs:  # the connection is already gone: keep the rest for the next one
                for left in taken.notes[i:]:
                    await self.store.keep_notification(conn.user, left)
                return
            await self.driver.apply(local, outputs)
            self.metrics.notes_delivered.inc()

    async def housekeep(self) -> None:
        expired = await self.store.expire_notifications()
        if expired:
            self.metrics.notes_expired.inc(expired)

    # -- connections -----------------------------------------------------------------------------

    def report(self) -> InstanceReport:
        return {
            "instance": self.instance,
            "name": self.name,
            "version": __version__,
            "connections": [self._describe(c) for c in self.connections if not c.closing],
        }

    def _describe(self, conn: Connection) -> dict[str, Any]:
        local = self.driver.local.get(conn.session_id)
        return {
            "user": conn.user,
            "connection_id": conn.id,
            "session_id": conn.session_id,
            "instance": self.instance,
            "remote": conn.remote,
            "connected_since": utc_timestamp(conn.connected_at),
            "in_flight": local.core.inflight(conn.id) if local is not None else 0,
            "frames_in": conn.frames_in,
            "frames_out": conn.frames_out,
        }

    def disconnect(self, user: str | None, connection_id: str | None) -> int:
        closed = 0
        for conn in self.connections:
            if conn.closing:
                continue
            if (user is not None and conn.user == user) or conn.id == connection_id:
                conn.start_close(CloseCode.OPERATOR_DISCONNECT, DISCONNECT_REASON)
                closed += 1
        if closed:
            log_event(
                log, "operator_disconnect", user=user, connection=connection_id, closed=closed
            )
        return closed
