"""An agent that uses a tool, for end-to-end tests of the clients (send, repl, the page),
loaded by real ``qa-ws serve`` processes as ``python:tests.tool_agent:agent`` (with the
repository on PYTHONPATH).

Every answer calls ``lookup_test_plan`` first (``feature`` is the message's first word after
``plan``, else "login"), reports the tool's 120 ms, then answers with what it was given: the
question and each attached file's name, type and size. A message containing ``slow`` keeps the
tool running for 30 s (long enough for a client to cancel it), ``fail`` makes the tool fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from qa_ws_cli.agents import ChatContext, Piece, ToolFailed, ToolFinished, ToolStarted


def _feature(message: str) -> str:
    words = message.split()
    if "plan" in words and words.index("plan") + 1 < len(words):
        return words[words.index("plan") + 1]
    return "login"


class ToolUser:
    async def stream(self, message: str, context: ChatContext) -> AsyncIterator[Piece]:
        call = f"call-{context.message_id}"
        feature = _feature(message)
        yield ToolStarted(call, "lookup_test_plan", {"feature": feature})
        await asyncio.sleep(30 if "slow" in message else 0.3)
        if "fail" in message:
            yield ToolFailed(call, "lookup_test_plan", "the plan store is down")
        else:
            yield ToolFinished(call, "lookup_test_plan", f"plan for {feature}: 3 cases", ms=120)
        yield "Plan found. "
        files = ", ".join(f"{a.name} ({a.mime}, {len(a.data)} bytes)" for a in context.attachments)
        yield f"Files: {files or 'none'}. "
        yield f"You asked: {message}"


agent = ToolUser()
