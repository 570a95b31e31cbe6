"""The thin asyncio driver of ``SessionCore``: it turns the core's outputs into writes, store
calls, agent tasks and deadline timers, and owns nothing else.

It keeps a ``LocalSession`` for each session that has a connection or a run on this
instance; the session's state itself lives in the store, so a local session is dropped as soon
as neither is left, and any instance can pick the session up again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.server.connections import Connection, ConnectionManager
from qa_ws_cli.server.files import FileSigner, FileStore
from qa_ws_cli.server.logs import log_event
from qa_ws_cli.server.metrics import Metrics
from qa_ws_cli.server.runs import AgentRun, RunOutcome
from qa_ws_cli.server.session_core import CoreLimits, SessionCore
from qa_ws_cli.server.session_outputs import (
    CancelRemote,
    CancelRun,
    Claim,
    ClaimResult,
    CloseConnection,
    Output,
    Publish,
    SendFrame,
    StartRun,
)
from qa_ws_cli.server.store import MemoryStore, Store

log = logging.getLogger("qa_ws.server")
chat_log = logging.getLogger("qa_ws.chat")


@dataclass(slots=True)
class RunningTask:
    """A run of this instance that is a task: its task, deadline timer and context (the
    context is what the backend's own cancel needs)."""

    task: asyncio.Task[None]
    timer: asyncio.TimerHandle
    context: ChatContext


NO_TASKS: Mapping[str, RunningTask] = MappingProxyType({})  # shared by sessions running none


@dataclass(slots=True)
class LocalSession:
    core: SessionCore
    running: Mapping[str, RunningTask] = field(default_factory=lambda: NO_TASKS)  # by chat id
    # keeps publishes in seq order on a store whose appends wait (Redis); made by the first
    # publish there (an asyncio.Lock is 350 bytes, and most idle sessions never publish)
    lock: asyncio.Lock | None = None
    seq: int = 0  # the highest seq this instance saw: a floor while the store was away


class SessionDriver:
    def __init__(
        self,
        store: Store,
        agent: Agent,
        connections: ConnectionManager,
        metrics: Metrics,
        limits: CoreLimits,
        instance: str,
        files: FileStore | None = None,
        signer: FileSigner | None = None,
    ) -> None:
        self.store = store
        # The memory store answers in the step it is asked: its plain calls, and no lock (no
        # two appends of a session can interleave). The others' (Redis) wait for a reply, and
        # so does a subclass (it may override the awaited claim and append).
        self.memory = store if type(store) is MemoryStore else None
        self.runner = AgentRun(
            agent, files, signer, connections.get, on_first_piece=metrics.first_delta.observe
        )
        self.connections = connections
        self.metrics = metrics
        self.limits = limits
        self.instance = instance
        self.local: dict[str, LocalSession] = {}
        self._background: set[asyncio.Task[None]] = set()
        self.running = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.draining = False

    # -- sessions ----------------------------------------------------------------------------

    def session(self, session_id: str, user: str) -> LocalSession:
        local = self.local.get(session_id)
        if local is None:
            local = LocalSession(SessionCore(session_id, user, self.limits))
            self.local[session_id] = local
        return local

    def release(self, local: LocalSession) -> None:
        """Forget a session that has neither a connection nor a run here (the store keeps it)."""
        core = local.core
        idle = core.attached is None and not core.runs and not local.running
        if idle and self.local.get(core.session_id) is local:
            del self.local[core.session_id]

    def inflight(self) -> int:
        return self.running

    # -- outputs -----------------------------------------------------------------------------

    async def apply(self, local: LocalSession, outputs: Iterable[Output]) -> None:
        for out in outputs:  # a chat's two, a run to start and its answer, tested first
            if isinstance(out, StartRun):
                context = self.runner.context(local.core, out)
                if not (self.runner.at_once and await self._answer_at_once(local, out, context)):
                    self._start(local, out, context)
            elif isinstance(out, Publish):
                await self.publish(local, out)
            elif isinstance(out, SendFrame):
                if out.error is not None:
                    self.metrics.errors[out.error].inc()
                conn = self.connections.get(out.conn)
                if conn is not None:
                    conn.send(out.frame)
            elif isinstance(out, Claim):
                await self.claim(local, out.chat_id)
            elif isinstance(out, CancelRun):
                self.background(self._cancel(local, out.chat_id))
            elif isinstance(out, CancelRemote):
                await self._cancel_remote(local, out)
            elif isinstance(out, CloseConnection):
                conn = self.connections.get(out.conn)
                if conn is not None:
                    conn.start_close(out.code, out.reason)

    def spawn(self, local: LocalSession, outputs: list[Output]) -> None:
        """``apply`` from synchronous code (timers, callbacks)."""
        if outputs:
            self.background(self.apply(local, outputs))

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task held until it ends (the loop keeps only weak references)."""
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def publish(self, local: LocalSession, event: Publish) -> None:
        if event.error is not None:
            self.metrics.errors[event.error].inc()
        core, memory = local.core, self.memory
        if memory is not None:  # kept in this step: no lock, and no other instance to tell
            kept = memory.append_now(core.session_id, core.user, event, local.seq + 1)
            if kept is None:
                self._not_kept(event)
            else:
                self._send_kept(local, kept)
            return
        if local.lock is None:
            local.lock = asyncio.Lock()
        async with local.lock:  # one append at a time: its seq and frame go out in order
            kept = await self.store.append(core.session_id, core.user, event, local.seq + 1)
            if kept is None:
                self._not_kept(event)
            elif not self._send_kept(local, kept):
                seq, frame = kept  # perhaps attached on another instance
                await self.store.publish_frame(core.session_id, seq, frame, event.reply_to)

    def _not_kept(self, event: Publish) -> None:
        """The store did not keep ``event``: its claim was gone (nothing to send anywhere), or
        its chat was answered already (its ``instead`` goes out)."""
        instead = event.instead
        if instead is not None and (conn := self.connections.get(instead.conn)) is not None:
            conn.send(instead.frame)

    def _send_kept(self, local: LocalSession, kept: tuple[int, str]) -> bool:
        """A kept frame to the session's connection on this instance; False if it has none."""
        seq, frame = kept
        local.seq = seq
        attached = local.core.attached
        conn = self.connections.get(attached) if attached else None
        if conn is None:
            return False
        conn.send_seq(seq, frame)
        return True

    async def claim(
        self, local: LocalSession, chat_id: str, rate_user: str | None = None
    ) -> ClaimResult:
        """Claim ``chat_id`` in the store (counted against ``rate_user``'s rate limit, when
        given) and carry out what the core makes of the answer; the answer, for the caller."""
        core, memory = local.core, self.memory
        if memory is not None:
            result = memory.claim_counted(core.session_id, chat_id, self.instance, rate_user)
        else:
            result = await self.store.claim(core.session_id, chat_id, self.instance, rate_user)
        await self.apply(local, core.claimed(chat_id, result, time.perf_counter()))
        return result

    # -- runs ------------------------------------------------------------------------------------

    def _start(self, local: LocalSession, start: StartRun, context: ChatContext) -> None:
        loop = asyncio.get_running_loop()
        task = loop.create_task(self._run(local, start, context))
        task.add_done_callback(lambda done: self._settle(local, start.chat_id, done))
        timer = loop.call_later(self.limits.timeout_s, self._expire, local)
        running = local.running if isinstance(local.running, dict) else {}
        running[start.chat_id] = RunningTask(task, timer, context)
        local.running = running
        self.running += 1
        self.idle.clear()
        self.metrics.inflight.inc()

    def _settle(self, local: LocalSession, chat_id: str, task: asyncio.Task[None]) -> None:
        """A task cancelled before its first step never ran ``_run``'s own cleanup: do it here."""
        running = local.running.get(chat_id)
        if running is not None and running.task is task:
            outputs = local.core.stopped(chat_id)
            self._finish(local, chat_id)
            self.spawn(local, outputs)

    def _expire(self, local: LocalSession) -> None:
        self.spawn(local, local.core.tick(time.perf_counter()))

    async def _answer_at_once(
        self, local: LocalSession, start: StartRun, context: ChatContext
    ) -> bool:
        """An agent's answer without waiting, in this step: no task, no timer. False when
        there is none (or the chat has files to fetch first): it runs as a task then."""
        if start.attachments:
            return False
        core = local.core
        started = time.perf_counter()
        fields = _chat_fields(core, start)
        result = self.runner.answer_at_once(core, start, context, fields)
        if result is None:
            return False
        self.running += 1  # a drain waits for its answer to be kept
        self.idle.clear()
        try:
            await self.apply(local, self._settled(result))
        finally:
            self.running -= 1
            if not self.running:
                self.idle.set()
            self.release(local)
        self._log_chat(fields, start.chat_id, result, started)
        return True

    async def _run(self, local: LocalSession, start: StartRun, context: ChatContext) -> None:
        core, chat_id = local.core, start.chat_id
        started = time.perf_counter()
        fields = _chat_fields(core, start)
        try:
            result = await self.runner.answer(core, start, context, fields)
            await self.apply(local, self._settled(result))
        finally:
            self._finish(local, chat_id)
        self._log_chat(fields, chat_id, result, started)

    def _settled(self, result: RunOutcome) -> list[Output]:
        """A run's outputs, its latency observed (a plain call: one coroutine fewer a chat)."""
        if result.latency_ms is not None:
            self.metrics.chat_latency.observe(result.latency_ms / 1000)
        return result.outputs

    @staticmethod
    def _log_chat(fields: dict[str, Any], chat_id: str, result: RunOutcome, started: float) -> None:
        latency = result.latency_ms
        if latency is None:  # no whole answer (an error): the time until the run ended
            latency = round((time.perf_counter() - started) * 1000, 1)
        log_event(
            chat_log,
            "chat",
            logging.INFO,
            **fields,
            reply_to=chat_id,
            latency_ms=latency,
            outcome=result.outcome,
        )

    async def _cancel(self, local: LocalSession, chat_id: str) -> None:
        """Stop a run: the backend's own cancel first (bounded), then the task."""
        running = local.running.get(chat_id)
        if running is None:
            return
        await self.runner.cancel(running.context)
        running.task.cancel()

    async def _cancel_remote(self, local: LocalSession, out: CancelRemote) -> None:
        """Relay a cancel to the instance that runs its target, if one still does."""
        core = local.core
        ended = await self.store.ended(core.session_id, [out.chat_id])
        if not ended.lapsed and not ended.released:
            await self.store.relay_cancel(core.session_id, out.chat_id, out.cancel_id)
            return
        if ended.released:
            await self._catch_up(local, ended.released)
        await self.apply(
            local, core.cancel_ended(out.conn, out.cancel_id, out.chat_id, bool(ended.lapsed))
        )

    async def _catch_up(self, local: LocalSession, released: list[str]) -> None:
        """Runs of another instance ended: the kept frames the attached connection has not
        had yet (a frame of the cluster's can miss it: it came before the connection
        attached, or the other instance sent it to a connection of its own)."""
        core = local.core
        core.settled_elsewhere(released)
        conn = self.connections.get(core.attached) if core.attached else None
        if conn is None:
            return
        for seq, frame in await self.store.frames_after(core.session_id, conn.last_seq):
            local.seq = max(local.seq, seq)
            conn.send_seq(seq, frame)

    def _finish(self, local: LocalSession, chat_id: str) -> None:
        running = local.running.pop(chat_id, None) if isinstance(local.running, dict) else None
        if running is not None:
            running.timer.cancel()
        self.running -= 1
        if not self.running:
            self.idle.set()
        self.metrics.inflight.dec()
        self.release(local)

    # -- housekeeping ----------------------------------------------------------------------------

    async def housekeep(self) -> None:
        """Renew this instance's claims, report runs whose instance died, stop the runs of
        sessions that expired."""
        store = self.store
        for session_id in store.expired_sessions():
            local = self.local.get(session_id)
            if local is not None:
                for running in local.running.values():
                    running.task.cancel()
        claims = [(sid, c) for sid, loc in self.local.items() for c in loc.running]
        if claims:
            await store.renew(claims, self.instance)
        for local in list(self.local.values()):
            core = local.core
            if core.remote and core.attached is not None:
                ended = await store.ended(core.session_id, sorted(core.remote))
                if ended.released:
                    await self._catch_up(local, ended.released)
                if ended.lapsed:
                    await self.apply(local, core.interrupted(ended.lapsed))

    async def touch_attached(self) -> None:
        attached = [sid for sid, loc in self.local.items() if loc.core.attached is not None]
        if attached:
            await self.store.touch(attached)

    def stop_all(self) -> None:
        """Past the drain deadline: stop what still runs (its claims lapse)."""
        for local in list(self.local.values()):
            for running in local.running.values():
                running.task.cancel()

    def each_attached(self) -> Iterable[tuple[LocalSession, Connection]]:
        for local in list(self.local.values()):
            attached = local.core.attached
            conn = self.connections.get(attached) if attached else None
            if conn is not None and not conn.closing:
                yield local, conn


def _chat_fields(core: SessionCore, start: StartRun) -> dict[str, Any]:
    """Who asked, where: the fields of a chat's log lines (the answer's, an agent's error)."""
    return {"user": core.user, "connection": start.origin, "session": core.session_id}
