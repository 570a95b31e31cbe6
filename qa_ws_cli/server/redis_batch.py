"""Auto-pipelining: the Redis commands of many chats go out as one pipeline per round trip.

With the Redis store every chat makes a few round trips (the rate limit, the claim, the
append). Awaited one by one, each costs the gateway a write, a read, a reply parse and a task
wake-up of its own; with 150 connections chatting, dozens of chats issue one in the same
event-loop iteration. ``AutoPipeline`` queues them and sends what has queued as one
non-transactional pipeline (``client.pipeline(transaction=False)``), one batch in flight at a
time: while a batch is on the wire the next one gathers (as Nagle's algorithm does), so under
load a round trip carries many commands, and with one chat it carries that chat's command at
once. Each caller's future gets its own reply, or its own error:

- An error reply (a script's ``error_reply``, a wrong type) fails that command only.
- ``NOSCRIPT`` (Redis restarted or flushed its scripts): the script is loaded and the
  commands that got it are sent again; they did not run, so this cannot run one twice.
- A connection error or timeout fails the whole batch, and the commands queued behind it
  (they would have met the same outage, and a hung Redis must cost one timeout, not one per
  batch); each caller then falls back as it would for a single command.

Batches go out in the order their commands were issued, and one at a time, so two commands
issued in order (the appends of one session) reach Redis in that order. Each command is one
script or one command: atomic on its own, never a transaction with its neighbours.

A batch is written and read with redis-py's connection API (``send_packed_command``,
``read_response``), not through ``Pipeline``, on one connection the pipeline holds (made by the
client's pool, ``make_connection``, but not taken from it and given back each batch: the pool's
lock, checks and bookkeeping cost more than a small batch's replies), and each command is
packed by hiredis's C ``pack_command`` when it is issued: redis-py's asyncio packer is pure
Python, about 16 µs for an append's 21 arguments against 2 µs (docs/performance.md). Packing at
issue time also means an argument Redis cannot carry fails its own caller, never the batch.
Replies come back raw (no redis-py response callbacks): bytes, integers, lists.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

Arg = str | int | float | bytes

IDLE_CHECK_S = 1

# errors of the connection rather than of one command: they fail the batch and its followers
_OUTAGE = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
# what a call to Redis raises when Redis is away, hung, or refuses the command: every caller
# of the store falls back on these (to this instance's memory, or failing open)
REDIS_FAILURES = (RedisError, OSError, TimeoutError)


@dataclass(slots=True)
class _Call:
    packed: bytes  # the command in Redis's protocol
    future: asyncio.Future[Any]
    script: AsyncScript | None = None
    args: tuple[Arg, ...] = ()  # a script's keys count, keys and args: packed again on NOSCRIPT


class AutoPipeline:
    """Queues commands issued close together and sends them as one pipeline."""

    def __init__(
        self, client: aioredis.Redis, max_batch: int = 512, timeout_s: float | None = None
    ) -> None:
        self.client = client
        self.max_batch = max_batch
        self.timeout_s = timeout_s  # for the whole batch (see ``batch_client``)
        self._queue: list[_Call] = []
        self._task: asyncio.Task[None] | None = None
        self._conn: AbstractConnection | None = None  # one batch at a time: one connection
        self.batches = 0  # pipelines sent (for the benchmarks and the tests)
        self.commands = 0  # commands they carried

    def script(
        self, script: AsyncScript, keys: Sequence[Arg], args: Sequence[Arg]
    ) -> asyncio.Future[Any]:
        """Run a registered script (``client.register_script``) in the next batch."""
        rest = (len(keys), *keys, *args)
        return self._add(("EVALSHA", script.sha, *rest), script, rest)

    def execute(self, *args: Arg) -> asyncio.Future[Any]:
        """Run one command (``"INCR", key``) in the next batch; its raw reply."""
        return self._add(args)

    def _add(
        self,
        command: tuple[Arg, ...],
        script: AsyncScript | None = None,
        rest: tuple[Arg, ...] = (),
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        try:
            packed = pack(command)
        except (TypeError, UnicodeEncodeError) as exc:  # e.g. a lone surrogate: this caller's
            future.set_exception(exc)
            return future
        self._queue.append(_Call(packed, future, script, rest))
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return future

    async def _drain(self) -> None:
        """Send what has queued, batch after batch, until the queue stays empty."""
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    await self._send(batch)
                except _OUTAGE as exc:
                    followers, self._queue = self._queue, []
                    _fail([*batch, *followers], exc)
                except BaseException as exc:  # cancelled (closing) or a bug: nobody may hang
                    followers, self._queue = self._queue, []
                    _fail([*batch, *followers], exc)
                    raise
        finally:
            self._task = None

    async def _send(self, batch: list[_Call]) -> None:
        replies = await self._pipeline(batch)
        missing: list[_Call] = []
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError) and call.script is not None:
                missing.append(call)
            else:
                _resolve(call, reply)
        if missing:  # load each script once, then send those again: they did not run
            async with asyncio.timeout(self.timeout_s):  # bounded as a batch is: Redis may hang
                for script in {id(c.script): c.script for c in missing}.values():
                    assert script is not None
                    script.sha = await self.client.script_load(script.script)
            again = [
                _Call(pack(("EVALSHA", c.script.sha, *c.args)), c.future, c.script)
                for c in missing
                if c.script
            ]
            for call, reply in zip(again, await self._pipeline(again), strict=True):
                _resolve(call, reply)

    async def _pipeline(self, batch: list[_Call]) -> list[Any]:
        """One write, then one reply per command, on the batches' own connection."""
        self.batches += 1
        self.commands += len(batch)
        conn = self._conn
        if conn is None:  # made as the pool would make it (URL, TLS, password), held here
            conn = self._conn = self.client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        async with asyncio.timeout(self.timeout_s):  # connecting included: a hung Redis accepts
            try:
                # (re)connected when it is not, and PINGed first when idle past
                # ``health_check_interval`` (made again if Redis restarted meanwhile); a socket
                # that dies between two busy batches fails the next one, as an outage does
                await conn.send_packed_command(b"".join(c.packed for c in batch), True)
                replies: list[Any] = []
                for _ in batch:
                    try:
                        replies.append(await conn.read_response())
                    except ResponseError as exc:  # this command's error reply; the next follows
                        replies.append(exc)
            except BaseException:
                await conn.disconnect(nowait=True)  # replies may be on their way: never reuse it
                raise
        return replies

    async def aclose(self) -> None:
        """Stop sending; whatever is still queued fails with ``ConnectionError``."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        queued, self._queue = self._queue, []
        _fail(queued, RedisConnectionError("the Redis store is closed"))
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()


def pack(command: tuple[Arg, ...]) -> bytes:
    """One command in Redis's protocol, by hiredis (its stub types the tuple as of one item)."""
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


def batch_client(url: str, timeout_s: float, **options: Any) -> aioredis.Redis:
    """A client for ``AutoPipeline(client, timeout_s=timeout_s)``: no per-reply read timeout.

    redis-py arms a timeout (an ``asyncio.timeout`` context) for every reply it reads when
    ``socket_timeout`` is set, a few microseconds each; a batch reads dozens. Here the batch has
    one deadline for all its replies, so the client's own is off (the connect timeout stays).
    A connection idle for ``IDLE_CHECK_S`` is PINGed before its next batch: after a Redis
    restart the first batch would otherwise meet the old, closed socket (under load batches
    follow each other closely, so no PING is sent).
    """
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=timeout_s,
        socket_timeout=None,
        health_check_interval=IDLE_CHECK_S,
        retry=Retry(NoBackoff(), 1),  # only ever the PING: a batch is never sent twice
        **options,
    )


def _resolve(call: _Call, reply: Any) -> None:
    if call.future.done():  # its caller gave up (cancelled): the reply has nowhere to go
        return
    if isinstance(reply, Exception):
        call.future.set_exception(reply)
    else:
        call.future.set_result(reply)


def _fail(calls: list[_Call], exc: BaseException) -> None:
    for call in calls:
        if call.future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            call.future.cancel()
        else:
            call.future.set_exception(exc)
