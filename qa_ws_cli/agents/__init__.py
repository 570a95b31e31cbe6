"""Agent backends: the interface, the typed events, the built-ins, and the registry."""

from qa_ws_cli.agents.base import Agent, ChatContext, Turn, text_pieces
from qa_ws_cli.agents.builtin import DemoAgent, EchoAgent
from qa_ws_cli.agents.events import (
    Attachment,
    Piece,
    Reasoning,
    RunEvent,
    Status,
    ToolFailed,
    ToolFinished,
    ToolLog,
    ToolStarted,
    to_frame,
)
from qa_ws_cli.agents.registry import load_agent

__all__ = [
    "Agent",
    "Attachment",
    "ChatContext",
    "DemoAgent",
    "EchoAgent",
    "Piece",
    "Reasoning",
    "RunEvent",
    "Status",
    "ToolFailed",
    "ToolFinished",
    "ToolLog",
    "ToolStarted",
    "Turn",
    "load_agent",
    "text_pieces",
    "to_frame",
]
