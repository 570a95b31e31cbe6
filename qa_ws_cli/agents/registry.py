"""Spec string -> Agent: ``demo``, ``echo``, ``agno+http(s)://...``, ``openai+http(s)://...``,
``python:package.module:attr``."""

from __future__ import annotations

from importlib import import_module

from qa_ws_cli.agents.base import Agent
from qa_ws_cli.config import AgentSettings
from qa_ws_cli.errors import ConfigError

# scheme prefix -> module whose ``create(target, settings)`` builds the agent
_BACKENDS = {
    "agno+": "qa_ws_cli.agents.agno",
    "openai+": "qa_ws_cli.agents.openai",
    "python:": "qa_ws_cli.agents.python",
}
BUILTIN = ("demo", "echo")


def load_agent(settings: AgentSettings, spec: str | None = None) -> Agent:
    spec = (spec or settings.spec).strip()
    if spec == "demo":
        from qa_ws_cli.agents.builtin import DemoAgent

        return DemoAgent(latency_ms=settings.demo_latency_ms)
    if spec == "echo":
        from qa_ws_cli.agents.builtin import EchoAgent

        return EchoAgent()
    for prefix, module_name in _BACKENDS.items():
        if spec.startswith(prefix):
            module = import_module(module_name)
            agent: Agent = module.create(spec[len(prefix) :], settings)
            return agent
    raise ConfigError(
        f"unknown agent {spec!r}: use demo, echo, agno+http://HOST:PORT/agents/ID, "
        "openai+http://HOST:PORT/v1 or python:package.module:attr",
        path="websocket.agent.spec",
    )
