"""Files users attach to a chat (and files agents produce): stored, owned, expiring.

A ``FileStore`` keeps each file with its owner's ``sub``, its (sniffed) type and an expiry.
``get(file_id, owner)`` is what the chat path calls to resolve a ``chat_message``'s
``attachments``: it answers ``None`` for an unknown, expired or another user's id, which the
chat turns into ``file_not_found`` (the three are not told apart, so ids cannot be probed).

Two implementations: ``MemoryFileStore`` (one process; a total-bytes cap and a TTL) and
``RedisFileStore`` (one hash per file, expiring in Redis, so any instance behind the load
balancer can read what another took in). ``FileSigner`` makes and checks the short-lived URLs
under which agent-produced files are fetched without a token.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from qa_ws_cli.agents.events import Attachment
from qa_ws_cli.errors import QaWsError
from qa_ws_cli.protocol.events import FileInfo
from qa_ws_cli.server.redis_store import check_store_url
from qa_ws_cli.server.sniff import clean_name, sniff

FILE_PREFIX = "qa-ws:file"
log = logging.getLogger("qa_ws.server")
_EXP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: str.isdigit() also takes '²'
_SIG = re.compile(r"[0-9a-f]{64}")
_SURROGATE = re.compile("[\ud800-\udfff]")


def utf8_text(text: str) -> str:
    """``text`` as valid Unicode: what was undecodable bytes becomes U+FFFD.

    aiohttp decodes header bytes that are not UTF-8 with ``surrogateescape`` (a Latin-1
    ``caf\\xe9`` arrives as ``caf\\udce9``); a lone surrogate cannot be encoded again, as
    UTF-8, JSON, a Redis value or a ``Content-Disposition``, so none is ever kept.
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte
        return _SURROGATE.sub("\ufffd", text)


def new_file_id() -> str:
    """``f-`` and 32 hex digits: unguessable, and a valid protocol id."""
    return "f-" + secrets.token_hex(16)


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StorageFull(QaWsError):
    """The store cannot take the file now; answered as 507 ``storage_full``."""

    code = "storage_full"


@dataclass(frozen=True, slots=True)
class StoredFile:
    file_id: str
    owner: str
    name: str
    mime: str
    expires_at: float
    data: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.data)

    def attachment(self) -> Attachment:
        """What an agent receives in ``ChatContext.attachments``."""
        return Attachment(name=self.name, mime=self.mime, data=self.data)

    def info(self) -> dict[str, Any]:
        """The body of ``201`` to ``POST /files``."""
        return {
            "file_id": self.file_id,
            "name": self.name,
            "mime": self.mime,
            "size": self.size,
            "expires_at": rfc3339(self.expires_at),
        }


class FileStore:
    """The interface; ``ttl_s`` is how long a file lives after ``put``."""

    name = "files"

    def __init__(self, *, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.ttl_s = ttl_s
        self.clock = clock

    def _new(self, owner: str, name: str, mime: str, data: bytes) -> StoredFile:
        return StoredFile(new_file_id(), owner, name, mime, self.clock() + self.ttl_s, data)

    async def put(self, owner: str, name: str, mime: str, data: bytes) -> StoredFile:
        """Keep ``data`` for ``owner``; raises ``StorageFull`` when it cannot."""
        raise NotImplementedError

    async def fetch(self, file_id: str) -> StoredFile | None:
        """The file whoever owns it (for signed URLs); None when unknown or expired."""
        raise NotImplementedError

    async def get(self, file_id: str, owner: str) -> StoredFile | None:
        """The file when ``owner`` owns it and it has not expired, else None."""
        found = await self.fetch(file_id)
        if found is None or not hmac.compare_digest(found.owner.encode(), owner.encode()):
            return None
        return found

    async def start(self) -> None:
        """Open connections; called once when the server starts."""

    async def aclose(self) -> None:
        """Release connections; called once when the server stops."""


class MemoryFileStore(FileStore):
    """In this process: oldest first, so expiry purges from the front in O(expired)."""

    name = "memory"

    def __init__(
        self, *, ttl_s: float, max_bytes: int, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(ttl_s=ttl_s, clock=clock)
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self._files: OrderedDict[str, StoredFile] = OrderedDict()

    def _purge(self) -> None:
        now = self.clock()
        while self._files:
            first = next(iter(self._files.values()))
            if first.expires_at > now:
                break
            self._files.popitem(last=False)
            self.used_bytes -= first.size

    async def put(self, owner: str, name: str, mime: str, data: bytes) -> StoredFile:
        self._purge()
        if self.used_bytes + len(data) > self.max_bytes:
            raise StorageFull("the server's file store is full; retry later")
        stored = self._new(owner, name, mime, data)
        self._files[stored.file_id] = stored
        self.used_bytes += stored.size
        return stored

    async def fetch(self, file_id: str) -> StoredFile | None:
        self._purge()
        return self._files.get(file_id)


class RedisFileStore(FileStore):
    """One Redis hash per file, ``qa-ws:file:<id>``, expiring with the file."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float,
        timeout_s: float = 2.0,
        prefix: str = FILE_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(ttl_s=ttl_s, clock=clock)
        self.url = check_store_url(url)
        self.prefix = prefix
        self._redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s
        )

    def _key(self, file_id: str) -> str:
        return f"{self.prefix}:{file_id}"

    async def put(self, owner: str, name: str, mime: str, data: bytes) -> StoredFile:
        stored = self._new(owner, name, mime, data)
        mapping: dict[str, str | bytes] = {
            "owner": owner,
            "name": name,
            "mime": mime,
            "expires_at": repr(stored.expires_at),
            "data": data,
        }
        key = self._key(stored.file_id)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=mapping)  # type: ignore[arg-type]
                pipe.pexpireat(key, int(stored.expires_at * 1000))
                await pipe.execute()
        except RedisError as exc:
            log.warning("files: Redis refused a file: %s", type(exc).__name__)
            raise StorageFull("the server's file store is unavailable; retry later") from exc
        return stored

    async def fetch(self, file_id: str) -> StoredFile | None:
        try:
            found = await self._redis.hgetall(self._key(file_id))
        except RedisError as exc:
            log.warning("files: Redis read failed: %s", type(exc).__name__)
            return None
        if not found:
            return None
        raw = {_bytes(k): _bytes(v) for k, v in found.items()}
        try:
            expires_at = float(raw[b"expires_at"])
            stored = StoredFile(
                file_id=file_id,
                owner=raw[b"owner"].decode(),
                name=raw[b"name"].decode(),
                mime=raw[b"mime"].decode(),
                expires_at=expires_at,
                data=raw[b"data"],
            )
        except (KeyError, ValueError, UnicodeDecodeError):
            log.warning("files: a malformed entry in Redis was ignored")
            return None
        return stored if expires_at > self.clock() else None

    async def aclose(self) -> None:
        await self._redis.aclose()


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class FileSigner:
    """``/files/{id}?exp=&sig=`` URLs: an HMAC-SHA256 of the id and expiry, for a while.

    The key is derived from the server's secret (so every instance sharing the secret accepts
    every instance's URLs, and the token key itself never signs anything else); without a
    secret a random key is made, valid in this process only.
    """

    def __init__(
        self, secret: str | None, *, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        seed = secret.encode() if secret else secrets.token_bytes(32)
        self._key = hmac.new(seed, b"qa-ws file urls", hashlib.sha256).digest()
        self.ttl_s = ttl_s
        self.clock = clock

    def _sig(self, file_id: str, exp: int) -> str:
        return hmac.new(self._key, f"{file_id}:{exp}".encode(), hashlib.sha256).hexdigest()

    def sign(self, stored: StoredFile) -> tuple[str, float]:
        """(path and query, expiry): no later than the file itself expires."""
        exp = int(min(self.clock() + self.ttl_s, stored.expires_at))
        path = f"/files/{quote(stored.file_id)}?exp={exp}&sig={self._sig(stored.file_id, exp)}"
        return path, float(exp)

    def verify(self, file_id: str, exp: str, sig: str) -> bool:
        """A malformed ``exp`` or ``sig`` is refused like a wrong one, never an error."""
        if not _EXP.fullmatch(exp) or not _SIG.fullmatch(sig) or int(exp) < self.clock():
            return False
        expected = self._sig(utf8_text(file_id), int(exp))
        return hmac.compare_digest(expected.encode(), sig.encode())


async def store_produced(
    store: FileStore, signer: FileSigner, owner: str, produced: Attachment
) -> FileInfo:
    """Keep a file an agent made for ``owner`` and describe it for ``agent_response``.

    Its type is sniffed again (a backend's word is not trusted); anything outside the
    allowlist is kept as ``application/octet-stream``, which ``GET`` serves as a download.
    """
    mime = sniff(produced.data) or "application/octet-stream"
    name = clean_name(utf8_text(produced.name), mime)
    stored = await store.put(owner, name, mime, produced.data)
    url, expires_at = signer.sign(stored)
    return FileInfo(
        file_id=stored.file_id,
        name=stored.name,
        mime=stored.mime,
        size=stored.size,
        url=url,
        expires_at=rfc3339(expires_at),
    )
