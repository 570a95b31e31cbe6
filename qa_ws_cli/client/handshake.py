"""Opening a qa-ws connection on ``websockets``' asyncio client, and saying why it failed.

Every way an open can fail becomes one sentence a user can act on: nothing listening, a
page instead of the WebSocket endpoint, TLS against a plain server, a refusal with the
server's own error code. The library's exception stays in ``__cause__``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl as ssl_module
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    InvalidHandshake,
    InvalidHeader,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
)
from websockets.typing import Origin, Subprotocol

from qa_ws_cli import __version__
from qa_ws_cli.client.text import bearer
from qa_ws_cli.errors import ClientError, ClientTimeout, ConnectionLost, HandshakeRefused
from qa_ws_cli.protocol.codes import BEARER_PREFIX, SUBPROTOCOL, CloseCode

Carrier = Literal["header", "subprotocol", "query"]
SCHEMES = ("ws", "wss")
# closes after which reconnecting would only be refused again
FINAL_CLOSES = frozenset(
    {
        CloseCode.NORMAL,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.TOKEN_REVOKED,
        CloseCode.OPERATOR_DISCONNECT,
    }
)


@dataclass
class ClientOptions:
    """How to reach the server and what to do when the connection is lost."""

    url: str
    token: str | None = None
    carrier: Carrier = "header"
    origin: str | None = None
    # Timeouts
    connect_timeout: float = 10.0  # TCP, TLS, the upgrade and the `connected` event
    close_timeout: float = 5.0
    # Limits
    max_size: int | None = 16 * 2**20  # the largest frame accepted from the server, in bytes
    max_events: int = 1024  # events kept for a caller that does not iterate events()
    # Reconnecting
    reconnect: bool = False
    max_reconnects: int = 8
    backoff_base: float = 0.25
    backoff_max: float = 8.0
    token_factory: Callable[[], str] | None = None
    # TLS: True verifies with the system's roots, an SSLContext is used as given,
    # False encrypts without checking the certificate (a self-signed test server)
    ssl: ssl_module.SSLContext | bool = True


class AbortableConnection(ClientConnection):
    """Keeps the transport asyncio hands every protocol, so the client can cut it the way a
    network failure would (no close frame): ``/reconnect`` and the tests use that."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.cut: Callable[[], None] = (
            transport.abort if isinstance(transport, asyncio.Transport) else transport.close
        )


_EXAMPLE = "(for example ws://127.0.0.1:8765/ws)"


def check_url(url: str) -> str | None:
    """None when ``url`` is a WebSocket URL, else what is wrong with it."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port out of range or not a number
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535", ...
        return f"{url!r} is not a valid URL ({exc}) {_EXAMPLE}"
    if parts.scheme not in SCHEMES:
        return f"{url!r} is not a WebSocket URL: it starts with ws:// or wss:// {_EXAMPLE}"
    if not parts.hostname:
        return f"{url!r} names no host: give it after {parts.scheme}:// {_EXAMPLE}"
    if parts.fragment or url.endswith("#"):
        return f"{url!r}: a WebSocket URL has no #fragment {_EXAMPLE}"
    return None


def request_for(
    options: ClientOptions, session_id: str | None, last_seq: int
) -> tuple[str, dict[str, str], list[Subprotocol]]:
    """The URL, headers and subprotocols of one open: the token in its carrier, a resume."""
    headers: dict[str, str] = {}
    protocols = [Subprotocol(SUBPROTOCOL)]
    query: dict[str, str] = {}
    token = options.token
    if token:
        authorization = bearer(token)  # checks the token's characters, whatever the carrier
        if options.carrier == "header":
            headers.update(authorization)
        elif options.carrier == "subprotocol":
            protocols.append(Subprotocol(BEARER_PREFIX + token))
        else:
            query["token"] = token
    if session_id:
        query.update(session_id=session_id, last_seq=str(last_seq))
    parts = urlsplit(options.url)
    if query:
        joined = "&".join(q for q in (parts.query, urlencode(query)) if q)
        parts = parts._replace(query=joined)
    return urlunsplit(parts), headers, protocols


def _tls(options: ClientOptions, url: str) -> dict[str, Any]:
    if urlsplit(url).scheme != "wss":
        return {}
    if options.ssl is False:
        context = ssl_module.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl_module.CERT_NONE
        return {"ssl": context}
    return {"ssl": options.ssl}


async def open_connection(
    options: ClientOptions, url: str, headers: dict[str, str], protocols: list[Subprotocol]
) -> AbortableConnection:
    """Open the WebSocket (not yet the `connected` event); every failure is a ClientError."""
    try:
        ws = await connect(
            url,
            origin=Origin(options.origin) if options.origin else None,
            subprotocols=protocols,
            additional_headers=headers,
            user_agent_header=f"qa-ws/{__version__}",
            compression=None,
            proxy=None,
            open_timeout=options.connect_timeout,
            close_timeout=options.close_timeout,
            max_size=options.max_size,
            create_connection=AbortableConnection,
            **_tls(options, url),
        )
    except Exception as exc:
        raise describe_failure(exc, options.url, options.connect_timeout) from exc
    assert isinstance(ws, AbortableConnection)
    return ws


def _where(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def _ws_url(url: str, scheme: str | None = None, path: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit((scheme or parts.scheme, parts.netloc, path or parts.path, "", ""))


# OpenSSL's verify codes for a certificate whose issuer is not trusted here (self-signed ...)
_UNTRUSTED_ISSUER = frozenset({2, 18, 19, 20, 21})


def trust_hint(exc: ssl_module.SSLCertVerificationError) -> str:
    """How to trust a test server's certificate: Python's default context (the WebSocket and
    the HTTP clients both use it) reads SSL_CERT_FILE. Empty when the issuer is not the issue
    (a name mismatch, an expired certificate)."""
    if exc.verify_code not in _UNTRUSTED_ISSUER:
        return ""
    return "; to trust a test certificate, set SSL_CERT_FILE=/path/to/cert.pem"


def describe_failure(exc: Exception, url: str, timeout: float) -> ClientError:
    """One line for a failed open: what is wrong and what to try."""
    where = _where(url)
    if isinstance(exc, InvalidStatus):
        return _refusal(exc, url)
    if isinstance(exc, InvalidURI):
        return ConnectionLost(check_url(url) or f"{url!r} is not a WebSocket URL")
    if isinstance(exc, TimeoutError):
        return ClientTimeout(f"no WebSocket handshake from {where} within {timeout:g} s")
    if isinstance(exc, ssl_module.SSLCertVerificationError):
        return ConnectionLost(
            f"the TLS certificate of {where} was not accepted ({exc.verify_message})"
            + trust_hint(exc)
        )
    if isinstance(exc, ssl_module.SSLError):
        if "WRONG_VERSION_NUMBER" in str(exc) or "record layer failure" in str(exc):
            return ConnectionLost(
                f"{where} did not answer TLS: the server speaks plain ws, "
                f"try {_ws_url(url, scheme='ws')}"
            )
        return ConnectionLost(f"the TLS handshake with {where} failed ({exc.reason})")
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionLost(
            f"nothing is listening on {where}: is `qa-ws serve` running on that port?"
        )
    if isinstance(exc, socket.gaierror):
        return ConnectionLost(f"cannot find the host of {url} ({exc.strerror})")
    if isinstance(exc, InvalidMessage):
        hint = "" if url.startswith("wss:") else f"; if it uses TLS, try {_ws_url(url, 'wss')}"
        return ConnectionLost(f"{where} did not answer the WebSocket upgrade with HTTP{hint}")
    if isinstance(exc, InvalidHeader):  # its text holds the header's value: a token, maybe
        return ConnectionLost(
            f"the WebSocket handshake with {where} failed: a bad {exc.name} header"
        )
    if isinstance(exc, InvalidHandshake):
        return ConnectionLost(f"the WebSocket handshake with {where} failed: {exc}")
    if isinstance(exc, OSError):
        return ConnectionLost(f"cannot connect to {where} ({exc.strerror or exc})")
    return ConnectionLost(f"cannot connect to {where} ({type(exc).__name__})")


def _refusal(exc: InvalidStatus, url: str) -> HandshakeRefused:
    response = exc.response
    status = response.status_code
    retry = response.headers.get("Retry-After")
    retry_after = float(retry) if retry and retry.isascii() and retry.isdigit() else None
    try:
        data = json.loads(response.body or b"")
        error, detail = str(data["error"]), str(data.get("detail", ""))
    except (ValueError, KeyError, TypeError):
        return HandshakeRefused(
            f"{_where(url)} answered HTTP {status}, not a WebSocket upgrade: "
            f"the path is /ws (try {_ws_url(url, path='/ws')})",
            status=status,
            error="not_websocket",
            retry_after=retry_after,
        )
    return HandshakeRefused(
        f"handshake refused: HTTP {status} {error}: {detail}",
        status=status,
        error=error,
        retry_after=retry_after,
    )


def close_text(code: int | None) -> str:
    reasons = {
        CloseCode.GOING_AWAY: "the server is shutting down",
        CloseCode.POLICY_VIOLATION: "closed by the server for a policy violation",
        CloseCode.MESSAGE_TOO_BIG: "a frame was larger than the server allows",
        CloseCode.INTERNAL_ERROR: "the server had an internal error",
        CloseCode.TOKEN_EXPIRED: "the token expired",
        CloseCode.OPERATOR_DISCONNECT: "disconnected by an operator",
        CloseCode.TOKEN_REVOKED: "the token was revoked",
    }
    text = reasons.get(code or 0, "the connection was lost")  # type: ignore[call-overload]
    return f"{text} (close code {code})" if code else text
