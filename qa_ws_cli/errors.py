"""One exception tree for qa-ws; every error carries structured, keyword-only context.

    QaWsError
     +-- ConfigError            bad or missing configuration (names the field path)
     +-- AuthError              a token was refused (code, status: the HTTP answer)
     +-- ProtocolError          a frame broke wire protocol v1 (code, reply_to)
     +-- AgentError             the agent backend failed (code: agent_error)
     |    +-- AgentTimeout      no (complete) answer in time (code: agent_timeout)
     |    +-- AgentBusy         the backend's queue is full (code: agent_busy)
     +-- ClientError            raised by the client library
          +-- HandshakeRefused  the server answered the upgrade with an HTTP error
          +-- ConnectionLost    the connection closed before the answer came
          |    +-- ServerUnreachable  no HTTP answer at all (admin commands, status)
          +-- RequestRefused    the admin API answered 4xx/5xx (status, error)
          +-- ServerError       the server sent a protocol `error` event
          +-- ClientTimeout     no answer within the client's timeout

Messages are safe to show to a user; internals stay in ``__cause__`` and the server log.
"""

from __future__ import annotations


class QaWsError(Exception):
    """Base of every error qa-ws raises on purpose."""

    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(QaWsError):
    code = "config_error"

    def __init__(self, message: str, *, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class AuthError(QaWsError):
    """A token or handshake was refused; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, *, code: str = "invalid_token", status: int = 401) -> None:
        super().__init__(message, code=code)
        self.status = status


class ProtocolError(QaWsError):
    def __init__(
        self, message: str, *, code: str = "invalid_message", reply_to: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.reply_to = reply_to


class AgentError(QaWsError):
    code = "agent_error"

    def __init__(
        self, message: str = "the agent failed to answer", *, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)


class AgentTimeout(AgentError):
    code = "agent_timeout"

    def __init__(self, message: str = "the agent did not answer in time") -> None:
        super().__init__(message)


class AgentBusy(AgentError):
    code = "agent_busy"

    def __init__(self, message: str = "the agent is busy, retry shortly") -> None:
        super().__init__(message)


class ClientError(QaWsError):
    code = "client_error"


class HandshakeRefused(ClientError):
    def __init__(self, message: str, *, status: int, error: str, retry_after: float | None = None):
        super().__init__(message, code=error)
        self.status = status
        self.error = error
        self.retry_after = retry_after


class ConnectionLost(ClientError):
    code = "connection_lost"

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        self.close_code = close_code


class ServerError(ClientError):
    def __init__(
        self, message: str, *, code: str, reply_to: str | None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.reply_to = reply_to
        self.retry_after = retry_after


class ClientTimeout(ClientError):
    code = "timeout"


class ServerUnreachable(ConnectionLost):
    code = "unreachable"


class RequestRefused(ClientError):
    def __init__(self, message: str, *, status: int, error: str) -> None:
        super().__init__(message, code=error)
        self.status = status
        self.error = error
