"""OpenAI-compatible chat completions: ``openai+http://HOST:PORT/v1`` with ``--agent-model``.

Ollama, vLLM, llama.cpp's server, LM Studio and OpenAI itself all speak it: ``POST
{base}/chat/completions`` with ``"stream": true`` answers ``data: <chunk JSON>`` events whose
``choices[0].delta.content`` is the next piece, then ``data: [DONE]``. A model remembers
nothing between calls, so every question carries the optional system prompt and the
session's recent turns that the gateway keeps (``context.history``).

Attachments go into the user's message as content parts (the chat completions "vision" form):
an image as an ``image_url`` part holding a ``data:`` URL, a text-like file (plain, Markdown,
CSV, JSON, XML, log) as a ``text`` part headed by its name. Any other type (a PDF) is refused
with ``unsupported_file_type``: this wire format has no part for it that every server reads.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from yarl import URL

from qa_ws_cli.agents.base import Agent, ChatContext
from qa_ws_cli.agents.bounded import BoundedAgent
from qa_ws_cli.agents.events import Attachment
from qa_ws_cli.agents.http import SSEHTTPAgent, no_answer, parse_http_url
from qa_ws_cli.config import AgentSettings, agent_api_key
from qa_ws_cli.errors import AgentError, ConfigError
from qa_ws_cli.protocol.codes import ErrorCode

log = logging.getLogger("qa_ws.agents")

EXAMPLE = "openai+http://HOST:PORT/v1"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DONE = "[DONE]"


def attachment_part(attachment: Attachment) -> dict[str, Any]:
    """One file as a chat completions content part, or ``unsupported_file_type``."""
    if attachment.is_image:
        encoded = base64.b64encode(attachment.data).decode("ascii")
        url = f"data:{attachment.mime};base64,{encoded}"
        return {"type": "image_url", "image_url": {"url": url}}
    if attachment.is_text:
        text = attachment.data.decode("utf-8", "replace")
        return {"type": "text", "text": f"File {attachment.name} ({attachment.mime}):\n{text}"}
    raise AgentError(
        f"this agent cannot read {attachment.mime} files", code=ErrorCode.UNSUPPORTED_FILE_TYPE
    )


class OpenAIChatAgent(SSEHTTPAgent):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint."""

    name = "openai"

    def __init__(
        self,
        *,
        base: URL,
        model: str,
        settings: AgentSettings,
        api_key: str | None = None,
    ) -> None:
        super().__init__(settings=settings, api_key=api_key, check_url=base / "models")
        self.completions_url = base / "chat" / "completions"
        self.model = model
        self.system_prompt = settings.system_prompt

    def messages(self, message: str, context: ChatContext) -> list[dict[str, Any]]:
        prompt: list[dict[str, Any]] = (
            [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        )
        prompt += [{"role": turn.role, "content": turn.content} for turn in context.history]
        if context.attachments:
            parts = [{"type": "text", "text": message}]
            parts += [attachment_part(a) for a in context.attachments]
            prompt.append({"role": "user", "content": parts})
        else:
            prompt.append({"role": "user", "content": message})
        return prompt

    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[str]:
        body = {
            "model": self.model,
            "messages": self.messages(message, context),
            "stream": True,
            "user": context.user,
        }
        answered = False
        events = self._events(
            self.completions_url, json=body, headers={"Accept": "text/event-stream"}
        )
        async with aclosing(events):
            async for event in events:
                if event.data == DONE:
                    if not answered:
                        raise no_answer()
                    return
                delta = self._delta(event.data)
                if delta:
                    answered = True
                    yield delta
        raise self._cut_off(f"data: {DONE}")

    def _delta(self, data: str) -> str:
        """The text of one chunk; role-only, finish and usage chunks have none."""
        try:
            chunk: Any = json.loads(data)
        except ValueError as exc:
            raise self._malformed(data) from exc
        if not isinstance(chunk, dict):
            raise self._malformed(data)
        if "error" in chunk or chunk.get("object") == "error":
            log.warning("%s: the model server reported: %s", self.name, self._redact(data[:300]))
            raise AgentError("the model server reported an error")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise self._malformed(data)
        for choice in choices[:1]:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if isinstance(content, str):
                return content
        return ""


def create(target: str, settings: AgentSettings) -> Agent:
    base = parse_http_url(target, example=EXAMPLE)
    if not settings.model:
        raise ConfigError(
            "an openai+ agent needs a model: set agent.model or pass --agent-model",
            path="websocket.agent.model",
        )
    agent = OpenAIChatAgent(
        base=base,
        model=settings.model,
        settings=settings,
        api_key=agent_api_key(settings, DEFAULT_API_KEY_ENV),
    )
    return BoundedAgent.from_settings(agent, settings)
