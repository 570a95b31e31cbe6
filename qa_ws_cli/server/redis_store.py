"""The store for several instances behind one load balancer: Redis holds what they share.

Rate-limit counters live in Redis through ``limits``' own async Redis storage (redis-py
asyncio), so a user's budget is one budget whichever instance a message lands on.

Broadcasts go through Redis pub/sub. The instance that takes ``POST /admin/broadcast``
delivers to its own connections at once and PUBLISHes an envelope tagged with its instance
id; every other instance's subscriber delivers it to theirs, and each instance ignores its
own envelopes when they come back. So ``broadcast`` returns the number of connections *this*
instance delivered to: the other instances' counts are not known to the publisher (PUBLISH's
answer counts subscribed instances, not connections).

Redis being down must never take the gateway down: ``ping`` (``/readyz``) says false, the
rate limiter fails open (see ``RateLimiter.hit``), a broadcast still reaches this instance's
connections, and the subscriber reconnects with backoff, logging once per outage. Broadcasts
published while an instance's subscriber is disconnected do not reach that instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from limits.aio.storage import RedisStorage, Storage
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from qa_ws_cli.config import store_scheme_problem
from qa_ws_cli.errors import ConfigError
from qa_ws_cli.server.store import BroadcastHandler, SessionSnapshot, Store

CHANNEL = "qa-ws:broadcast"
KEY_PREFIX = "qa-ws:limits"
SESSION_PREFIX = "qa-ws:session"  # sessions handed over by a draining instance
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
HEALTH_CHECK_S = 5.0  # the subscriber pings this often; silence past twice that: reconnect

log = logging.getLogger("qa_ws.server")


def check_store_url(url: str) -> str:
    """The URL if its scheme is one Redis speaks, else a ``ConfigError`` naming the setting."""
    problem = store_scheme_problem(url)
    if problem:
        raise ConfigError(f"websocket.store.url: {problem}", path="websocket.store.url")
    return url


class RedisStore(Store):
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
        self._redis = aioredis.Redis.from_url(url, **fast)
        shared: dict[str, Any] = {"connection_pool": self._redis.connection_pool}
        limits_uri = "async+redis+unix" + url[4:] if url.startswith("unix") else "async+" + url
        self._limits = RedisStorage(
            limits_uri,
            implementation="redispy",
            wrap_exceptions=True,  # errors arrive as limits.errors.StorageError
            key_prefix=key_prefix,
            **shared,  # one connection pool for both clients, closed with ``_redis``
        )
        # Its own client and connection: the subscription holds one for good.
        self._sub = aioredis.Redis.from_url(url, **fast)
        self._handlers: list[BroadcastHandler] = []
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def subscribed(self) -> bool:
        """True while the subscription to other instances' broadcasts is live."""
        return self._subscribed.is_set()

    def limit_storage(self) -> Storage:
        return self._limits

    def on_broadcast(self, handler: BroadcastHandler) -> None:
        self._handlers.append(handler)

    async def start(self) -> None:
        """Start the subscriber; wait briefly for it so early broadcasts are not missed."""
        if self._listener is None:
            self._listener = asyncio.get_running_loop().create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), self.timeout_s)

    async def broadcast(self, message: str) -> int:
        """Deliver here, then publish to the other instances; returns this instance's count."""
        delivered = await self._deliver(message)
        envelope = json.dumps({"v": 1, "origin": self.instance, "message": message})
        try:
            await self._redis.publish(self.channel, envelope)
        except Exception as exc:  # the local delivery stands; the others miss this one
            log.warning("broadcast not published to the other instances: %s", exc)
        return delivered

    async def save_sessions(self, snapshots: Sequence[SessionSnapshot], ttl_s: float) -> int:
        if not snapshots:
            return 0
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for snapshot in snapshots:
                    pipe.set(
                        self._session_key(snapshot["id"]),
                        json.dumps(snapshot),
                        ex=max(1, int(ttl_s)),
                    )
                await pipe.execute()
        except Exception as exc:  # a drain must finish even when Redis is away
            log.warning("sessions not handed over (they cannot be resumed elsewhere): %s", exc)
            return 0
        return len(snapshots)

    async def take_session(self, session_id: str) -> SessionSnapshot | None:
        try:
            raw = await self._redis.getdel(self._session_key(session_id))
        except Exception as exc:
            log.warning("session hand-over unavailable: %s", exc)
            return None
        if raw is None:
            return None
        try:
            snapshot: SessionSnapshot = json.loads(raw)
        except ValueError:
            return None
        return snapshot

    def _session_key(self, session_id: str) -> str:
        return f"{SESSION_PREFIX}:{session_id}"

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), self.timeout_s))
        except Exception:
            return False

    def prune(self) -> int:
        return 0  # Redis expires the counters itself

    async def aclose(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        for client in (self._sub, self._redis):
            with contextlib.suppress(Exception):
                await client.aclose()

    # -- internals ---------------------------------------------------------------------------

    async def _deliver(self, message: str) -> int:
        delivered = 0
        for handler in self._handlers:
            delivered += await handler(message)
        return delivered

    async def _on_message(self, data: bytes | str) -> None:
        try:
            envelope = json.loads(data)
            origin, message = envelope["origin"], envelope["message"]
        except (ValueError, TypeError, KeyError):
            log.warning("ignored a malformed message on %s", self.channel)
            return
        if origin != self.instance and isinstance(message, str):
            try:
                await self._deliver(message)
            except Exception:  # a delivery bug must not end the subscription
                log.exception("delivering a broadcast from Redis failed")

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
                                log.info("broadcast subscription to Redis restored")
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
                        "broadcast subscription to Redis unavailable (%s); retrying in the "
                        "background",
                        exc,
                    )
                    down = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
