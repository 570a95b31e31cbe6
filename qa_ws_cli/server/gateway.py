"""The gateway's parts in one object, injected into the app under one typed key.

It wires the parts together (connections, the session driver, limiter, verifier, metrics,
store) and carries the duties that span connections: housekeeping, token lifetime timers,
what other instances deliver (broadcasts, session frames, cancels), and the graceful drain.
The rules of a session are ``SessionCore``'s, not this module's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from aiohttp import web

from qa_ws_cli import __version__
from qa_ws_cli.agents.base import Agent
from qa_ws_cli.auth.revocation import RevocationCache, RevocationList
from qa_ws_cli.auth.tokens import Claims, TokenVerifier
from qa_ws_cli.config import Settings
from qa_ws_cli.protocol.codes import PROTOCOL_VERSION, CloseCode
from qa_ws_cli.protocol.events import MAX_ATTACHMENTS, utc_timestamp
from qa_ws_cli.server.chat import FrameHandler
from qa_ws_cli.server.connections import Connection, ConnectionManager
from qa_ws_cli.server.deadlines import Deadlines
from qa_ws_cli.server.driver import SessionDriver
from qa_ws_cli.server.files import FileSigner, FileStore
from qa_ws_cli.server.heartbeat import Heartbeat
from qa_ws_cli.server.logs import log_event
from qa_ws_cli.server.metrics import Metrics
from qa_ws_cli.server.operator import Operator
from qa_ws_cli.server.session_core import CoreLimits
from qa_ws_cli.server.store import Store

HOUSEKEEPING_INTERVAL_S = 1.0
_NOTICE, _EXPIRY = 0, 1  # a connection's token deadlines, in order
REVOCATIONS_READ_S = 5.0  # shared revocations are read this often (and on every announcement)


class Gateway:
    def __init__(
        self,
        settings: Settings,
        agent: Agent,
        store: Store,
        *,
        files: FileStore | None = None,
        signer: FileSigner | None = None,
    ) -> None:
        self.settings = settings
        self.agent = agent
        self.store = store
        store.configure(settings.sessions)
        self.instance = f"{settings.server.name}-{uuid.uuid4().hex[:8]}"
        self.log = logging.getLogger("qa_ws.server")
        self.metrics = Metrics()
        self.connections = ConnectionManager(settings.server.max_connections)
        self.on_overflow = self.overflowed  # bound once: each connection holds it
        lim = settings.limits
        core_limits = CoreLimits(
            max_content_chars=lim.max_content_chars,
            max_inflight_per_connection=lim.max_inflight_per_connection,
            timeout_s=settings.agent.timeout_s,
        )
        self.driver = SessionDriver(
            store, agent, self.connections, self.metrics, core_limits, self.instance, files, signer
        )
        rl = settings.security.rate_limiting
        self.limiter = store.rate_limiter(rl) if rl.enabled else None
        auth = settings.security.authentication
        self.verifier = TokenVerifier(auth, settings.secret()) if auth.enabled else None
        self.revocations = RevocationCache(RevocationList(auth.revocation_file))
        self._revocations_read_at = 0.0
        self.token_deadlines = Deadlines(self._token_due)
        self.heartbeat = Heartbeat(self.connections, lim.heartbeat_s)
        self.frames = FrameHandler(
            self.driver, self.limiter, self.metrics, lim.max_frames_per_second
        )
        self.allowed_origins = set(settings.security.cors.origins)
        self._agent_ready: tuple[float, bool] = (0.0, False)
        self._touched_at = 0.0
        store.attach_peer(self)
        self.operator = Operator(
            store,
            self.driver,
            self.connections,
            self.metrics,
            instance=self.instance,
            name=settings.server.name,
            settings=settings.notifications,
        )
        self.limits_info = {
            "max_message_bytes": lim.max_message_bytes,
            "max_content_chars": lim.max_content_chars,
            "max_inflight": lim.max_inflight_per_connection,
            "max_requests_per_minute": rl.max_requests_per_minute if rl.enabled else None,
            "heartbeat_s": lim.heartbeat_s,
            "max_upload_bytes": lim.max_upload_bytes,
            "max_attachments": MAX_ATTACHMENTS,
        }
        self.server_info = {
            "name": settings.server.name,
            "instance": self.instance,
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
        }

    @property
    def draining(self) -> bool:
        return self.driver.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.driver.draining = value

    def allow_own_origins(self, port: int, tls: bool) -> None:
        """Allow the loopback origins of the page this server serves itself (``GET /``).

        The configured list names the public origins; a server started on another port (or
        ``--port 0``) would otherwise refuse its own chat page. Loopback names only: a DNS
        rebinding page cannot present one of them as its Origin.
        """
        scheme = "https" if tls else "http"
        for name in ("127.0.0.1", "localhost", "[::1]"):
            self.allowed_origins.add(f"{scheme}://{name}:{port}")

    # -- connection lifetime ---------------------------------------------------------------

    def overflowed(self, conn: Connection) -> None:
        self.metrics.slow_consumers.inc()
        log_event(
            self.log,
            "slow_consumer",
            logging.WARNING,
            user=conn.user,
            connection=conn.id,
            queued_bytes=conn.queued_bytes,
        )

    def watch_token(self, conn: Connection, claims: Claims) -> None:
        """``token_expiring`` ahead of the token's expiry, then the close at it: one deadline
        at a time per connection (the notice sets the close's), all on one timer."""
        if self.verifier is None:
            return
        notice = self.settings.security.authentication.expiring_notice_s
        if notice and claims.exp - time.time() > notice:
            self.token_deadlines.set(conn.id, claims.exp - notice, _NOTICE)
        else:
            self.token_deadlines.set(conn.id, claims.exp, _EXPIRY)

    def forget_token(self, conn: Connection) -> None:
        self.token_deadlines.forget(conn.id)

    def _token_due(self, conn_id: str, stage: int) -> None:
        conn = self.connections.get(conn_id)
        if conn is None or conn.closing:
            return
        exp = conn.claims.exp
        if stage == _EXPIRY:
            conn.start_close(CloseCode.TOKEN_EXPIRED, "token expired")
            return
        local = self.driver.local.get(conn.session_id)
        if local is not None:
            event = {"event": "token_expiring", "expires_at": utc_timestamp(exp)}
            self.driver.spawn(local, local.core.system(conn.id, **event))
        self.token_deadlines.set(conn_id, exp, _EXPIRY)

    # -- readiness -------------------------------------------------------------------------

    async def agent_ready(self) -> bool:
        """The agent's own check, cached for a second so probes cannot hammer the backend."""
        checked_at, ok = self._agent_ready
        now = time.monotonic()
        if now - checked_at > 1.0:
            try:
                ok = bool(await asyncio.wait_for(self.agent.check(), timeout=3.0))
            except Exception:  # a failing check means "not ready", never a 500
                ok = False
            self._agent_ready = (now, ok)
        return ok

    # -- what other instances (or this one) deliver ----------------------------------------------

    async def deliver_broadcast(self, message: str) -> int:
        delivered = 0
        for local, conn in self.driver.each_attached():
            await self.driver.apply(
                local, local.core.system(conn.id, event="broadcast", message=message)
            )
            delivered += 1
        self.metrics.broadcasts.inc()
        return delivered

    def deliver_frame(self, session_id: str, seq: int, frame: str, reply_to: str | None) -> None:
        local = self.driver.local.get(session_id)
        if local is None or local.core.attached is None:
            return
        local.seq = max(local.seq, seq)
        local.core.remote_frame(frame, reply_to)
        conn = self.connections.get(local.core.attached)
        if conn is not None:
            conn.send_seq(seq, frame)

    def deliver_attach(self, session_id: str, conn_id: str) -> None:
        local = self.driver.local.get(session_id)
        if local is not None:
            self.driver.spawn(local, local.core.attached_elsewhere(conn_id))

    def deliver_cancel(self, session_id: str, target: str, cancel_id: str) -> None:
        local = self.driver.local.get(session_id)
        if local is not None:
            self.driver.spawn(local, local.core.cancel_from_cluster(target, cancel_id))

    def deliver_revocation(self) -> None:
        self.driver.background(self.refresh_revocations())

    async def refresh_revocations(self) -> None:
        """Read the shared revocations and close what they revoke at once (4003)."""
        self._revocations_read_at = time.monotonic()
        shared = await self.store.revocations()
        if shared is not None:
            self.revocations.update(*shared)
        self.close_revoked()

    def close_revoked(self) -> None:
        revocations = self.revocations
        if not revocations.revoked_ids() and not revocations.revoked_subjects():
            return
        for conn in self.connections:
            claims = conn.claims
            if revocations.is_revoked(claims.jti, claims.sub, claims.iat):
                conn.start_close(CloseCode.TOKEN_REVOKED, "token revoked")

    # -- housekeeping ----------------------------------------------------------------------

    async def housekeep(self) -> None:
        self.store.prune()
        if not self.store.available:
            await self.store.ping()  # back? then the next writes go through again
        await self.driver.housekeep()
        await self.operator.housekeep()
        now = time.monotonic()
        if now - self._touched_at >= max(1.0, self.settings.sessions.ttl_s / 4):
            self._touched_at = now
            await self.driver.touch_attached()
            await self.store.renew_connections((c.user, c.id) for c in self.connections)
        self.metrics.sessions.set(len(self.driver.local))
        if now - self._revocations_read_at >= REVOCATIONS_READ_S:
            await self.refresh_revocations()
        else:
            self.close_revoked()  # the local list may have changed (its file is re-read)
        idle = self.settings.limits.idle_timeout_s
        if idle:
            for conn in self.connections:
                if now - conn.last_seen > idle and not self._waiting(conn):
                    conn.start_close(CloseCode.NORMAL, "idle timeout")

    def _waiting(self, conn: Connection) -> bool:
        """A connection waiting for an answer is not idle."""
        local = self.driver.local.get(conn.session_id)
        return local is not None and local.core.inflight(conn.id) > 0

    async def housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            try:
                await self.housekeep()
            except Exception:
                self.log.exception("housekeeping failed")

    # -- shutdown ----------------------------------------------------------------------------

    async def drain(self) -> None:
        """Refuse new connections, tell every client, let answers finish, close with 1001.

        The sessions are in the store already: with Redis, any instance resumes them."""
        driver = self.driver
        if driver.draining:
            return
        driver.draining = True
        sd = self.settings.shutdown
        log_event(
            self.log, "draining", connections=len(self.connections), in_flight=driver.inflight()
        )
        for local, conn in driver.each_attached():
            outputs = local.core.system(
                conn.id, event="shutdown", reconnect_after_ms=sd.reconnect_after_ms
            )
            await driver.apply(local, outputs)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(driver.idle.wait(), sd.drain_timeout_s)
        driver.stop_all()  # past the deadline: stop what is left (its claims lapse)
        await self.connections.close_all(CloseCode.GOING_AWAY, "server shutting down")
        log_event(self.log, "drained", store=self.store.name)

    async def aclose(self) -> None:
        self.token_deadlines.close()
        self.heartbeat.close()
        with contextlib.suppress(Exception):
            await self.agent.aclose()
        await self.store.aclose()


GATEWAY = web.AppKey("gateway", Gateway)
