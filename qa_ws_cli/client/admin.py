"""The admin API over HTTP, for the operator's commands (``qa-ws notify``, ``connections``,
``disconnect``, ``broadcast``, ``status``): one small aiohttp client, errors as the tree's.

A server URL may be given as the WebSocket URL the other commands take (``ws://HOST:PORT/ws``)
or as its HTTP base (``http://HOST:PORT``); both mean the same server.
"""

from __future__ import annotations

import json
import ssl
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from qa_ws_cli.client.handshake import trust_hint
from qa_ws_cli.client.text import bearer
from qa_ws_cli.errors import HandshakeRefused, RequestRefused, ServerUnreachable

_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def printable(text: str, limit: int = 300) -> str:
    """What a server or a user id said, safe for a terminal: no control characters."""
    clean = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:limit])
    return clean + ("…" if len(text) > limit else "")


def http_base(url: str) -> str:
    """``http(s)://host:port[/prefix]`` for a ws/wss/http/https URL; ValueError if it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port  # raises for a bad port
    except ValueError:
        raise ValueError(f"{url!r} is not a URL") from None
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(f"{url!r}: give http://HOST:PORT (or the ws:// URL of /ws)")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: no query or fragment, please")
    path = parts.path.rstrip("/")
    if path.endswith("/ws"):
        path = path[:-3]
    del port
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class AdminClient:
    def __init__(self, url: str, token: str | None, *, timeout_s: float = 10.0) -> None:
        self.base = http_base(url)
        self.token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> AdminClient:
        self._http = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._http is not None:
            await self._http.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        token: str | None = None,
        accept: tuple[int, ...] = (),
    ) -> tuple[int, str]:
        """(status, text); a 4xx/5xx not in ``accept`` raises, so does no answer at all."""
        assert self._http is not None, "use: async with AdminClient(...)"
        token = token if token is not None else self.token
        headers = bearer(token)
        try:
            async with self._http.request(
                method, self.base + path, json=body, params=params, headers=headers
            ) as resp:
                text = await resp.text(errors="replace")
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            reason = unreachable_reason(exc)
            raise ServerUnreachable(f"cannot reach {self.base}: {reason}") from None
        if status >= 400 and status not in accept:
            raise refusal_error(status, text, path)
        return status, text

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        status, text = await self.request(method, path, **kwargs)
        try:
            return json.loads(text)
        except ValueError:
            raise RequestRefused(
                f"{path} answered HTTP {status} without JSON", status=status, error="not_json"
            ) from None

    # -- the admin API -------------------------------------------------------------------------

    async def notify(self, user: str, message: str, data: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"user": user, "message": message}
        if data is not None:
            body["data"] = data
        answer: dict[str, Any] = await self.json("POST", "/admin/notify", body=body)
        return answer

    async def broadcast(self, message: str) -> int:
        answer = await self.json("POST", "/admin/broadcast", body={"message": message})
        return int(answer["delivered_to"])

    async def connections(self, user: str | None = None) -> dict[str, Any]:
        params = {"user": user} if user is not None else None
        answer: dict[str, Any] = await self.json("GET", "/admin/connections", params=params)
        return answer

    async def disconnect(self, *, user: str | None = None, connection_id: str | None = None) -> int:
        body = {"user": user} if user is not None else {"connection_id": connection_id}
        answer = await self.json("POST", "/admin/disconnect", body=body)
        return int(answer["disconnected"])


def unreachable_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        if isinstance(cert, ssl.SSLCertVerificationError):
            why = printable(str(cert.verify_message), 160)
            return f"its TLS certificate was not accepted ({why}){trust_hint(cert)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused (is the server running on that port?)"
        return printable(exc.os_error.strerror or str(exc.os_error), 160).lower()
    return printable(str(exc) or type(exc).__name__, 160)


def refusal_error(status: int, text: str, path: str) -> HandshakeRefused | RequestRefused:
    error, detail = "http_error", ""
    try:
        body = json.loads(text)
        if isinstance(body, dict):
            error = str(body.get("error", error))
            detail = str(body.get("detail") or body.get("message") or "")
    except ValueError:
        pass
    what = printable(f"{detail} (HTTP {status} {error})" if detail else f"HTTP {status} {error}")
    message = f"{path}: {what}"
    if status in (401, 403):
        return HandshakeRefused(message, status=status, error=printable(error, 60))
    return RequestRefused(message, status=status, error=printable(error, 60))
