"""Agno AgentOS backend: ``agno+http://HOST:7777/agents/ID`` (or ``/teams/ID``, or https).

Checked against agno-agi/agno, libs/agno/agno/:
  os/routers/agents/router.py, os/routers/teams/router.py: ``POST /agents/{id}/runs`` and
    ``POST /teams/{id}/runs`` read the form fields ``message``, ``stream``, ``session_id`` and
    ``user_id`` and answer ``text/event-stream``; an exception during the run becomes a
    ``RunError`` (teams: ``TeamRunError``) event inside a 200 response, not an HTTP error;
  os/utils.py ``format_sse_event``: ``event: <name>\\ndata: <compact JSON>\\n\\n``, the JSON also
    naming the event in ``"event"``;
  run/agent.py ``RunEvent``, run/team.py ``TeamRunEvent``: ``RunContent`` carries a delta in
    ``content``, ``RunCompleted`` the whole answer (utils/events.py
    ``create_run_completed_event``), ``RunError`` the error text in ``content``; ``RunCancelled``
    and ``RunPaused`` (a tool awaiting human confirmation) end a run without an answer. Team
    events carry a ``Team`` prefix; a team's stream also relays its members' unprefixed events,
    which are not the team's answer and are skipped;
  os/routers/health.py: ``GET /health`` (no auth); os/auth.py: ``Authorization: Bearer`` with
    the OS security key.

  os/routers/agents/router.py ``create_agent_run``: ``files`` (multipart ``UploadFile``s)
    become the run's images (by their content type) or documents; ``POST
    /agents/{id}/runs/{run_id}/cancel?session_id=...`` stores the cancel intent and answers 200
    (``{}``) once it did; agent/_response.py: a tool's error is a ``ToolCallCompleted`` whose
    ``tool.tool_call_error`` is true, then a ``ToolCallError``;
  run/agent.py: ``ToolCallStarted``/``ToolCallCompleted``/``ToolCallError`` carry ``tool``
    (models/response.py ``ToolExecution``: ``tool_call_id``, ``tool_name``, ``tool_args``,
    ``result``, ``metrics.duration`` in seconds); ``ReasoningContentDelta`` carries
    ``reasoning_content``, ``ReasoningStep`` a step with its ``reasoning_content``;
    ``RunCompleted`` its ``images`` and ``files`` (media/media.py ``to_dict``: base64
    ``content``, ``mime_type``, ``filename``/``name``).

AgentOS keeps the conversation itself, keyed by ``session_id``, so no history is sent. Events
not named above (memory, hooks, model requests, ...) are dropped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from yarl import URL

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.agents.bounded import BoundedAgent
from qa_ws_cli.agents.events import (
    Attachment,
    Piece,
    Reasoning,
    ToolFailed,
    ToolFinished,
    ToolStarted,
)
from qa_ws_cli.agents.http import (
    SPEC_PATH,
    SSEHTTPAgent,
    describe,
    no_answer,
    parse_http_url,
)
from qa_ws_cli.config import AgentSettings, agent_api_key
from qa_ws_cli.errors import AgentError, ConfigError

log = logging.getLogger("qa_ws.agents")

EXAMPLE = "agno+http://HOST:7777/agents/AGENT_ID (or /teams/TEAM_ID)"
DEFAULT_API_KEY_ENV = "AGNO_API_KEY"
_EVENT_PREFIX = {"agents": "", "teams": "Team"}
_ENDINGS = {
    "RunCancelled": "the agent's run was cancelled by its server",
    "RunPaused": "the agent paused for a confirmation the gateway cannot give",
}
# AgentOS picks a file's handling by its content type: say XML and logs the way it knows them
_AGNO_MIME = {"application/xml": "text/xml", "text/x-log": "text/plain"}
RUN_START_WAIT_S = 2.0  # how long a cancel waits for a run that has not named its id yet


def _text(content: object) -> str:
    """``content`` is text, or an object when the agent has an output schema."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False)


@dataclass
class _Run:
    """One run in flight: what a ``cancel`` needs to reach it."""

    run_id: str | None = None
    session_id: str | None = None
    started: asyncio.Event = field(default_factory=asyncio.Event)
    cancel_requested: bool = False
    failed_tools: set[str] = field(default_factory=set)


def _tool(payload: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    tool = payload.get("tool")
    tool = tool if isinstance(tool, dict) else {}
    return tool, str(tool.get("tool_call_id") or ""), str(tool.get("tool_name") or "tool")


def _tool_event(kind: str, payload: dict[str, Any], run: _Run) -> Iterator[Piece]:
    """ToolCallStarted / ToolCallCompleted / ToolCallError as typed events."""
    tool, tool_id, name = _tool(payload)
    if kind == "ToolCallStarted":
        args = tool.get("tool_args")
        yield ToolStarted(tool_id, name, args if isinstance(args, dict) else {})
    elif tool_id in run.failed_tools:
        return  # the error that follows a failed ToolCallCompleted: reported once
    elif kind == "ToolCallError" or tool.get("tool_call_error"):
        run.failed_tools.add(tool_id)
        message = payload.get("error") if kind == "ToolCallError" else tool.get("result")
        yield ToolFailed(tool_id, name, _text(message))
    else:
        metrics = tool.get("metrics")
        duration = metrics.get("duration") if isinstance(metrics, dict) else None
        ms = float(duration) * 1000 if isinstance(duration, int | float) else None
        yield ToolFinished(tool_id, name, _text(tool.get("result")), ms)


def _reasoning(kind: str, payload: dict[str, Any]) -> Iterator[Piece]:
    text = payload.get("reasoning_content")
    if kind == "ReasoningStep" and not text:
        step = payload.get("content")
        text = step.get("reasoning") or step.get("title") if isinstance(step, dict) else None
    if isinstance(text, str) and text:
        yield Reasoning(text)


def produced_files(payload: dict[str, Any]) -> list[Attachment]:
    """``RunCompleted``'s images and files with inline content; URL-only ones are skipped
    (the gateway does not fetch what a backend points at)."""
    found: list[Attachment] = []
    for key, fallback_mime in (("images", "image/png"), ("files", "application/octet-stream")):
        media = payload.get(key)
        for index, item in enumerate(media if isinstance(media, list) else []):
            content = item.get("content") if isinstance(item, dict) else None
            if not isinstance(content, str) or not content:
                continue
            mime = str(item.get("mime_type") or fallback_mime)
            try:
                data = content.encode() if mime.startswith("text/") else base64.b64decode(content)
            except (binascii.Error, ValueError):
                log.info("agno: skipped a produced %s that is not base64", key[:-1])
                continue
            name = item.get("filename") or item.get("name") or f"{key[:-1]}-{index + 1}"
            found.append(Attachment(name=str(name), mime=mime, data=data))
    return found


class AgnoAgent(SSEHTTPAgent):
    """One agent or team served by AgentOS."""

    name = "agno"

    def __init__(
        self,
        *,
        base: URL,
        kind: str,
        component_id: str,
        settings: AgentSettings,
        api_key: str | None = None,
    ) -> None:
        super().__init__(settings=settings, api_key=api_key, check_url=base / "health")
        self.prefix = _EVENT_PREFIX[kind]
        self.runs_url = base / kind / component_id / "runs"
        self._runs: dict[tuple[str, str], _Run] = {}

    def _form(self, message: str, context: ChatContext) -> aiohttp.FormData:
        """The run's form: a fresh one per attempt (a sent FormData cannot be sent again)."""
        form = aiohttp.FormData()
        form.add_field("message", message)
        form.add_field("stream", "true")
        form.add_field("session_id", context.session_id)
        form.add_field("user_id", context.user)
        for attachment in context.attachments:
            form.add_field(
                "files",
                attachment.data,
                filename=attachment.name,
                content_type=_AGNO_MIME.get(attachment.mime, attachment.mime),
            )
        return form

    async def events(self, message: str, context: ChatContext) -> AsyncIterator[Piece]:
        key = (context.session_id, context.message_id)
        run = self._runs[key] = _Run()
        try:
            pieces = self._run(message, context, run)
            async with aclosing(pieces):
                async for piece in pieces:
                    yield piece
        finally:
            if self._runs.get(key) is run:
                del self._runs[key]

    async def _run(
        self, message: str, context: ChatContext, run: _Run
    ) -> AsyncGenerator[Piece, None]:
        streamed: list[str] = []
        events = self._events(
            self.runs_url,
            form=lambda: self._form(message, context),
            headers={"Accept": "text/event-stream"},
        )
        async with aclosing(events):
            async for event in events:
                kind, payload = self._read(event.event, event.data)
                if kind is None:
                    continue
                if kind == "RunStarted":
                    self._started(run, payload)
                elif kind == "RunContent":
                    delta = _text(payload.get("content"))
                    if delta:
                        streamed.append(delta)
                        yield delta
                elif kind == "RunCompleted":
                    rest = self._remainder("".join(streamed), _text(payload.get("content")))
                    if rest:
                        streamed.append(rest)
                        yield rest
                    files = produced_files(payload)
                    if not streamed and not files:
                        raise no_answer()
                    for attachment in files:
                        yield attachment
                    return
                elif kind in ("RunError", *_ENDINGS):
                    raise self._ended(kind, payload, run)
                elif kind.startswith("ToolCall"):
                    for piece in _tool_event(kind, payload, run):
                        yield piece
                elif kind.startswith("Reasoning"):
                    for piece in _reasoning(kind, payload):
                        yield piece
        raise self._cut_off(f"{self.prefix}RunCompleted")

    _KINDS = frozenset(
        {
            "RunStarted",
            "RunContent",
            "RunCompleted",
            "RunError",
            *_ENDINGS,
            "ToolCallStarted",
            "ToolCallCompleted",
            "ToolCallError",
            "ReasoningStep",
            "ReasoningContentDelta",
        }
    )

    def _read(self, name: str, data: str) -> tuple[str | None, dict[str, Any]]:
        """(the event's kind without the team prefix, its JSON), or (None, {}) to drop it.

        A team's stream relays its members' unprefixed events: not the team's, so dropped.
        """
        payload: dict[str, Any] = {}
        if name == "message":  # no "event:" line: the JSON names it
            payload = self._payload(data)
            name = str(payload.get("event", ""))
        if not name.startswith(self.prefix):
            return None, {}
        kind = name[len(self.prefix) :]
        if kind not in self._KINDS:
            return None, {}
        return kind, payload or self._payload(data)

    def _started(self, run: _Run, payload: dict[str, Any]) -> None:
        run_id = payload.get("run_id")
        if isinstance(run_id, str) and run_id and run.run_id is None:
            run.run_id = run_id
            session_id = payload.get("session_id")
            run.session_id = session_id if isinstance(session_id, str) else None
            run.started.set()

    def _ended(self, kind: str, payload: dict[str, Any], run: _Run) -> AgentError:
        if kind == "RunError":
            log.warning(
                "%s: run error (%s): %s",
                self.name,
                payload.get("error_type") or "unknown type",
                self._redact(_text(payload.get("content"))),
            )
            return AgentError("the agent reported an error")
        if kind == "RunCancelled" and run.cancel_requested:
            return AgentError("the answer was cancelled", code="cancelled")
        log.warning("%s: run ended with %s", self.name, kind)
        return AgentError(_ENDINGS[kind])

    async def cancel(self, context: ChatContext) -> bool:
        """``POST .../runs/{run_id}/cancel?session_id=...``; True when AgentOS answered 2xx.

        A run that has not announced its id yet (no ``RunStarted``) is waited for a moment.
        """
        run = self._runs.get((context.session_id, context.message_id))
        if run is None:
            return False
        run.cancel_requested = True
        try:
            async with asyncio.timeout(min(RUN_START_WAIT_S, self.timeout_s)):
                await run.started.wait()
        except TimeoutError:
            log.info("%s: cancel before the run announced its id", self.name)
            return False
        url = self.runs_url / str(run.run_id) / "cancel"
        params = {"session_id": run.session_id or context.session_id}
        try:
            async with (
                asyncio.timeout(self.connect_timeout_s + self.check_timeout_s),
                self._client().post(url, params=params) as response,
            ):
                confirmed = response.status < 300
                detail = f"HTTP {response.status}"
        except (TimeoutError, aiohttp.ClientError) as exc:
            confirmed, detail = False, describe(exc)
        log.log(
            logging.INFO if confirmed else logging.WARNING,
            "%s: cancel of run %s: %s",
            self.name,
            run.run_id,
            detail,
        )
        return confirmed

    def _remainder(self, streamed: str, whole: str) -> str:
        """What ``RunCompleted`` adds to the deltas: all of it when none came.

        When the whole answer is not a continuation of the deltas (an output model rewrote
        it), the deltas already sent stand: the client has shown them.
        """
        if whole.startswith(streamed):
            return whole[len(streamed) :]
        log.info("%s: the completed answer differs from its streamed deltas", self.name)
        return ""

    def _payload(self, data: str) -> dict[str, Any]:
        try:
            payload = json.loads(data)
        except ValueError as exc:
            raise self._malformed(data) from exc
        if not isinstance(payload, dict):
            raise self._malformed(data)
        return payload


def parse_target(target: str) -> tuple[URL, str, str]:
    """Split ``http://HOST:PORT[/prefix]/agents/ID`` into (base, kind, id)."""
    url = parse_http_url(target, example=EXAMPLE)
    parts = url.path.rstrip("/").split("/")
    if len(parts) < 3 or parts[-2] not in _EVENT_PREFIX or not parts[-1]:
        raise ConfigError(f"invalid Agno agent URL, expected {EXAMPLE}", path=SPEC_PATH)
    return url.with_path("/".join(parts[:-2]) or "/"), parts[-2], parts[-1]


def create(target: str, settings: AgentSettings) -> Agent:
    base, kind, component_id = parse_target(target)
    agent = AgnoAgent(
        base=base,
        kind=kind,
        component_id=component_id,
        settings=settings,
        api_key=agent_api_key(settings, DEFAULT_API_KEY_ENV),
    )
    return BoundedAgent.from_settings(agent, settings)
