"""The store for several instances behind one load balancer: Redis holds what they share.

- Sessions are written through as they change (``redis_sessions.py``): any instance resumes any
  session, with no sticky routing and no drain needed.
- Rate-limit counters live in Redis, a hash per user counted by one Lua script (``limits.py``).
- Per-user connection slots are a sorted set per user, each slot a lease its instance renews,
  so the cap counts every instance and a crashed instance's slots come back by themselves
  (``redis_slots.py``).
- Instances talk over one pub/sub channel: broadcasts (each instance answers how many of its
  connections received it, so ``delivered_to`` is the cluster's), frames published into a
  session whose connection is on another instance, and relayed cancels; and the operator's
  requests (notify, connections, disconnect) with the per-user inboxes (``redis_ops.py``).

Redis being away never takes the gateway down. Every call fails fast (short timeouts, one
retry); the first failure logs one warning and for ``RETRY_S`` every call goes straight to
this instance's memory instead (``MemoryStore``): sessions live on here, claims are local,
the rate limiter fails open, broadcasts reach local connections. When a call succeeds again,
one line says so and writes go through again. What happened meanwhile stays on this instance:
docs/protocol.md ("Redis outages") says exactly what that means for clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from qa_ws_cli.config import RateLimitSettings, SessionSettings, store_scheme_problem
from qa_ws_cli.errors import ConfigError
from qa_ws_cli.server.limits import Limiter, RateLimiter
from qa_ws_cli.server.redis_batch import REDIS_FAILURES, AutoPipeline, batch_client
from qa_ws_cli.server.redis_ops import RedisOperatorOps
from qa_ws_cli.server.redis_revocations import read_revocations
from qa_ws_cli.server.redis_sessions import (
    RedisSessionStore,
    append_result,
    claim_result,
)
from qa_ws_cli.server.redis_slots import RESERVE, RedisConnectionSlots
from qa_ws_cli.server.redis_writeback import write_back
from qa_ws_cli.server.session_outputs import ClaimResult, Publish
from qa_ws_cli.server.session_store import EndedClaims, ResumeRecord
from qa_ws_cli.server.store import ClusterPeer, MemoryStore, Store

CHANNEL = "qa-ws:cluster"
KEY_PREFIX = "qa-ws:limits"
RETRY_S = 1.0  # after a failure, calls skip Redis this long
ACK_WAIT_S = 1.0  # how long a broadcast waits for the other instances' counts
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
HEALTH_CHECK_S = 5.0  # the subscriber pings this often; silence past twice that: reconnect


log = logging.getLogger("qa_ws.server")
T = TypeVar("T")


def check_store_url(url: str) -> str:
    """The URL if its scheme is one Redis speaks, else a ``ConfigError`` naming the setting."""
    problem = store_scheme_problem(url)
    if problem:
        raise ConfigError(f"websocket.store.url: {problem}", path="websocket.store.url")
    return url


class RedisStore(RedisOperatorOps, RedisConnectionSlots, RedisSessionStore, Store):
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        channel: str = CHANNEL,
        timeout_s: float = 1.0,
        health_check_s: float = HEALTH_CHECK_S,
        key_prefix: str = KEY_PREFIX,
    ) -> None:
        self.url = check_store_url(url)
        self.channel = channel
        self.timeout_s = timeout_s
        self.health_check_s = health_check_s
        self.instance = uuid.uuid4().hex
        # Short timeouts and one retry: a command on the chat path must fail fast when
        # Redis is away (redis-py's default retries for seconds).
        fast: dict[str, Any] = {
            "socket_connect_timeout": timeout_s,
            "socket_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 1),
        }
        super().__init__(aioredis.Redis.from_url(url, **fast))
        self._redis = self.client
        self.key_prefix = key_prefix
        # the chat path's commands (limits, claims, appends), many chats a round trip
        self._batch_client = batch_client(url, timeout_s)
        self.batch = AutoPipeline(self._batch_client, timeout_s=timeout_s)
        self._reserve = self._redis.register_script(RESERVE)
        # Its own client and connection: the subscription holds one for good.
        self._sub = aioredis.Redis.from_url(url, **fast)
        self._peers: list[ClusterPeer] = []
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self.local = MemoryStore()  # what serves while Redis is away
        self._down_until = 0.0
        self._down = False
        self._writing_back: asyncio.Task[None] | None = None

    def configure(self, settings: SessionSettings) -> None:
        super().configure(settings)
        self.local.configure(settings)

    @property
    def subscribed(self) -> bool:
        """True while the subscription to the other instances is live."""
        return self._subscribed.is_set()

    @property
    def available(self) -> bool:
        """False from a failed call until a call succeeds again."""
        return not self._down

    def rate_limiter(self, settings: RateLimitSettings) -> Limiter:
        if self.limiter is None:
            self.limiter = RateLimiter(settings, self._redis, self.batch, self.key_prefix)
        return self.limiter

    def attach_peer(self, peer: ClusterPeer) -> None:
        self._peers.append(peer)
        self.local.attach_peer(peer)

    async def start(self) -> None:
        """Start the subscriber; wait briefly for it so early broadcasts are not missed."""
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), self.timeout_s)

    # -- every call: Redis, or this instance's memory while Redis is away --------------------------

    async def _guarded(
        self, call: Callable[[], Awaitable[T]], fallback: Callable[[], Awaitable[T]]
    ) -> T:
        if self._down and time.monotonic() < self._down_until:
            return await fallback()
        try:
            result = await call()
        except REDIS_FAILURES as exc:
            self._failed(exc)
            return await fallback()
        if self._down:
            self._restored()
        return result

    def _failed(self, exc: BaseException) -> None:
        self._down_until = time.monotonic() + RETRY_S
        if not self._down:
            self._down = True
            log.warning(
                "Redis unavailable (%s): serving from this instance's memory until it is back",
                type(exc).__name__,
            )

    def _restored(self) -> None:
        self._down = False
        self._down_until = 0.0
        log.info("Redis available again: writing through to it")
        if self.local.records and (self._writing_back is None or self._writing_back.done()):
            self._writing_back = asyncio.get_running_loop().create_task(self._write_back())

    async def _write_back(self) -> None:
        written = await write_back(self, self.local)
        log.info("wrote back %d session(s) kept in memory during the outage", written)

    async def create(self, session_id: str, user: str) -> None:
        await self._guarded(
            lambda: RedisSessionStore.create(self, session_id, user),
            lambda: self.local.create(session_id, user),
        )

    async def resume(self, session_id: str, last_seq: int) -> ResumeRecord | None:
        return await self._guarded(
            lambda: RedisSessionStore.resume(self, session_id, last_seq),
            lambda: self.local.resume(session_id, last_seq),
        )

    # The chat path's two calls await the batch's reply here, not through ``_guarded``: while
    # Redis is up (nearly always) that is two coroutines fewer to resume at each reply.

    async def claim(
        self, session_id: str, chat_id: str, instance: str, rate_user: str | None = None
    ) -> ClaimResult:
        if not self._down:
            try:
                reply = await self.send_claim(session_id, chat_id, instance, rate_user)
            except REDIS_FAILURES as exc:
                self._failed(exc)  # away, the limit fails open (as ``RateLimiter`` does)
                return await self.local.claim(session_id, chat_id, instance)
            return claim_result(reply)
        return await self._guarded(
            lambda: RedisSessionStore.claim(self, session_id, chat_id, instance, rate_user),
            lambda: self.local.claim(session_id, chat_id, instance),
        )

    async def append(
        self, session_id: str, user: str, event: Publish, min_seq: int = 0
    ) -> tuple[int, str] | None:
        if not self._down:
            try:
                reply = await self.send_append(session_id, user, event, min_seq)
            except REDIS_FAILURES as exc:
                self._failed(exc)
                return await self.local.append(session_id, user, event, min_seq)
            return append_result(reply)
        return await self._guarded(
            lambda: RedisSessionStore.append(self, session_id, user, event, min_seq),
            lambda: self.local.append(session_id, user, event, min_seq),
        )

    async def frames_after(self, session_id: str, seq: int) -> list[tuple[int, str]]:
        return await self._guarded(
            lambda: RedisSessionStore.frames_after(self, session_id, seq),
            lambda: self.local.frames_after(session_id, seq),
        )

    async def renew(self, claims: Iterable[tuple[str, str]], instance: str) -> None:
        held = list(claims)
        await self._guarded(
            lambda: RedisSessionStore.renew(self, held, instance),
            lambda: self.local.renew(held, instance),
        )

    async def ended(self, session_id: str, chat_ids: Iterable[str]) -> EndedClaims:
        ids = list(chat_ids)
        return await self._guarded(
            lambda: RedisSessionStore.ended(self, session_id, ids),
            lambda: self.local.ended(session_id, ids),
        )

    async def touch(self, session_ids: Iterable[str]) -> None:
        ids = list(session_ids)
        await self._guarded(
            lambda: RedisSessionStore.touch(self, ids), lambda: self.local.touch(ids)
        )

    def expired_sessions(self) -> list[str]:
        return self.local.expired_sessions()

    def prune(self) -> int:
        return self.local.prune()  # Redis expires its keys itself

    # -- revocations -----------------------------------------------------------------------------

    async def revocations(self) -> tuple[dict[str, float], dict[str, float]] | None:
        """Both revocation hashes (``redis_revocations.py``); None while Redis is away."""
        if self._down:
            return None
        try:
            return await read_revocations(self._redis)
        except REDIS_FAILURES:
            return None

    # -- instances talking to each other ---------------------------------------------------------

    async def _send(self, kind: str, **fields: Any) -> int:
        """Publish a message to the other instances; returns how many instances heard it."""
        envelope = json.dumps({"v": 2, "k": kind, "o": self.instance, **fields})
        try:
            return int(await self._redis.publish(self.channel, envelope))
        except REDIS_FAILURES as exc:
            log.warning("not published to the other instances (%s)", type(exc).__name__)
            return 0

    async def broadcast(self, message: str) -> int:
        """Deliver here, publish, and add the counts the other instances send back."""
        delivered = 0
        for peer in self._peers:
            delivered += await peer.deliver_broadcast(message)
        ack = f"qa-ws:ack:{uuid.uuid4().hex}"
        heard = await self._send("broadcast", m=message, ack=ack)
        others = heard - 1 if self.subscribed else heard  # our own subscriber hears it too
        return delivered + await self._acks(ack, others)

    async def _acks(self, ack: str, expected: int) -> int:
        deadline = time.monotonic() + ACK_WAIT_S
        counts: list[bytes | str] = []
        with contextlib.suppress(*REDIS_FAILURES):
            while expected > 0:
                counts = await self._redis.lrange(ack, 0, -1)
                if len(counts) >= expected or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            await self._redis.delete(ack)
        return sum(int(c) for c in counts)

    async def publish_frame(
        self, session_id: str, seq: int, frame: str, reply_to: str | None
    ) -> None:
        if not self._down:
            await self._send("frame", s=session_id, q=seq, r=reply_to, f=frame)

    async def relay_cancel(self, session_id: str, target: str, cancel_id: str) -> None:
        await self._send("cancel", s=session_id, t=target, i=cancel_id)

    async def announce_attach(self, session_id: str, conn_id: str) -> None:
        if not self._down:
            await self._send("attach", s=session_id, c=conn_id)

    async def _on_message(self, data: bytes | str) -> None:
        try:
            msg = json.loads(data)
            kind, origin = msg["k"], msg["o"]
        except (ValueError, TypeError, KeyError):
            log.warning("ignored a malformed message on %s", self.channel)
            return
        if origin == self.instance:
            return
        try:
            await self._dispatch(kind, msg)
        except (KeyError, TypeError, ValueError):
            log.warning("ignored a malformed %r message on %s", str(kind)[:20], self.channel)
        except Exception:  # a delivery bug must not end the subscription
            log.exception("delivering a message from Redis failed")

    async def _dispatch(self, kind: str, msg: dict[str, Any]) -> None:
        if kind == "broadcast":
            delivered = 0
            for peer in self._peers:
                delivered += await peer.deliver_broadcast(str(msg["m"]))
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.rpush(str(msg["ack"]), delivered)
                pipe.expire(str(msg["ack"]), 10)
                await pipe.execute()
        elif kind == "frame":
            reply_to = msg["r"] if isinstance(msg["r"], str) else None
            for peer in self._peers:
                peer.deliver_frame(str(msg["s"]), int(msg["q"]), str(msg["f"]), reply_to)
        elif kind == "cancel":
            for peer in self._peers:
                peer.deliver_cancel(str(msg["s"]), str(msg["t"]), str(msg["i"]))
        elif kind == "revoke":
            for peer in self._peers:
                peer.deliver_revocation()
        elif kind == "attach":
            for peer in self._peers:
                peer.deliver_attach(str(msg["s"]), str(msg["c"]))
        else:
            await self._dispatch_operator(kind, msg)  # notify, connections, disconnect

    # -- health and lifetime -------------------------------------------------------------------

    async def ping(self) -> bool:
        """Redis answers (``/readyz`` asks); an answer ends an outage at once."""
        try:
            ok = bool(await asyncio.wait_for(self._redis.ping(), self.timeout_s))
        except Exception:
            return False
        if ok and self._down:
            self._restored()
        return ok

    async def aclose(self) -> None:
        if self._writing_back is not None:
            self._writing_back.cancel()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self.batch.aclose()
        for client in (self._sub, self._batch_client, self._redis):
            with contextlib.suppress(Exception):
                await client.aclose()

    async def _listen(self) -> None:
        """Subscribe, deliver, and on any failure reconnect with backoff, forever."""
        delay = BACKOFF_MIN_S
        down = False
        while True:
            pubsub = self._sub.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                heard = time.monotonic()  # a hung Redis (not a closed one) sends nothing:
                pinged = heard  # ping it, and give up on a connection that stays silent
                while True:
                    msg = await pubsub.get_message(timeout=min(1.0, self.health_check_s))
                    now = time.monotonic()
                    if msg is not None:
                        heard = now
                        if msg["type"] == "subscribe":
                            self._subscribed.set()
                            delay = BACKOFF_MIN_S
                            if down:
                                log.info("subscription to the other instances restored")
                                down = False
                        elif msg["type"] == "message":
                            await self._on_message(msg["data"])
                    if now - heard > 2 * self.health_check_s + self.timeout_s:
                        raise ConnectionError("Redis stopped answering")
                    if now - pinged >= self.health_check_s:
                        pinged = now
                        await asyncio.wait_for(pubsub.ping(), self.timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._subscribed.clear()
                if not down:
                    log.warning(
                        "subscription to the other instances unavailable (%s); retrying in the "
                        "background",
                        exc,
                    )
                    down = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]  # typed in newer redis
