"""qa-ws: a real-time WebSocket gateway for a QA agent, and the tools to operate and test it."""

__version__ = "0.1.0"

__all__ = ["__version__"]
