"""A real Agno AgentOS for the tests: ``python agno_os.py PORT MODEL_BASE_URL``.

One agent, ``qa``, with one Python tool, ``lookup_test_plan``; its model is Agno's own
``OpenAILike`` pointed at the tests' OpenAI-compatible stand-in (tests/agents/conftest.py),
the only part that is not real. Telemetry is off and nothing is stored.

``lookup_test_plan("slow")`` runs until the run is cancelled (bounded), so a test can cancel
a run while a tool is in the middle of it. For the tests' eyes only: ``GET /test/tool-log``
lists how each tool call ended (``stopped`` when it saw its run cancelled, ``killed`` when its
run's stream was closed under it), ``GET /test/requests`` every request AgentOS received.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault("AGNO_TELEMETRY", "false")

import uvicorn
from agno.agent import Agent
from agno.models.openai import OpenAILike
from agno.os import AgentOS
from agno.run.cancel import get_cancellation_manager
from fastapi import Request

SLOW_TOOL_BOUND_S = 20.0
TOOL_LOG: list[dict[str, str]] = []  # this process's tool calls, for GET /test/tool-log
REQUESTS: list[dict[str, str]] = []  # every request received, for GET /test/requests


async def lookup_test_plan(feature: str) -> str:
    """Look up the team's test plan for a feature.

    Args:
        feature: the feature to look up, e.g. "login".
    """
    if feature == "slow":
        manager = get_cancellation_manager()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SLOW_TOOL_BOUND_S
        try:
            while loop.time() < deadline:
                if any((await manager.aget_active_runs()).values()):
                    TOOL_LOG.append({"feature": feature, "ended": "stopped"})
                    return "stopped: the run was cancelled"
                await asyncio.sleep(0.02)
        except asyncio.CancelledError:
            TOOL_LOG.append({"feature": feature, "ended": "killed"})
            raise
        TOOL_LOG.append({"feature": feature, "ended": "timed out"})
        return "slow plan"
    TOOL_LOG.append({"feature": feature, "ended": "answered"})
    return f"plan for {feature}: valid login, wrong password, lockout after 5 tries"


async def tool_log() -> list[dict[str, str]]:
    return TOOL_LOG


async def requests_seen() -> list[dict[str, str]]:
    return REQUESTS


async def record_request(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
    REQUESTS.append(
        {"method": request.method, "path": request.url.path, "query": request.url.query}
    )
    return await call_next(request)


def build(model_url: str) -> AgentOS:
    model = OpenAILike(id="qa-model", base_url=model_url, api_key="not-a-real-key")
    agent = Agent(
        id="qa",
        name="QA Helper",
        model=model,
        tools=[lookup_test_plan],
        telemetry=False,
    )
    return AgentOS(agents=[agent], telemetry=False, auto_provision_dbs=False)


if __name__ == "__main__":
    port, model_url = int(sys.argv[1]), sys.argv[2]
    app = build(model_url).get_app()
    app.add_api_route("/test/tool-log", tool_log, methods=["GET"])
    app.add_api_route("/test/requests", requests_seen, methods=["GET"])
    app.middleware("http")(record_request)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
