"""The async client library: connect, resume, reconnect; the repl is built on it."""

from qa_ws_cli.client.connection import ClientOptions, QaWsClient

__all__ = ["ClientOptions", "QaWsClient"]
