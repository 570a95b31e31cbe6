"""One agent run: the files it was given, the backend's pieces and events, and its outcome.

``AgentRun.answer`` asks the agent and returns what the session core makes of the outcome
(an answer with its tools and produced files, or an error). While it runs, text pieces go out
as ``agent_delta`` frames and tool, reasoning and status events as ``agent_event`` frames,
both live only, to whichever connection holds the session.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qa_ws_cli.agents.base import Agent, ChatContext, History
from qa_ws_cli.agents.events import Attachment, ToolLog, to_frame
from qa_ws_cli.errors import AgentError
from qa_ws_cli.protocol.codec import encode
from qa_ws_cli.protocol.codes import ErrorCode
from qa_ws_cli.protocol.events import FileInfo
from qa_ws_cli.server.connections import Connection
from qa_ws_cli.server.files import FileSigner, FileStore, store_produced
from qa_ws_cli.server.logs import log_event
from qa_ws_cli.server.session_core import SessionCore
from qa_ws_cli.server.session_outputs import Output, StartRun

_PROTOCOL_CODES = frozenset(ErrorCode)
CANCEL_WAIT_S = 5.0  # how long a backend's own cancel may take before the run is dropped
YIELD_EVERY = 16  # pieces between two forced yields to the event loop (not one per piece)
log = logging.getLogger("qa_ws.server")


def answers_in_pieces(agent: Agent) -> bool:
    """Whether the agent yields pieces itself (else only its whole answer is sent)."""
    kind = type(agent)
    return kind.events is not Agent.events or kind.stream is not Agent.stream


@dataclass(frozen=True, slots=True)
class RunOutcome:
    outputs: list[Output]
    outcome: str  # "ok" or an error code, for the chat log line
    latency_ms: float | None  # of a whole answer


class AgentRun:
    """The part of the driver that talks to the agent; one instance serves every run."""

    def __init__(
        self,
        agent: Agent,
        files: FileStore | None,
        signer: FileSigner | None,
        connection: Callable[[str], Connection | None],
        *,
        on_first_piece: Callable[[float], None] | None = None,
    ) -> None:
        self.agent = agent
        self.on_first_piece = on_first_piece  # seconds from the chat_message to its first delta
        self.pieces = answers_in_pieces(agent)
        self.at_once = type(agent).answer_at_once is not Agent.answer_at_once
        self.files = files
        self.signer = signer
        self.connection = connection

    @staticmethod
    def context(core: SessionCore, start: StartRun) -> ChatContext:
        return ChatContext(core.session_id, core.user, start.chat_id, History(start.history))

    async def answer(
        self, core: SessionCore, start: StartRun, context: ChatContext, fields: dict[str, Any]
    ) -> RunOutcome:
        chat_id = start.chat_id
        tools = ToolLog()
        produced: list[Attachment] = []
        try:
            if start.attachments:
                attachments = await self._attachments(core.user, start.attachments)
                if attachments is None:
                    message = "an attached file is unknown, expired or not yours"
                    outputs = core.failed(chat_id, ErrorCode.FILE_NOT_FOUND, message)
                    return RunOutcome(outputs, "file_not_found", None)
                context = _with_attachments(context, attachments)
            content = await self._ask(core, start.content, context, tools, produced)
        except asyncio.CancelledError:
            return RunOutcome(core.stopped(chat_id), "cancelled", None)
        except AgentError as exc:
            return RunOutcome(self._agent_error(core, chat_id, exc, fields), exc.code, None)
        except Exception:
            log.exception("agent raised", extra={"fields": {**fields, "reply_to": chat_id}})
            return RunOutcome(core.failed(chat_id, ErrorCode.AGENT_ERROR), "agent_error", None)
        extra: dict[str, Any] = {}
        summary = tools.summary()
        if summary:
            extra["tools"] = summary
        if produced:
            extra["attachments"] = await self._keep(core.user, produced)
        return _finished(core, chat_id, content, extra)

    def answer_at_once(
        self, core: SessionCore, start: StartRun, context: ChatContext, fields: dict[str, Any]
    ) -> RunOutcome | None:
        """The agent's ``answer_at_once``: its outcome, or None when it has no answer yet."""
        chat_id = start.chat_id
        try:
            content = self.agent.answer_at_once(start.content, context)
        except AgentError as exc:
            return RunOutcome(self._agent_error(core, chat_id, exc, fields), exc.code, None)
        except Exception:
            log.exception("agent raised", extra={"fields": {**fields, "reply_to": chat_id}})
            return RunOutcome(core.failed(chat_id, ErrorCode.AGENT_ERROR), "agent_error", None)
        if content is None:
            return None
        if not isinstance(content, str):  # a subclass's mistake must not reach the encoder
            kind = type(content).__name__
            log.warning("the agent answered at once with a %s", kind, extra={"fields": fields})
            return RunOutcome(core.failed(chat_id, ErrorCode.AGENT_ERROR), "agent_error", None)
        return _finished(core, chat_id, content, {})

    async def _ask(
        self,
        core: SessionCore,
        content: str,
        context: ChatContext,
        tools: ToolLog,
        produced: list[Attachment],
    ) -> str:
        if not self.pieces:
            return await self.agent.chat(content, context)
        chat_id = context.message_id
        pieces: list[str] = []
        since_yield = 0
        events = self.agent.events(content, context)
        try:
            async for item in events:
                if isinstance(item, str):
                    if item:
                        if not pieces:
                            self._first_piece(core, chat_id)
                        pieces.append(item)
                        self._send(core.piece(chat_id, item))
                elif isinstance(item, Attachment):
                    produced.append(item)
                else:
                    tools.add(item)
                    frame = to_frame(item, chat_id)
                    if frame is not None:
                        for out in core.live(chat_id, encode(frame)):
                            self._send(out)
                since_yield += 1
                if since_yield >= YIELD_EVERY:  # an agent that never awaits must not stall us
                    since_yield = 0
                    await asyncio.sleep(0)
        finally:  # a timeout or cancel may land here, not in the agent: close it now
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        return "".join(pieces)

    def _first_piece(self, core: SessionCore, chat_id: str) -> None:
        latency_ms = core.latency_ms(chat_id, time.perf_counter())
        if self.on_first_piece is not None and latency_ms is not None:
            self.on_first_piece(latency_ms / 1000)

    def _send(self, out: Any) -> None:
        if out is not None:
            conn = self.connection(out.conn)
            if conn is not None:
                conn.send(out.frame)

    async def _attachments(self, owner: str, file_ids: tuple[str, ...]) -> list[Attachment] | None:
        if self.files is None:
            return None
        found = await asyncio.gather(*(self.files.get(f, owner) for f in file_ids))
        if any(stored is None for stored in found):
            return None
        return [stored.attachment() for stored in found if stored is not None]

    async def _keep(self, owner: str, produced: list[Attachment]) -> list[FileInfo]:
        if self.files is None or self.signer is None:
            return []
        files, signer = self.files, self.signer
        return list(
            await asyncio.gather(*(store_produced(files, signer, owner, f) for f in produced))
        )

    def _agent_error(
        self, core: SessionCore, chat_id: str, exc: AgentError, fields: dict[str, Any]
    ) -> list[Output]:
        if exc.code in _PROTOCOL_CODES:
            return core.failed(chat_id, exc.code, exc.message)
        # not a protocol code: neither the code nor its text reaches the client
        log_event(
            log, "agent error", logging.WARNING, **fields, reply_to=chat_id, agent_code=exc.code
        )
        return core.failed(chat_id, ErrorCode.AGENT_ERROR)

    async def cancel(self, context: ChatContext) -> None:
        """Ask the backend to stop the run for real (Agno's cancel endpoint, say), bounded;
        a failure to confirm still ends the answer."""
        try:
            await asyncio.wait_for(self.agent.cancel(context), CANCEL_WAIT_S)
        except Exception:
            log.warning("the agent backend did not confirm a cancel", exc_info=True)


def _finished(core: SessionCore, chat_id: str, content: str, extra: dict[str, Any]) -> RunOutcome:
    now = time.perf_counter()
    latency = core.latency_ms(chat_id, now)
    outputs = core.finished(chat_id, content, now, latency, **extra)
    return RunOutcome(outputs, "ok" if content else "agent_error", latency if content else None)


def _with_attachments(context: ChatContext, attachments: list[Attachment]) -> ChatContext:
    if not attachments:
        return context
    return ChatContext(
        context.session_id, context.user, context.message_id, context.history, tuple(attachments)
    )
