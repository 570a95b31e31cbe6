"""The gateway's state in one object, injected into the app under one typed key.

It owns the parts (connections, sessions, limiter, verifier, metrics) and the duties that
span connections: housekeeping (expired sessions, revoked tokens, idle peers), token
lifetime timers, broadcast, and the graceful drain on shutdown.
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
from qa_ws_cli.auth.revocation import RevocationList
from qa_ws_cli.auth.tokens import Claims, TokenVerifier
from qa_ws_cli.config import Settings
from qa_ws_cli.protocol.codes import PROTOCOL_VERSION, CloseCode
from qa_ws_cli.protocol.events import SystemEvent, utc_timestamp
from qa_ws_cli.server.chat import FrameHandler
from qa_ws_cli.server.connections import Connection, ConnectionManager
from qa_ws_cli.server.limits import RateLimiter
from qa_ws_cli.server.logs import log_event
from qa_ws_cli.server.metrics import Metrics
from qa_ws_cli.server.sessions import SessionManager
from qa_ws_cli.server.store import Store

HOUSEKEEPING_INTERVAL_S = 1.0


class Gateway:
    def __init__(self, settings: Settings, agent: Agent, store: Store) -> None:
        self.settings = settings
        self.agent = agent
        self.store = store
        self.instance = f"{settings.server.name}-{uuid.uuid4().hex[:8]}"
        self.log = logging.getLogger("qa_ws.server")
        self.metrics = Metrics()
        self.connections = ConnectionManager(
            settings.server.max_connections, settings.server.max_connections_per_user
        )
        self.sessions = SessionManager(settings.sessions)
        rl = settings.security.rate_limiting
        self.limiter = RateLimiter(rl, store.limit_storage()) if rl.enabled else None
        auth = settings.security.authentication
        self.verifier = TokenVerifier(auth, settings.secret()) if auth.enabled else None
        self.revocations = RevocationList(auth.revocation_file)
        self.frames = FrameHandler(self)
        self.draining = False
        self.allowed_origins = set(settings.security.cors.origins)
        self._agent_ready: tuple[float, bool] = (0.0, False)
        store.on_broadcast(self.deliver_broadcast)
        lim = settings.limits
        self.limits_info = {
            "max_message_bytes": lim.max_message_bytes,
            "max_content_chars": lim.max_content_chars,
            "max_inflight": lim.max_inflight_per_connection,
            "max_requests_per_minute": rl.max_requests_per_minute if rl.enabled else None,
            "heartbeat_s": lim.heartbeat_s,
        }
        self.server_info = {
            "name": settings.server.name,
            "instance": self.instance,
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
        }

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

    def schedule_token_timers(self, conn: Connection, claims: Claims) -> None:
        if self.verifier is None:
            return
        loop = asyncio.get_running_loop()
        left = claims.exp - time.time()
        notice = self.settings.security.authentication.expiring_notice_s
        expires_at = utc_timestamp(claims.exp)
        if notice and left > notice:
            conn.timers.append(
                loop.call_later(left - notice, self._token_expiring, conn, expires_at)
            )
        conn.timers.append(
            loop.call_later(
                max(left, 0.0), conn.start_close, CloseCode.TOKEN_EXPIRED, "token expired"
            )
        )

    @staticmethod
    def _token_expiring(conn: Connection, expires_at: str) -> None:
        if conn.session is not None and conn.session.connection is conn:
            conn.session.publish(
                lambda seq: SystemEvent(event="token_expiring", expires_at=expires_at, seq=seq)
            )

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

    # -- broadcast ---------------------------------------------------------------------------

    async def deliver_broadcast(self, message: str) -> int:
        delivered = 0
        for conn in self.connections:
            session = conn.session
            if session is not None and session.connection is conn and not conn.closing:
                session.publish(
                    lambda seq: SystemEvent(event="broadcast", message=message, seq=seq)
                )
                delivered += 1
        self.metrics.broadcasts.inc()
        return delivered

    # -- housekeeping ----------------------------------------------------------------------

    def housekeep(self) -> None:
        self.sessions.sweep()
        self.store.prune()
        self.metrics.sessions.set(len(self.sessions))
        revoked = self.revocations.revoked_ids()
        idle = self.settings.limits.idle_timeout_s
        if not revoked and not idle:
            return
        now = time.monotonic()
        for conn in self.connections:
            if revoked and conn.claims.jti in revoked:
                conn.start_close(CloseCode.TOKEN_REVOKED, "token revoked")
            elif idle and not conn.inflight and now - conn.last_seen > idle:  # waiting != idle
                conn.start_close(CloseCode.NORMAL, "idle timeout")

    async def housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_INTERVAL_S)
            try:
                self.housekeep()
            except Exception:
                self.log.exception("housekeeping failed")

    # -- shutdown ----------------------------------------------------------------------------

    async def drain(self) -> None:
        """Refuse new connections, tell every client, let answers finish, close with 1001, and
        hand the sessions to the store so an instance started later can resume them."""
        if self.draining:
            return
        self.draining = True
        sd = self.settings.shutdown
        log_event(
            self.log,
            "draining",
            connections=len(self.connections),
            in_flight=self.sessions.inflight(),
        )
        for conn in self.connections:
            session = conn.session
            if session is not None and session.connection is conn:
                session.publish(
                    lambda seq: SystemEvent(
                        event="shutdown", reconnect_after_ms=sd.reconnect_after_ms, seq=seq
                    )
                )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.frames.idle.wait(), sd.drain_timeout_s)
        for run in self.sessions.runs():  # past the deadline: stop what is left
            run.task.cancel()
        await self.connections.close_all(CloseCode.GOING_AWAY, "server shutting down")
        kept = await self.store.save_sessions(
            self.sessions.snapshots(), self.settings.sessions.ttl_s
        )
        log_event(self.log, "drained", sessions_handed_over=kept)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.agent.aclose()
        await self.store.aclose()


GATEWAY = web.AppKey("gateway", Gateway)
