"""Wire protocol v1: events, codec and codes, with no I/O."""

from qa_ws_cli.protocol.codec import decode_client, decode_server, encode
from qa_ws_cli.protocol.codes import (
    BEARER_PREFIX,
    PROTOCOL_VERSION,
    SUBPROTOCOL,
    CloseCode,
    ErrorCode,
    HandshakeError,
)
from qa_ws_cli.protocol.events import (
    AgentDelta,
    AgentResponse,
    Cancel,
    ChatMessage,
    ClientEvent,
    ErrorEvent,
    Ping,
    Pong,
    ServerEvent,
    SystemEvent,
    utc_timestamp,
)

__all__ = [
    "BEARER_PREFIX",
    "PROTOCOL_VERSION",
    "SUBPROTOCOL",
    "AgentDelta",
    "AgentResponse",
    "Cancel",
    "ChatMessage",
    "ClientEvent",
    "CloseCode",
    "ErrorCode",
    "ErrorEvent",
    "HandshakeError",
    "Ping",
    "Pong",
    "ServerEvent",
    "SystemEvent",
    "decode_client",
    "decode_server",
    "encode",
    "utc_timestamp",
]
