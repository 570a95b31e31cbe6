"""Locust users that speak wire protocol v1 over websockets' Sans-I/O protocol.

Each user drives its connection in its own greenlet (``qa_ws_cli.bench.transport``): no
reader thread per connection and no handoff between greenlets per frame, which is what the
load process's CPU per answer pays for (README, bench). Locust's ``GreenletExit`` passes
through every read and close, so a stop never waits for a user.

``QaWsUser`` holds one connection and knows the protocol: connect (until the ``connected``
event), send a frame, read frames until one answers a given id, close. Each scenario is a
small concrete class on top. Every measured operation ends in exactly one ``ok`` or ``fail``
on the process's recorder, which also feeds Locust's own statistics ("WS connect", ...).

Error codes: the protocol's own (``agent_busy``, ``rate_limited`` where not expected ...),
the handshake refusal's ``error`` (``invalid_token``, ``too_many_connections`` ...) or
``http_<status>``, the transport's: ``connect_refused``, ``connect_timeout``,
``connect_failed``, ``answer_timeout``, ``connection_lost``, ``closed_<close code>``,
``too_many_frames``, and the scenarios': ``not_rate_limited`` (a burst got through whole),
``lost`` (reconnect: an asked id never answered).

Imports Locust (and so gevent's monkey-patching): load processes only.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from typing import Any, ClassVar

from locust import User, task
from locust.env import Environment
from locust.exception import StopUser
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from qa_ws_cli.bench.hooks import BenchState, state_of
from qa_ws_cli.bench.transport import WsConnection, refusal
from qa_ws_cli.bench.transport import open_connection as open_transport

# every wait is bounded by a deadline, and by a count of frames in case a server floods
MAX_FRAMES_PER_WAIT = 100_000
MAX_FRAME_BYTES = 4 * 1024 * 1024


class Lost(Exception):
    """The connection is unusable; ``code`` says why (an error code of the module docstring)."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(code)
        self.code = code
        self.detail = detail


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0


def open_connection(url: str, token: str | None, timeout: float) -> WsConnection:
    """One WebSocket connection as every load user opens it."""
    return open_transport(url, token, timeout, max_size=MAX_FRAME_BYTES)


class QaWsUser(User):
    """One virtual user: one token (its own ``sub``), at most one connection at a time."""

    abstract = True
    scenario: ClassVar[str] = "chat"

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.bench: BenchState = state_of(environment)
        self.rec = self.bench.recorder
        self.options = self.bench.options
        self.sub = self.bench.next_sub()
        self.token = self.bench.tokens.for_user(self.sub)
        self.ws: WsConnection | None = None
        self.ids = 0
        self.stop_at = time.monotonic() + self.options.max_user_seconds

    def wait_time(self) -> float:
        think = self.options.think(self.scenario)
        return random.uniform(0.5 * think, 1.5 * think)  # noqa: S311 - jitter, not crypto

    def on_start(self) -> None:
        self.connect()

    def on_stop(self) -> None:
        self.disconnect()

    def next_id(self) -> str:
        self.ids += 1
        return f"m{self.ids}"

    def check_time(self) -> None:
        if time.monotonic() > self.stop_at:
            raise StopUser()

    # -- connection ------------------------------------------------------------------------

    def connect(self, url: str | None = None) -> dict[str, Any] | None:
        """Open the connection; the ``connected`` event, or None (the failure is recorded)."""
        self.check_time()
        started = time.perf_counter()
        target = url or self.host or ""
        try:
            ws = open_connection(target, self.token, self.options.connect_timeout_s)
        except InvalidStatus as exc:
            code, detail = refusal(exc)
            self.rec.fail("connect", code, _ms(started), detail)
            return None
        except ConnectionRefusedError:
            detail = f"nothing listens at {target}"
            self.rec.fail("connect", "connect_refused", _ms(started), detail)
            return None
        except TimeoutError:
            self.rec.fail("connect", "connect_timeout", _ms(started))
            return None
        except (OSError, WebSocketException) as exc:
            self.rec.fail("connect", "connect_failed", _ms(started), repr(exc)[:200])
            return None
        self.ws = ws
        self.rec.connected()
        deadline = started + self.options.connect_timeout_s
        try:
            event = self.next_event(deadline)
        except Lost as lost:
            self.drop()
            code = "connect_timeout" if lost.code == "answer_timeout" else lost.code
            self.rec.fail("connect", code, _ms(started), lost.detail)
            return None
        if event.get("type") != "system_event" or event.get("event") != "connected":
            self.drop()
            detail = "the first frame was not `connected`"
            self.rec.fail("connect", "connect_failed", _ms(started), detail)
            return None
        self.rec.ok("connect", _ms(started))
        return event

    def ensure_connected(self) -> bool:
        return self.ws is not None or self.connect() is not None

    def drop(self) -> None:
        """Cut the TCP connection without a closing handshake."""
        if self.ws is not None:
            ws, self.ws = self.ws, None
            self.rec.disconnected()
            ws.abort()

    def disconnect(self) -> None:
        """Close normally (1000), waiting at most ``CLOSE_TIMEOUT_S`` (transport) for the server."""
        if self.ws is not None:
            ws, self.ws = self.ws, None
            self.rec.disconnected()
            with contextlib.suppress(OSError, WebSocketException):
                ws.close()

    # -- frames ----------------------------------------------------------------------------

    def send(self, payload: dict[str, Any]) -> None:
        assert self.ws is not None
        try:
            self.ws.send(json.dumps(payload, separators=(",", ":")))
        except (OSError, WebSocketException) as exc:
            raise Lost("connection_lost", repr(exc)[:200]) from None
        self.rec.count("sent")

    def next_event(self, deadline: float) -> dict[str, Any]:
        """The next JSON frame before ``deadline`` (perf_counter); Lost on timeout or close."""
        ws = self.ws
        assert ws is not None
        for _ in range(MAX_FRAMES_PER_WAIT):
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise Lost("answer_timeout")
            try:
                data = ws.recv(remaining)
            except TimeoutError:
                raise Lost("answer_timeout") from None
            except ConnectionClosed as exc:
                if exc.rcvd is None:
                    raise Lost("connection_lost", str(exc)[:200]) from None
                raise Lost(f"closed_{exc.rcvd.code}", exc.rcvd.reason) from None
            except (OSError, WebSocketException) as exc:
                raise Lost("connection_lost", repr(exc)[:200]) from None
            if isinstance(data, str):
                event: dict[str, Any] = json.loads(data)
                return event
        raise Lost("too_many_frames", f"{MAX_FRAMES_PER_WAIT} frames without a text frame")

    def unrelated(self, event: dict[str, Any]) -> None:
        """A frame that answers nothing we wait for: only an error is worth counting."""
        if event.get("type") == "error" and event.get("reply_to") is None:
            self.rec.fail("frame", str(event.get("code")), detail=str(event.get("message", "")))

    def ask(self, content: str) -> None:
        """One chat round trip; records ``chat`` (and ``first_delta`` when the agent streams)."""
        mid = self.next_id()
        started = time.perf_counter()
        try:
            self.send({"type": "chat_message", "id": mid, "content": content})
            deadline = started + self.options.answer_timeout_s
            deltas = 0
            for _ in range(MAX_FRAMES_PER_WAIT):
                event = self.next_event(deadline)
                kind = event.get("type")
                if event.get("reply_to") != mid:
                    self.unrelated(event)
                elif kind == "agent_delta":
                    deltas += 1
                    if deltas == 1:
                        self.rec.ok("first_delta", _ms(started))
                elif kind == "agent_event":  # tool progress: counted, never a latency
                    self.rec.count("agent_events")
                elif kind == "agent_response":
                    self.rec.ok("chat", _ms(started), len(event.get("content", "")))
                    self.rec.sample("deltas", deltas)
                    self.rec.count("answered")
                    return
                elif kind == "error":
                    code = str(event.get("code"))
                    self.rec.fail("chat", code, _ms(started), str(event.get("message", "")))
                    return
            raise Lost("too_many_frames", f"no answer among {MAX_FRAMES_PER_WAIT} frames")
        except Lost as lost:
            self.rec.fail("chat", lost.code, _ms(started), lost.detail)
            self.drop()

    def ping(self) -> None:
        """A protocol ``ping`` and its ``pong``: proof that a held connection still works."""
        mid = self.next_id()
        started = time.perf_counter()
        try:
            self.send({"type": "ping", "id": mid})
            deadline = started + self.options.answer_timeout_s
            for _ in range(MAX_FRAMES_PER_WAIT):
                event = self.next_event(deadline)
                if event.get("type") == "pong" and event.get("reply_to") == mid:
                    self.rec.ok("ping", _ms(started))
                    self.rec.count("pongs")
                    return
                self.unrelated(event)
            raise Lost("too_many_frames", f"no pong among {MAX_FRAMES_PER_WAIT} frames")
        except Lost as lost:
            self.rec.fail("ping", lost.code, _ms(started), lost.detail)
            self.drop()

    def listen(self, seconds: float) -> None:
        """Read (and so answer the server's heartbeat pings) for ``seconds``."""
        deadline = time.perf_counter() + seconds
        try:
            for _ in range(MAX_FRAMES_PER_WAIT):
                self.unrelated(self.next_event(deadline))
        except Lost as lost:
            if lost.code != "answer_timeout":
                self.rec.fail("idle", lost.code, 0.0, lost.detail)
                self.drop()


class ChatUser(QaWsUser):
    """Connects once, then asks with a think time between answers (reconnects if dropped)."""

    scenario = "chat"

    @task
    def chat(self) -> None:
        self.check_time()
        if self.ensure_connected():
            self.ask(self.options.message)


class IdleUser(QaWsUser):
    """Connects and holds; a ping every think time proves the connection still answers."""

    scenario = "idle"

    def wait_time(self) -> float:
        # connected, the pause is spent in listen(), reading, so heartbeats are answered
        return 0.0 if self.ws is not None else super().wait_time()

    @task
    def hold(self) -> None:
        self.check_time()
        if self.ensure_connected():
            self.ping()
        if self.ws is not None:
            self.listen(super().wait_time())


class BurstUser(QaWsUser):
    """Sends ``burst_size`` messages at once, so the rate limit must answer ``rate_limited``.

    A ``rate_limited`` answer is the expected outcome here, not an error; a burst that gets
    none is one (``not_rate_limited``): the limit did not hold.
    """

    scenario = "burst"

    @task
    def burst(self) -> None:
        self.check_time()
        if not self.ensure_connected():
            return
        sent: dict[str, float] = {}
        limited = 0
        try:
            for _ in range(self.options.burst_size):
                mid = self.next_id()
                sent[mid] = time.perf_counter()
                self.send({"type": "chat_message", "id": mid, "content": self.options.message})
            deadline = time.perf_counter() + self.options.answer_timeout_s
            for _ in range(MAX_FRAMES_PER_WAIT):
                if not sent:
                    break
                event = self.next_event(deadline)
                rid, kind = str(event.get("reply_to")), event.get("type")
                if rid not in sent:
                    self.unrelated(event)
                    continue
                if kind in ("agent_delta", "agent_event"):  # the answer is still to come
                    if kind == "agent_event":
                        self.rec.count("agent_events")
                    continue
                started = sent.pop(rid)
                if kind == "agent_response":
                    self.rec.ok("burst", _ms(started))
                    self.rec.count("answered")
                elif kind == "error" and event.get("code") == "rate_limited":
                    limited += 1
                    self.rec.ok("burst", _ms(started))
                    self.rec.count("rate_limited")
                else:
                    self.rec.fail(
                        "burst",
                        str(event.get("code", kind)),
                        _ms(started),
                        str(event.get("message", "")),
                    )
            if sent:
                raise Lost("too_many_frames", f"answers missing after {MAX_FRAMES_PER_WAIT} frames")
        except Lost as lost:
            for started in sent.values():
                self.rec.fail("burst", lost.code, _ms(started), lost.detail)
            self.drop()
            return
        if limited == 0:
            self.rec.fail(
                "burst",
                "not_rate_limited",
                0.0,
                f"a burst of {self.options.burst_size} messages was not rate limited",
            )


class ChurnUser(QaWsUser):
    """Connect, one message, disconnect, and again: the cost of a connection's whole life."""

    scenario = "churn"

    def on_start(self) -> None:
        return None  # each task opens its own connection

    @task
    def cycle(self) -> None:
        self.check_time()
        if self.connect():
            self.ask(self.options.message)
            self.disconnect()
