"""Close codes and error codes of wire protocol v1 (see docs/protocol.md)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TOKEN_EXPIRED = 4001
    OPERATOR_DISCONNECT = 4002
    TOKEN_REVOKED = 4003


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    UNSUPPORTED_FRAME = "unsupported_frame"
    MESSAGE_TOO_LARGE = "message_too_large"
    RATE_LIMITED = "rate_limited"
    AGENT_BUSY = "agent_busy"
    AGENT_TIMEOUT = "agent_timeout"
    AGENT_ERROR = "agent_error"
    CANCELLED = "cancelled"
    NOT_IN_FLIGHT = "not_in_flight"
    AGENT_INTERRUPTED = "agent_interrupted"
    FILE_NOT_FOUND = "file_not_found"
    UNSUPPORTED_FILE_TYPE = "unsupported_file_type"
    INTERNAL_ERROR = "internal_error"


class HandshakeError(StrEnum):
    """The ``error`` field of a refused handshake's JSON body."""

    MISSING_TOKEN = "missing_token"
    INVALID_TOKEN = "invalid_token"
    TOKEN_EXPIRED = "token_expired"
    TOKEN_REVOKED = "token_revoked"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    SESSION_FORBIDDEN = "session_forbidden"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    SERVER_FULL = "server_full"
    DRAINING = "draining"
    BAD_REQUEST = "bad_request"  # also what the guard answers a request it cannot parse


class FileError(StrEnum):
    """The ``error`` field of a refused ``/files`` request (401/403 use ``HandshakeError``)."""

    FILE_TOO_LARGE = "file_too_large"
    UNSUPPORTED_FILE_TYPE = "unsupported_file_type"
    FILE_NOT_FOUND = "file_not_found"
    INVALID_UPLOAD = "invalid_upload"
    INVALID_SIGNATURE = "invalid_signature"
    STORAGE_FULL = "storage_full"


SUBPROTOCOL = "qa-ws.v1"
BEARER_PREFIX = "bearer."
PROTOCOL_VERSION = 1
