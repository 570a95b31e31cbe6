"""``POST /files`` and ``GET /files/{file_id}`` (docs/protocol.md, "Files").

The app's ``client_max_size`` (64 KiB) is for small JSON bodies; an upload is read here as a
stream instead, part by part and chunk by chunk, and refused with 413 the moment it passes
``limits.max_upload_bytes``, so a body larger than that is never held whole. A declared
``Content-Length`` past the limit is refused before a byte of the body is read.

Authentication and the ``Origin`` allowlist are the gateway middleware's checks (as for
``/ws``); a ``GET`` with a signed URL (``exp`` and ``sig``) skips the token and is checked here
instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from urllib.parse import quote

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import HttpProcessingError

from qa_ws_cli.config import Settings
from qa_ws_cli.protocol.codes import FileError
from qa_ws_cli.server.admission import SIGNED_FILE, UPLOAD, admitted, refusal
from qa_ws_cli.server.files import (
    FileSigner,
    FileStore,
    MemoryFileStore,
    RedisFileStore,
    StorageFull,
    StoredFile,
    utf8_text,
)
from qa_ws_cli.server.gateway import GATEWAY
from qa_ws_cli.server.keys import CLAIMS
from qa_ws_cli.server.sniff import clean_name, sniff

FILE_STORE = web.AppKey("file_store", FileStore)
FILE_SIGNER = web.AppKey("file_signer", FileSigner)
CHUNK_BYTES = 64 * 1024
MULTIPART_SLACK = 16 * 1024  # boundaries and part headers around the file itself
OTHER_PART_BYTES = 4 * 1024  # a part that is not ``file`` is skipped, up to this much
# What aiohttp raises on a body it cannot read: a bad boundary or part (ValueError, KeyError,
# AssertionError), a part header with a control character or no colon, or too long
# (``http_exceptions``), a body its Content-Encoding cannot decode (``RequestPayloadError``),
# an oversize ``_charset_`` part (RuntimeError).
MALFORMED_BODY = (
    AssertionError,
    ValueError,
    KeyError,
    RuntimeError,
    HttpProcessingError,
    web.RequestPayloadError,
)
log = logging.getLogger("qa_ws.server")


def file_store_for(settings: Settings) -> FileStore:
    """Redis when the gateway shares a store, else memory, with the configured limits."""
    limits = settings.limits
    if settings.store.url:
        return RedisFileStore(settings.store.url, ttl_s=limits.file_ttl_s)
    return MemoryFileStore(ttl_s=limits.file_ttl_s, max_bytes=limits.files_memory_bytes)


def signer_for(settings: Settings) -> FileSigner:
    return FileSigner(settings.secret(), ttl_s=settings.limits.file_url_ttl_s)


def setup(app: web.Application, store: FileStore, signer: FileSigner) -> None:
    """Register the routes, the store and the URL signer on ``app``."""
    app[FILE_STORE] = store
    app[FILE_SIGNER] = signer
    app.router.add_post("/files", admitted(upload, UPLOAD))
    app.router.add_get("/files/{file_id}", admitted(download, SIGNED_FILE))
    app.cleanup_ctx.append(_lifetime)


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    store = app[FILE_STORE]
    await store.start()
    yield
    await store.aclose()


def _refuse(request: web.Request, status: int, error: str, detail: str) -> web.Response:
    headers = {hdrs.RETRY_AFTER: "30"} if status == 507 else None
    return refusal(request.app[GATEWAY], request, status, error, detail, headers)


class _Refused(Exception):
    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


async def _file_part(request: web.Request) -> BodyPartReader:
    """The ``file`` part of a multipart body; other small parts before it are skipped."""
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not ours
            if part.name == "file":
                return part
            skipped = 0
            while chunk := await part.read_chunk(1024):
                skipped += len(chunk)
                if skipped > OTHER_PART_BYTES:
                    break
            if skipped > OTHER_PART_BYTES:
                break
    except MALFORMED_BODY as exc:
        raise _Refused(400, FileError.INVALID_UPLOAD, "the body is not valid multipart") from exc
    raise _Refused(400, FileError.INVALID_UPLOAD, "send the file in a multipart part named 'file'")


async def _read_limited(part: BodyPartReader, limit: int) -> bytes:
    data = bytearray()
    try:
        while chunk := await part.read_chunk(CHUNK_BYTES):
            if len(data) + len(chunk) > limit:
                raise _Refused(
                    413, FileError.FILE_TOO_LARGE, f"a file may have at most {limit} bytes"
                )
            data += chunk
    except MALFORMED_BODY as exc:
        raise _Refused(400, FileError.INVALID_UPLOAD, "the body is not valid multipart") from exc
    if not part.at_eof():  # the body ended before the boundary after the file: cut off
        raise _Refused(400, FileError.INVALID_UPLOAD, "the body ends inside the file part")
    return bytes(data)


def _refuse_body(request: web.Request, refused: _Refused) -> web.Response:
    """A refusal mid-body; after a body aiohttp could not read, the connection is closed.

    Where the next request would start is unknown then. A body that failed to decode (its
    stream holds the error) is marked ended too: aiohttp drains what is left of a body after
    the answer, and would raise and log the same error again doing so.
    """
    response = _refuse(request, refused.status, refused.error, refused.detail)
    if isinstance(refused.__cause__, MALFORMED_BODY):
        response.force_close()  # ``Connection: close``
        if request.content.exception() is not None:
            request.content.feed_eof()
    return response


async def upload(request: web.Request) -> web.Response:
    """``POST /files``: 201 with the file's id, or a refusal that stored nothing."""
    limit = request.app[GATEWAY].settings.limits.max_upload_bytes
    too_large = f"a file may have at most {limit} bytes"
    if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
        return _refuse(request, 413, FileError.FILE_TOO_LARGE, too_large)
    try:
        part = await _file_part(request)
        data = await _read_limited(part, limit)
    except _Refused as refused:
        return _refuse_body(request, refused)
    if not data:
        return _refuse(request, 400, FileError.INVALID_UPLOAD, "the file is empty")
    mime = sniff(data)
    if mime is None:
        return _refuse(
            request,
            415,
            FileError.UNSUPPORTED_FILE_TYPE,
            "accepted: PNG, JPEG, GIF, WebP, PDF, and UTF-8 text (plain, Markdown, CSV, "
            "JSON, XML, logs)",
        )
    try:
        stored = await request.app[FILE_STORE].put(
            request[CLAIMS].sub, clean_name(utf8_text(part.filename or ""), mime), mime, data
        )
    except StorageFull as exc:
        return _refuse(request, 507, FileError.STORAGE_FULL, exc.message)
    return web.json_response(stored.info(), status=201)


async def download(request: web.Request) -> web.StreamResponse:
    """``GET /files/{id}``: to its owner's token, or to a valid signed URL."""
    file_id = request.match_info["file_id"]
    store = request.app[FILE_STORE]
    query = request.query
    if "sig" in query or "exp" in query:
        signer = request.app[FILE_SIGNER]
        if not signer.verify(file_id, query.get("exp", ""), query.get("sig", "")):
            return _refuse(
                request, 403, FileError.INVALID_SIGNATURE, "this link is invalid or expired"
            )
        found = await store.fetch(file_id)
    else:
        found = await store.get(file_id, request[CLAIMS].sub)
    if found is None:
        return _refuse(request, 404, FileError.FILE_NOT_FOUND, "no such file (or it expired)")
    return _file_response(found)


def _file_response(found: StoredFile) -> web.Response:
    """Images inline; everything else as a download, and nothing in it may run."""
    disposition = "inline" if found.mime.startswith("image/") else "attachment"
    return web.Response(
        body=found.data,
        content_type=found.mime,
        headers={
            hdrs.CONTENT_DISPOSITION: f"{disposition}; filename*=UTF-8''{quote(found.name)}",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            hdrs.CACHE_CONTROL: "private, max-age=60",
        },
    )
