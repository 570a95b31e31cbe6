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

AgentOS keeps the conversation itself, keyed by ``session_id``, so no history is sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from yarl import URL

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.agents.bounded import BoundedAgent
from qa_ws_cli.agents.http import (
    SPEC_PATH,
    SSEHTTPAgent,
    no_answer,
    parse_http_url,
)
from qa_ws_cli.config import AgentSettings, agent_api_key
from qa_ws_cli.errors import AgentError, ConfigError

log = logging.getLogger("qa_ws.agents")

EXAMPLE = "agno+http://HOST:7777/agents/AGENT_ID (or /teams/TEAM_ID)"
DEFAULT_API_KEY_ENV = "AGNO_API_KEY"
_EVENT_PREFIX = {"agents": "", "teams": "Team"}


def _text(content: object) -> str:
    """``content`` is text, or an object when the agent has an output schema."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False)


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
        prefix = _EVENT_PREFIX[kind]
        self.runs_url = base / kind / component_id / "runs"
        self.content_event = f"{prefix}RunContent"
        self.completed_event = f"{prefix}RunCompleted"
        self.error_event = f"{prefix}RunError"
        self._endings = {
            f"{prefix}RunCancelled": "the agent's run was cancelled by its server",
            f"{prefix}RunPaused": "the agent paused for a confirmation the gateway cannot give",
        }
        self._handled = {self.content_event, self.completed_event, self.error_event, *self._endings}

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        form = {
            "message": message,
            "stream": "true",
            "session_id": context.session_id,
            "user_id": context.user,
        }
        streamed: list[str] = []
        events = self._events(self.runs_url, data=form, headers={"Accept": "text/event-stream"})
        async with aclosing(events):
            async for event in events:
                name = event.event
                if name == "message":  # no "event:" line: the JSON names it
                    payload = self._payload(event.data)
                    name = str(payload.get("event", ""))
                elif name in self._handled:
                    payload = self._payload(event.data)
                else:
                    continue
                if name == self.content_event:
                    delta = _text(payload.get("content"))
                    if delta:
                        streamed.append(delta)
                        yield delta
                elif name == self.completed_event:
                    rest = self._remainder("".join(streamed), _text(payload.get("content")))
                    if rest:
                        streamed.append(rest)
                        yield rest
                    if not streamed:
                        raise no_answer()
                    return
                elif name == self.error_event:
                    log.warning(
                        "%s: run error (%s): %s",
                        self.name,
                        payload.get("error_type") or "unknown type",
                        self._redact(_text(payload.get("content"))),
                    )
                    raise AgentError("the agent reported an error")
                elif name in self._endings:
                    log.warning("%s: run ended with %s", self.name, name)
                    raise AgentError(self._endings[name])
        raise self._cut_off(self.completed_event)

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
