"""qa-ws: a real-time WebSocket gateway for a QA agent, and the tools to operate and test it.

The public API, loaded on first use (so ``import qa_ws_cli`` stays cheap and imports neither
aiohttp nor pydantic before a caller needs them, e.g. before Locust's gevent patching)::

    from qa_ws_cli import Agent, ChatContext, QaWsClient, ClientOptions, Settings, create_app
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "qa_ws_cli.agents.base",
    "ChatContext": "qa_ws_cli.agents.base",
    "ClientOptions": "qa_ws_cli.client.connection",
    "QaWsClient": "qa_ws_cli.client.connection",
    "QaWsError": "qa_ws_cli.errors",
    "Settings": "qa_ws_cli.config",
    "Turn": "qa_ws_cli.agents.base",
    "create_app": "qa_ws_cli.server.app",
    "issue_token": "qa_ws_cli.auth.tokens",
    "load_settings": "qa_ws_cli.config",
}

__all__ = [
    "Agent",
    "ChatContext",
    "ClientOptions",
    "QaWsClient",
    "QaWsError",
    "Settings",
    "Turn",
    "__version__",
    "create_app",
    "issue_token",
    "load_settings",
]

if TYPE_CHECKING:
    from qa_ws_cli.agents.base import Agent, ChatContext, Turn
    from qa_ws_cli.auth.tokens import issue_token
    from qa_ws_cli.client.connection import ClientOptions, QaWsClient
    from qa_ws_cli.config import Settings, load_settings
    from qa_ws_cli.errors import QaWsError
    from qa_ws_cli.server.app import create_app


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qa_ws_cli' has no attribute {name!r}")
    return getattr(import_module(module), name)
