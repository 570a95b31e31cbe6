"""Agent backends: the interface, the built-ins, and the registry that reads a spec."""

from qa_ws_cli.agents.base import Agent, ChatContext, Turn
from qa_ws_cli.agents.builtin import DemoAgent, EchoAgent
from qa_ws_cli.agents.registry import load_agent

__all__ = ["Agent", "ChatContext", "DemoAgent", "EchoAgent", "Turn", "load_agent"]
