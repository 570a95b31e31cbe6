"""``POST /files`` and ``GET /files/{id}`` against a real ``qa-ws serve`` process.

Uploads go over real sockets; the refusals (401, 403, 413, 415) must store nothing, and a
64 MiB body must not be read whole: the server's peak RSS (``VmHWM``) barely moves.
"""

from __future__ import annotations

import asyncio
import datetime
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qa_ws_cli.auth.tokens import issue_token
from tests.conftest import ServerProcess, make_settings, server_env

PNG = (
    b"\x89PNG\r\n\x1a\n"
    + struct.pack(">I", 13)
    + b"IHDR"
    + struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    + struct.pack(">I", zlib.crc32(b"IHDR" + struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)))
)
MIB = 1024 * 1024


class Files:
    """One server process and the tokens to talk to it."""

    def __init__(self, server: ServerProcess, tmp_path: Path) -> None:
        self.server = server
        self.base = server.url.replace("ws://", "http://").removesuffix("/ws")
        self.settings = make_settings(tmp_path)

    def auth(self, sub: str = "alice", scope: str = "chat") -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(self.settings, sub, scope=scope)[0]}"}

    async def upload(
        self,
        http: aiohttp.ClientSession,
        data: bytes,
        *,
        name: str = "shot.png",
        content_type: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        form = aiohttp.FormData()
        form.add_field("note", "parts before the file are skipped")
        form.add_field("file", data, filename=name, content_type=content_type)
        async with http.post(
            f"{self.base}/files", data=form, headers=self.auth() if headers is None else headers
        ) as response:
            return response.status, await response.json()


def start(spawn_server: Callable[..., ServerProcess], tmp_path: Path, **env: str) -> Files:
    server = spawn_server("--agent", "echo", env=server_env(tmp_path, **env))
    return Files(server, tmp_path)


@pytest.fixture
def files(spawn_server: Callable[..., ServerProcess], tmp_path: Path) -> Files:
    return start(spawn_server, tmp_path, WEBSOCKET_LIMITS__MAX_UPLOAD_BYTES=str(MIB))


async def test_upload_then_only_the_owner_downloads(
    files: Files, http: aiohttp.ClientSession
) -> None:
    status, body = await files.upload(http, PNG, name="../../etc/shot.png")
    assert status == 201
    assert body["mime"] == "image/png"
    assert body["size"] == len(PNG)
    assert body["name"] == "shot.png"  # no directory
    assert body["file_id"].startswith("f-")
    expires = datetime.datetime.fromisoformat(body["expires_at"])
    assert expires > datetime.datetime.now(datetime.UTC)
    url = f"{files.base}/files/{body['file_id']}"
    async with http.get(url, headers=files.auth()) as response:
        assert response.status == 200
        assert response.content_type == "image/png"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert await response.read() == PNG
    async with http.get(url, headers=files.auth("mallory")) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "file_not_found"
    async with http.get(url) as response:
        assert response.status == 401
    async with http.get(f"{files.base}/files/f-{'0' * 32}", headers=files.auth()) as response:
        assert response.status == 404


TYPES = [
    (b'{"suite": "login", "passed": 12}', "application/json"),
    (b'<?xml version="1.0"?><testsuite tests="3"></testsuite>', "application/xml"),
    (b'<testsuite name="login" tests="0"/>', "application/xml"),  # a report of no cases
    (b"case,result\nlogin,pass\nlogout,fail\n", "text/csv"),
    (b"# Test plan\n\n- log in\n- log out\n", "text/markdown"),
    (b"2025-01-02 10:00:01 INFO start\n2025-01-02 10:00:02 ERROR boom\n", "text/x-log"),
    ("Plain notes, ünïcode.\n".encode(), "text/plain"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf"),
    (b"GIF89a\x01\x00\x01\x00", "image/gif"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
    (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "image/webp"),
]
REFUSED = [
    b"MZ\x90\x00\x03\x00\x00\x00",  # a Windows executable
    b"text with a NUL\x00 byte",
    b"\xff\xfe not utf-8 \xc3\x28",
    b"RIFF\x24\x00\x00\x00WAVEfmt ",  # RIFF, but audio
]


async def test_types_are_sniffed_by_content_never_by_name(
    files: Files, http: aiohttp.ClientSession
) -> None:
    for data, mime in TYPES:
        status, body = await files.upload(http, data, name="report.exe", content_type="image/png")
        assert (status, body["mime"]) == (201, mime), data
    for data in REFUSED:
        status, body = await files.upload(http, data, name="photo.png", content_type="image/png")
        assert (status, body["error"]) == (415, "unsupported_file_type"), data


async def test_refusals_before_the_body(files: Files, http: aiohttp.ClientSession) -> None:
    status, body = await files.upload(http, PNG, headers={})
    assert (status, body["error"]) == (401, "missing_token")
    status, body = await files.upload(http, PNG, headers=files.auth(scope="admin"))
    assert (status, body["error"]) == (403, "insufficient_scope")
    status, body = await files.upload(http, PNG, headers={**files.auth(), "Origin": "http://evil"})
    assert (status, body["error"]) == (403, "origin_not_allowed")
    async with http.post(f"{files.base}/files", data=b"{}", headers=files.auth()) as response:
        assert response.status == 400
        assert (await response.json())["error"] == "invalid_upload"
    status, body = await files.upload(http, b"")
    assert (status, body["error"]) == (400, "invalid_upload")


async def test_too_large_declared_or_streamed(files: Files, http: aiohttp.ClientSession) -> None:
    big = PNG + b"\x00" * MIB
    status, body = await files.upload(http, big)  # with Content-Length: refused at once
    assert (status, body["error"]) == (413, "file_too_large")

    async def chunked() -> Any:  # no Content-Length: refused once the count passes the limit
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(32):
            yield PNG + b"\x00" * (64 * 1024)
        yield b"\r\n--b--\r\n"

    headers = {**files.auth(), "Content-Type": "multipart/form-data; boundary=b"}
    async with http.post(f"{files.base}/files", data=chunked(), headers=headers) as response:
        assert response.status == 413
    status, _ = await files.upload(http, PNG)  # the server is fine afterwards
    assert status == 201


async def test_a_file_expires(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    files = start(spawn_server, tmp_path, WEBSOCKET_LIMITS__FILE_TTL_S="1")
    status, body = await files.upload(http, PNG)
    assert status == 201
    url = f"{files.base}/files/{body['file_id']}"
    expires = datetime.datetime.fromisoformat(body["expires_at"]).timestamp()
    await asyncio.sleep(max(0.0, expires + 1.1 - time.time()))
    async with http.get(url, headers=files.auth()) as response:
        assert response.status == 404
        assert (await response.json())["error"] == "file_not_found"


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


async def raw_upload(files: Files, total: int, *, declared: bool) -> int:
    """Send a ``total``-byte multipart body over a raw socket; the status the server answered.

    The sender stops as soon as an answer arrives (the server refuses long before the end).
    """
    host, port = files.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n\r\n'
    length = f"Content-Length: {total}" if declared else "Transfer-Encoding: chunked"
    token = files.auth()["Authorization"]
    writer.write(
        f"POST /files HTTP/1.1\r\nHost: {host}\r\nAuthorization: {token}\r\n"
        f"Content-Type: multipart/form-data; boundary=b\r\n{length}\r\n\r\n".encode()
    )
    block = PNG + b"\x00" * (MIB - len(PNG))

    async def send() -> None:
        body = [head] + [block] * (total // MIB)
        for piece in body:
            writer.write(piece if declared else b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()

    sender = asyncio.create_task(send())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 60)
    finally:
        sender.cancel()
        writer.close()
    return int(status_line.split()[1])


async def test_a_64_mib_upload_is_not_held_in_memory(
    files: Files, http: aiohttp.ClientSession
) -> None:
    assert (await files.upload(http, PNG))[0] == 201  # warm up the upload path first
    before = peak_rss_kib(files.server.proc.pid)
    assert await raw_upload(files, 64 * MIB, declared=True) == 413
    assert await raw_upload(files, 64 * MIB, declared=False) == 413
    grown = peak_rss_kib(files.server.proc.pid) - before
    print(f"peak RSS growth for two 64 MiB uploads: {grown} KiB")
    assert grown < 6 * 1024, f"peak RSS grew by {grown} KiB for a 64 MiB upload"
    assert (await files.upload(http, PNG))[0] == 201
