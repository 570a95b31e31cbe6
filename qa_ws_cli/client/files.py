"""Uploading a file for a chat message: ``POST /files`` next to the WebSocket endpoint.

The HTTP base comes from the client's own ws/wss URL (``wss://host/prefix/ws`` uploads to
``https://host/prefix/files``), with the same token (always as a bearer header: the upload is
plain HTTP), the same ``Origin`` and the same TLS choice. The file is streamed from disk,
never read whole; the server sniffs its type and answers with the ``file_id`` to put in
``chat_message.attachments``. Every failure is one sentence in the client's error tree.
"""

from __future__ import annotations

import json
import ssl as ssl_module
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlencode

import aiohttp

from qa_ws_cli.client.admin import http_base, printable, refusal_error, unreachable_reason
from qa_ws_cli.client.handshake import ClientOptions
from qa_ws_cli.client.text import bearer
from qa_ws_cli.errors import ClientError, RequestRefused, ServerUnreachable

UPLOAD_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """The server's answer to an upload (``201``)."""

    file_id: str
    name: str
    mime: str
    size: int
    expires_at: str

    def describe(self) -> str:
        return f"{printable(self.name, 80)} ({self.mime}, {human_size(self.size)})"


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / 1024 / 1024:.1f} MiB"


def files_url(ws_url: str) -> str:
    """``http(s)://…/files`` beside the ``ws(s)://…/ws`` endpoint."""
    return http_base(ws_url) + "/files"


def _ssl(options: ClientOptions) -> ssl_module.SSLContext | bool:
    return options.ssl  # aiohttp reads False as "encrypt, do not verify", as the ws client


async def upload_file(
    options: ClientOptions,
    path: Path,
    *,
    session_id: str | None = None,
    timeout: float = UPLOAD_TIMEOUT_S,
) -> UploadedFile:
    """Upload ``path``; raises ClientError (unreadable file), HandshakeRefused (401/403),
    RequestRefused (413 file_too_large, 415 unsupported_file_type, ...) or ServerUnreachable.
    Without a token (a server run with ``--no-auth``) the session's id names the owner.
    """
    url = files_url(options.url)
    if not options.token and session_id:
        url += "?" + urlencode({"session_id": session_id})
    headers = bearer(options.token)
    if options.origin:
        headers["Origin"] = options.origin
    handle = _open(path)
    client_timeout = aiohttp.ClientTimeout(total=timeout, connect=options.connect_timeout)
    with handle:
        form = aiohttp.FormData()
        form.add_field("file", handle, filename=path.name, content_type="application/octet-stream")
        try:
            async with (
                aiohttp.ClientSession(timeout=client_timeout) as http,
                http.post(url, data=form, headers=headers, ssl=_ssl(options)) as response,
            ):
                text = await response.text(errors="replace")
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ServerUnreachable(f"cannot upload to {url}: {unreachable_reason(exc)}") from None
    if status != 201:
        raise refusal_error(status, text, "/files")
    return _answer(text)


def _open(path: Path) -> BinaryIO:
    """The file to stream (opening a local file does not block for long)."""
    shown = printable(str(path), 200)
    if path.is_dir():
        raise ClientError(f"cannot attach {shown}: it is a directory")
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise ClientError(f"cannot attach {shown}: no such file") from None
    except OSError as exc:
        raise ClientError(f"cannot attach {shown}: {exc.strerror or 'unreadable'}") from None


def _answer(text: str) -> UploadedFile:
    try:
        body: dict[str, Any] = json.loads(text)
        return UploadedFile(
            file_id=str(body["file_id"]),
            name=str(body["name"]),
            mime=str(body["mime"]),
            size=int(body["size"]),
            expires_at=str(body["expires_at"]),
        )
    except (ValueError, KeyError, TypeError):
        raise RequestRefused(
            "/files answered 201 without the file's description", status=201, error="not_json"
        ) from None


__all__ = ["UploadedFile", "files_url", "human_size", "upload_file"]
