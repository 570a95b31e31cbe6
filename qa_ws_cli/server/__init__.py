"""The aiohttp gateway: ``create_app`` and ``run`` (with signals and a graceful drain)."""

from qa_ws_cli.server.app import create_app
from qa_ws_cli.server.gateway import GATEWAY, Gateway
from qa_ws_cli.server.store import MemoryStore, Store

__all__ = ["GATEWAY", "Gateway", "MemoryStore", "Store", "create_app"]
