"""The file stores (memory, and Redis against a real ``redis-server``) and signed URLs.

Signed URLs and the memory cap are checked through a real gateway on a real socket: a file an
agent produced is stored with ``store_produced`` (what the chat path calls) and fetched with
no token.
"""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
import redis

from qa_ws_cli.agents.events import Attachment
from qa_ws_cli.server.files import (
    FileSigner,
    MemoryFileStore,
    RedisFileStore,
    StorageFull,
    store_produced,
    utf8_text,
)
from qa_ws_cli.server.files_http import FILE_SIGNER, FILE_STORE
from qa_ws_cli.server.sniff import clean_name
from tests.conftest import make_settings, run_gateway
from tests.redis_server import RedisServer
from tests.server.test_files import PNG


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_store_owner_ttl_and_total_cap() -> None:
    clock = Clock()
    store = MemoryFileStore(ttl_s=60, max_bytes=2 * len(PNG), clock=clock)
    first = await store.put("alice", "a.png", "image/png", PNG)
    assert await store.get(first.file_id, "alice") == first
    assert await store.get(first.file_id, "bob") is None
    assert first.attachment() == Attachment("a.png", "image/png", PNG)
    await store.put("alice", "b.png", "image/png", PNG)
    with pytest.raises(StorageFull):
        await store.put("alice", "c.png", "image/png", PNG)
    clock.now += 61  # both expire: their room is free again
    assert await store.get(first.file_id, "alice") is None
    assert (await store.put("alice", "c.png", "image/png", PNG)).size == len(PNG)
    assert store.used_bytes == len(PNG)


def test_signed_urls_expire_and_cannot_be_forged() -> None:
    clock = Clock()
    signer = FileSigner("s" * 40, ttl_s=300, clock=clock)
    store = MemoryFileStore(ttl_s=100, max_bytes=1 << 20, clock=clock)
    stored = store._new("alice", "a.png", "image/png", PNG)
    url, expires_at = signer.sign(stored)
    assert expires_at == stored.expires_at  # never past the file's own expiry
    exp, sig = url.split("?exp=")[1].split("&sig=")
    assert signer.verify(stored.file_id, exp, sig)
    assert not signer.verify("f-" + "0" * 32, exp, sig)
    assert not signer.verify(stored.file_id, str(int(exp) + 1), sig)
    assert not signer.verify(stored.file_id, "1e9", sig)
    for bad_exp in ["\u00b2", "\uff11" * 10, "", "1" * 13]:  # str.isdigit() takes both
        assert not signer.verify(stored.file_id, bad_exp, sig)
    assert not signer.verify(stored.file_id, exp, "\u00e9" * 64)  # non-ASCII: no TypeError
    assert not signer.verify(stored.file_id, exp, sig[:-1])
    assert FileSigner("s" * 40, ttl_s=300, clock=clock).verify(stored.file_id, exp, sig)
    assert not FileSigner("t" * 40, ttl_s=300, clock=clock).verify(stored.file_id, exp, sig)
    clock.now = float(exp) + 1
    assert not signer.verify(stored.file_id, exp, sig)


def test_undecodable_names_become_replacement_characters() -> None:
    assert utf8_text("caf\udce9.txt") == "caf\ufffd.txt"  # a Latin-1 byte, escaped by aiohttp
    assert utf8_text("\ud800x.txt") == "\ufffdx.txt"  # a surrogate that is no escaped byte
    assert utf8_text("caf\u00e9 \U0001f600.txt") == "caf\u00e9 \U0001f600.txt"


def test_names_lose_directories_and_control_characters() -> None:
    assert clean_name("C:\\Users\\me\\shot.png", "image/png") == "shot.png"
    assert clean_name("a\x1b[31m\x00b.txt", "text/plain") == "a[31mb.txt"
    # line breaks, a C1 CSI, NEL and bidi controls (U+2066, U+061C) too: a name is one line
    assert clean_name("a%0D%0Ab\x9b\x85\u2066\u061c\u2028.txt", "text/plain") == "ab.txt"
    assert clean_name("%22quoted%22.md", "text/markdown") == '"quoted".md'
    assert clean_name("", "text/x-log") == "file.log"
    long = clean_name("x" * 500 + ".csv", "text/csv")
    assert len(long) == 120
    assert long.endswith(".csv")


async def test_produced_files_are_fetched_with_their_signed_url_only(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    async with run_gateway(settings) as gw, aiohttp.ClientSession() as http:
        store, signer = gw.app[FILE_STORE], gw.app[FILE_SIGNER]
        image = await store_produced(store, signer, "alice", Attachment("c.png", "text/html", PNG))
        assert (image.mime, image.name, image.size) == ("image/png", "c.png", len(PNG))
        async with http.get(gw.http + image.url) as response:
            assert response.status == 200
            assert response.headers["Content-Disposition"].startswith("inline")
            assert await response.read() == PNG
        async with http.head(gw.http + image.url) as response:  # the signature suffices too
            assert response.status == 200 and response.content_length == len(PNG)
        blob = await store_produced(store, signer, "alice", Attachment("x", "image/png", b"\x00"))
        assert blob.mime == "application/octet-stream"  # the backend's type is not trusted
        async with http.get(gw.http + blob.url) as response:
            assert response.headers["Content-Disposition"].startswith("attachment")
            assert response.headers["Content-Security-Policy"] == "default-src 'none'; sandbox"
        forged = image.url.replace("sig=", "sig=0")
        for url in (forged, f"/files/{image.file_id}?exp=1", f"/files/{blob.file_id}?sig=x"):
            async with http.get(gw.http + url) as response:
                assert response.status == 403
                assert (await response.json())["error"] == "invalid_signature"


async def test_redis_store_is_shared_and_expires_in_redis(redis_server: RedisServer) -> None:
    one = RedisFileStore(redis_server.url, ttl_s=30)
    other = RedisFileStore(redis_server.url, ttl_s=30)
    try:
        stored = await one.put("alice", "plan.md", "text/markdown", b"# plan\n")
        seen = await other.get(stored.file_id, "alice")  # another instance reads it
        assert seen is not None
        assert (seen.name, seen.mime, seen.data) == ("plan.md", "text/markdown", b"# plan\n")
        assert await other.get(stored.file_id, "bob") is None
        ttl_ms = redis.Redis.from_url(redis_server.url).pttl(f"qa-ws:file:{stored.file_id}")
        assert 0 < int(ttl_ms) <= 30_000  # type: ignore[arg-type]
        redis_server.stop()  # Redis away: a miss and a refusal, never a crash
        assert await other.get(stored.file_id, "alice") is None
        with pytest.raises(StorageFull):
            await one.put("alice", "b.md", "text/markdown", b"x")
    finally:
        await one.aclose()
        await other.aclose()
