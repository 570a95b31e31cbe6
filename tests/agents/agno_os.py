"""A real Agno AgentOS for the tests: ``python agno_os.py PORT MODEL_BASE_URL``.

One agent, ``qa``, with one Python tool, ``lookup_test_plan``; its model is Agno's own
``OpenAILike`` pointed at the tests' OpenAI-compatible stand-in (tests/agents/conftest.py),
the only part that is not real. Telemetry is off and nothing is stored.

``lookup_test_plan("slow")`` runs until the run is cancelled (bounded), so a test can cancel
a run while a tool is in the middle of it.
"""

from __future__ import annotations

import asyncio
import os
import sys

os.environ.setdefault("AGNO_TELEMETRY", "false")

import uvicorn
from agno.agent import Agent
from agno.models.openai import OpenAILike
from agno.os import AgentOS
from agno.run.cancel import get_cancellation_manager

SLOW_TOOL_BOUND_S = 20.0


async def lookup_test_plan(feature: str) -> str:
    """Look up the team's test plan for a feature.

    Args:
        feature: the feature to look up, e.g. "login".
    """
    if feature == "slow":
        manager = get_cancellation_manager()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SLOW_TOOL_BOUND_S
        while loop.time() < deadline:
            if any((await manager.aget_active_runs()).values()):
                return "stopped: the run was cancelled"
            await asyncio.sleep(0.02)
        return "slow plan"
    return f"plan for {feature}: valid login, wrong password, lockout after 5 tries"


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
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
