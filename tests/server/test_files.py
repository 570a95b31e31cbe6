"""``POST /files`` and ``GET /files/{id}`` against a real ``qa-ws serve`` process.

Uploads go over real sockets; the refusals (401, 403, 413, 415) must store nothing, and a
64 MiB body must not be read whole: the server's peak RSS (``VmHWM``) barely moves.
"""

from __future__ import annotations

import asyncio
import datetime
import json
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


async def raw_request(
    files: Files, head: str, body: bytes = b"", *, token: bool = True
) -> tuple[int, dict[str, str], bytes]:
    """One request over a raw socket, bytes exactly as given; the status, headers and body."""
    host, port = files.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    auth = f"{files.auth()['Authorization']}" if token else ""
    lines = [head, f"Host: {host}", "Connection: close", f"Content-Length: {len(body)}"]
    lines += [f"Authorization: {auth}"] if token else []
    writer.write("\r\n".join(lines).encode() + b"\r\n\r\n" + body)
    try:
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    top, _, content = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = top.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), headers, content


MULTIPART = "Content-Type: multipart/form-data; boundary=b"


def part(header: bytes, content: bytes = b"hello") -> bytes:
    return b"--b\r\n" + header + b"\r\n\r\n" + content + b"\r\n--b--\r\n"


async def test_a_filename_that_is_not_utf8_gets_replacement_characters(
    files: Files, http: aiohttp.ClientSession
) -> None:
    latin1 = part(b'Content-Disposition: form-data; name="file"; filename="caf\xe9.txt"')
    status, _, body = await raw_request(files, f"POST /files HTTP/1.1\r\n{MULTIPART}", latin1)
    assert status == 201
    info = json.loads(body)
    assert info["name"] == "caf\ufffd.txt"
    async with http.get(f"{files.base}/files/{info['file_id']}", headers=files.auth()) as got:
        assert got.status == 200
        assert await got.read() == b"hello"
        assert got.headers["Content-Disposition"] == "attachment; filename*=UTF-8''caf%EF%BF%BD.txt"
    assert "Traceback" not in files.server.output()


async def test_without_authentication_the_session_id_owns_an_upload(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    """``--no-auth``: each upload was a new anonymous user, so no chat could attach it."""
    server = spawn_server("--agent", "echo", "--no-auth", env=server_env(tmp_path))
    files = Files(server, tmp_path)
    async with http.ws_connect(server.url) as ws:
        hello = await ws.receive_json(timeout=10)
        form = aiohttp.FormData()
        form.add_field("file", b"hello", filename="a.txt", content_type="text/plain")
        url = f"{files.base}/files?session_id={hello['session_id']}"
        async with http.post(url, data=form) as response:
            assert response.status == 201
            file_id = (await response.json())["file_id"]
        chat = {"type": "chat_message", "id": "q1", "content": "read it", "attachments": [file_id]}
        await ws.send_json(chat)
        answer = await ws.receive_json(timeout=10)
        assert (answer["type"], answer["reply_to"]) == ("agent_response", "q1"), answer
        form = aiohttp.FormData()
        form.add_field("file", b"hello", filename="a.txt", content_type="text/plain")
        async with http.post(f"{files.base}/files", data=form) as response:
            assert response.status == 201  # another anonymous user's: not attachable here
            other = (await response.json())["file_id"]
        await ws.send_json({**chat, "id": "q2", "attachments": [other]})
        refused = await ws.receive_json(timeout=10)
        assert (refused["code"], refused["reply_to"]) == ("file_not_found", "q2")


async def test_a_body_that_ends_inside_the_file_part_stores_nothing(files: Files) -> None:
    """Its Content-Length honest, the body stops before the boundary after the file: what
    came is not the whole file, so nothing is kept (it was stored cut off)."""
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
    sized = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
    sized += b"Content-Length: 20\r\n"
    for cut in [head + b"\r\nhello, half a fi", sized + b"\r\nhello, half"]:
        status, _, answer = await raw_request(files, f"POST /files HTTP/1.1\r\n{MULTIPART}", cut)
        assert (status, json.loads(answer)) == (
            400,
            {"error": "invalid_upload", "detail": "the body ends inside the file part"},
        )
    whole = head + b"\r\nhello, a whole file\r\n--b--\r\n"  # the same, complete: kept
    status, _, answer = await raw_request(files, f"POST /files HTTP/1.1\r\n{MULTIPART}", whole)
    assert status == 201 and json.loads(answer)["size"] == 19
    assert "Traceback" not in files.server.output()


MALFORMED = [
    part(b'Content-Disposition: form-data; name="file"; filename="a\x1bb.txt"'),  # ESC
    part(b'Content-Disposition: form-data; name="file"; filename="a\x7fb.txt"'),  # DEL
    part(b'Content-Disposition: form-data; name="file"; filename="a\x00b.txt"'),  # NUL
    part(b'Content-Disposition: form-data; name="file"; filename="a\rb.txt"'),  # a bare CR
    part(b'Content-Disposition: form-data; name="file";\n filename="a.txt"'),  # a bare LF
    part(b'Content-Disposition: form-data; name="file"\r\ngarbage'),  # a line without a colon
    part(b'Content-Disposition: form-data; name="_charset_"', b"x" * 40),  # no charset
]


async def test_a_malformed_multipart_body_is_invalid_upload(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    files = start(spawn_server, tmp_path, WEBSOCKET_LIMITS__FILES_MEMORY_BYTES="1024")
    not_gzip = (
        f"{MULTIPART}\r\nContent-Encoding: gzip",
        part(b'Content-Disposition: form-data; name="file"; filename="a.txt"'),
    )
    for extra, body in [(MULTIPART, bad) for bad in MALFORMED] + [not_gzip]:
        status, headers, answer = await raw_request(files, f"POST /files HTTP/1.1\r\n{extra}", body)
        assert status == 400, body
        assert headers["content-type"].startswith("application/json")
        assert headers["connection"] == "close"
        assert json.loads(answer) == {
            "error": "invalid_upload",
            "detail": "the body is not valid multipart",
        }
    status, _ = await files.upload(http, b"x" * 1024)  # none of them took any room
    assert status == 201
    assert (await files.upload(http, b"y"))[0] == 507  # the cap is real: the store is full
    log = files.server.output()
    assert "Traceback" not in log
    assert "internal_error" not in log


async def test_a_malformed_signed_url_is_an_invalid_signature(files: Files) -> None:
    for query in ["exp=%C2%B2", "exp=%EF%BC%91", "exp=99999999999&sig=%C3%A9", "exp=&sig="]:
        sig = "" if "sig=" in query else "&sig=" + "0" * 64
        status, _, body = await raw_request(
            files, f"GET /files/f-{'0' * 32}?{query}{sig} HTTP/1.1", token=False
        )
        assert status == 403, query
        assert json.loads(body)["error"] == "invalid_signature"
    assert "Traceback" not in files.server.output()
