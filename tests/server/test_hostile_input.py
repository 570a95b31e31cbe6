"""Property-based: anything a client may send gets a protocol answer or a protocol close.

One live server (echo agent) runs for the module on its own thread and loop. Each example
opens a fresh connection and sends a few frames: random bytes, random text, random JSON, or
random events that look almost valid. An oracle written from docs/protocol.md says what each frame
must get back; after each frame a ping with a sentinel id marks where its answer ends, so an
answer missing, extra or different fails. Meanwhile a well-behaved client on its own
connection pings and chats without pause and must never see anything else than its answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from collections.abc import Awaitable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as statistic
from hypothesis import strategies as st

from qa_ws_cli.agents.builtin import EchoAgent
from qa_ws_cli.protocol.codec import decode_server
from tests.conftest import Running, make_settings, run_gateway
from tests.server.wire import ERROR_CODES, WS_TEXT, Frame, RawPeer, close_code, connect

MAX_BYTES = 2048
MAX_CHARS = 100
ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
T = TypeVar("T")

fuzz = settings(
    max_examples=80,
    deadline=None,
    database=None,
    # one server for the module, checked after each test: shared across examples on purpose
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)


# -- the oracle ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What one frame must get: events as (type, code, reply_to, content), or a close."""

    events: tuple[tuple[str, str | None, str | None, str | None], ...] = ()
    close: int | None = None


def error(code: str, reply_to: str | None) -> Expect:
    return Expect(events=(("error", code, reply_to, None),))


def valid_id(value: Any) -> str | None:
    return value if isinstance(value, str) and ID_RE.fullmatch(value) else None


def expect_text(text: str, answered: dict[str, str]) -> Expect:
    if len(text.encode()) > MAX_BYTES:
        return Expect(close=1009)
    try:
        data = json.loads(text, object_pairs_hook=unique_keys)
    except (ValueError, RecursionError):  # a key twice in one object is invalid_json too
        return error("invalid_json", None)
    return expect_value(data, answered)


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def expect_value(data: Any, answered: dict[str, str]) -> Expect:
    """docs/protocol.md's client frames; ``answered`` is this session's answered ids."""
    if not isinstance(data, dict):
        return error("invalid_message", None)
    if "type" not in data:
        return error("invalid_message", None)
    reply_to = valid_id(data.get("id"))
    kind = data["type"]
    # an error about an answered id names no chat: that id's one final frame was sent
    error_to = None if reply_to in answered else reply_to
    if kind == "ping":
        return (
            Expect(events=(("pong", None, reply_to, None),))
            if reply_to
            else error("invalid_message", None)
        )
    if kind == "cancel":  # every answer is in by then: there is nothing in flight to stop
        ok = reply_to is not None and valid_id(data.get("target")) is not None
        return error("not_in_flight", error_to) if ok else error("invalid_message", error_to)
    if kind != "chat_message":
        return error("invalid_message", error_to)
    content = data.get("content")
    if reply_to is None or not isinstance(content, str) or not content:
        return error("invalid_message", error_to)
    if len(content) > MAX_CHARS:
        return error("message_too_large", error_to)
    first = answered.setdefault(reply_to, content)  # a known id gets its first answer again
    return Expect(events=(("agent_response", None, reply_to, first),))


def outcome(wanted: Expect) -> str:
    """A label for ``--hypothesis-show-statistics``: which answers the examples reached."""
    if wanted.close is not None:
        return f"close {wanted.close}"
    kind, code = wanted.events[0][:2] if wanted.events else ("nothing", None)
    return f"{kind} {code or ''}".strip()


def summary(event: dict[str, Any]) -> tuple[str, str | None, str | None, str | None]:
    return (event["type"], event.get("code"), event.get("reply_to"), event.get("content"))


# -- the live server ----------------------------------------------------------------------


class Bystander:
    """A well-behaved client: ping, chat, check, again, until stopped."""

    def __init__(self, running: Running, http: aiohttp.ClientSession) -> None:
        self.running = running
        self.http = http
        self.rounds = 0
        self.problems: list[str] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        ws, _ = await connect(self.http, self.running, "bystander")
        try:
            while not self.stop.is_set():
                n = self.rounds
                await ws.send_json({"type": "ping", "id": f"p{n}"})
                self.check(await ws.receive_json(timeout=10), ("pong", None, f"p{n}", None))
                await ws.send_json({"type": "chat_message", "id": f"c{n}", "content": f"q {n}"})
                answer = ("agent_response", None, f"c{n}", f"q {n}")
                self.check(await ws.receive_json(timeout=10), answer)
                self.rounds += 1
                await asyncio.sleep(0.005)
        except Exception as exc:  # a close, a timeout: all problems
            self.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            await ws.close()

    def check(self, event: dict[str, Any], wanted: tuple[Any, ...]) -> None:
        if summary(event) != wanted:
            self.problems.append(f"wanted {wanted}, got {event}")


class Live:
    """The server on a thread of its own, so that hypothesis' examples can stay synchronous."""

    def __init__(self, tmp_path: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stack = contextlib.AsyncExitStack()
        self.run(self._start(tmp_path))

    def run(self, work: Coroutine[Any, Any, T] | Awaitable[T], timeout: float = 60) -> T:
        async def wrapped() -> T:
            return await work

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(timeout)

    async def _start(self, tmp_path: Path) -> None:
        settings = make_settings(
            tmp_path,
            server={"max_connections_per_user": 1000},
            limits={
                "max_message_bytes": MAX_BYTES,
                "max_content_chars": MAX_CHARS,
                "max_frames_per_second": 1_000_000,  # the frame budget has its own tests
            },
            security={"rate_limiting": {"max_requests_per_minute": 1_000_000, "burst": 100_000}},
            sessions={"ttl_s": 1},
        )
        self.running = await self.stack.enter_async_context(run_gateway(settings, EchoAgent()))
        self.http = await self.stack.enter_async_context(aiohttp.ClientSession())
        self.bystander = Bystander(self.running, self.http)
        self.watching = asyncio.create_task(self.bystander.run())

    async def _stop(self) -> None:
        self.bystander.stop.set()
        await asyncio.wait_for(self.watching, 15)
        await self.stack.aclose()

    def close(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()

    async def exchange(self, frames: list[str | bytes]) -> list[str]:
        """Send each frame on a fresh connection; check its answer against the oracle."""
        ws, _ = await connect(self.http, self.running, "fuzzer")
        answered: dict[str, str] = {}
        seen: list[str] = []
        try:
            for n, frame in enumerate(frames):
                if isinstance(frame, bytes):
                    wanted = (
                        Expect(close=1009)
                        if len(frame) > MAX_BYTES
                        else error("unsupported_frame", None)
                    )
                    await ws.send_bytes(frame)
                else:
                    wanted = expect_text(frame, answered)
                    await ws.send_str(frame)
                seen.append(outcome(wanted))
                if wanted.close is not None:
                    assert await close_code(ws) == wanted.close
                    return seen
                got = await self.answers_until(ws, f"sentinel-{n}", len(wanted.events))
                assert tuple(summary(e) for e in got) == wanted.events, (frame, got)
            assert await self.answers_until(ws, "sentinel-end", 0) == []  # nothing stray
            return seen
        finally:
            await ws.close()

    @staticmethod
    async def answers_until(
        ws: aiohttp.ClientWebSocketResponse, sentinel: str, expected: int
    ) -> list[dict[str, Any]]:
        """Events up to our sentinel's pong (and an answer that may come after it)."""
        await ws.send_json({"type": "ping", "id": sentinel})
        got: list[dict[str, Any]] = []
        ponged = False
        async with asyncio.timeout(10):
            while not ponged or len(got) < expected:
                msg = await ws.receive()
                assert msg.type is aiohttp.WSMsgType.TEXT, (msg.type, msg.data)
                decode_server(msg.data)  # a well-formed server event, whatever it says
                event = json.loads(msg.data)
                assert event["ts"].endswith("Z")
                if event["type"] == "pong" and event["reply_to"] == sentinel:
                    ponged = True
                    continue
                if event["type"] == "error":
                    assert event["code"] in ERROR_CODES and event["message"]
                    assert ("seq" in event) is (event["reply_to"] is not None)
                got.append(event)
        return got


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    server = Live(tmp_path_factory.mktemp("hostile"))
    try:
        yield server
    finally:
        server.close()
    assert server.bystander.problems == []


@pytest.fixture
def watched(live: Live) -> Iterator[Live]:
    """After each test: the bystander kept getting answers and never saw anything wrong."""
    before = live.bystander.rounds
    yield live
    live.run(asyncio.sleep(0.1))
    assert live.bystander.problems == []
    assert live.bystander.rounds > before
    assert live.run(_serves(live))


async def _serves(live: Live) -> bool:
    ws, _ = await connect(live.http, live.running, "newcomer")
    await ws.send_json({"type": "ping", "id": "hello"})
    pong = await ws.receive_json(timeout=10)
    await ws.close()
    return bool(pong["type"] == "pong" and pong["reply_to"] == "hello")


def play(live: Live, frames: list[str | bytes]) -> None:
    for label in live.run(live.exchange(frames)):
        statistic(label)


# -- strategies ---------------------------------------------------------------------------

MISSING = object()  # a field left out of the event
good_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True).filter(
    lambda s: not s.startswith("sentinel")
)
bad_ids = st.one_of(
    st.text(max_size=70).filter(lambda s: not ID_RE.fullmatch(s)),
    st.integers(),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
fitting = st.text(min_size=1, max_size=MAX_CHARS)
too_long = st.text(min_size=MAX_CHARS + 1, max_size=MAX_CHARS + 20)  # message_too_large
contents = st.one_of(
    fitting,
    too_long,
    st.just(""),
    st.just(MISSING),
    json_values,
)


def mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """Nine times in ten the valid choice: random events must also be answered, not only
    refused."""
    return draw(good if draw(st.integers(0, 9)) else bad)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    """A dict shaped like a client event, each field mostly valid, else invalid or missing."""
    kinds = st.sampled_from(["chat_message", "ping", "cancel"])
    odd_kinds = st.sampled_from(["other", "", "PING", MISSING]) | st.text(max_size=12) | json_leaves
    ids = st.sampled_from(["a", "b", "dup"]) | good_ids  # repeats: answered ids come back
    event: dict[str, Any] = {
        "type": mostly(draw, kinds, odd_kinds),
        "id": mostly(draw, ids, bad_ids | st.just(MISSING)),
        "content": draw(
            [fitting, fitting, fitting, too_long, too_long, contents][draw(st.integers(0, 5))]
        ),
        "target": mostly(draw, ids, bad_ids | st.just(MISSING)),
    }
    event.update(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=2)))
    return {key: value for key, value in event.items() if value is not MISSING}


def as_json(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


def ping_of_size(size: int) -> str:
    """A valid ping frame of exactly ``size`` bytes."""
    head, tail = '{"type":"ping","id":"big","pad":"', '"}'
    return head + "x" * (size - len(head) - len(tail)) + tail


near_the_limit = st.sampled_from([MAX_BYTES, MAX_BYTES + 1]) | st.integers(
    MAX_BYTES - 50, MAX_BYTES + 50
)
texts = st.one_of(
    st.text(max_size=200),
    st.text(max_size=20).map(lambda s: "{" + s),
    near_the_limit.map(ping_of_size),
    st.integers(900, MAX_BYTES + 10).map(lambda n: "[" * n),  # deeper than a parser's stack
    st.integers(180, MAX_BYTES // 5 + 2).map(lambda n: '{"a":' * n),
)
binaries = st.one_of(st.binary(max_size=200), near_the_limit.map(bytes))


# -- properties ---------------------------------------------------------------------------


@fuzz
@given(frames=st.lists(binaries, min_size=1, max_size=3))
def test_random_binary_frames(watched: Live, frames: list[bytes]) -> None:
    play(watched, list(frames))


@fuzz
@given(frames=st.lists(texts, min_size=1, max_size=3))
def test_random_text_frames(watched: Live, frames: list[str]) -> None:
    play(watched, list(frames))


@fuzz
@given(values=st.lists(st.tuples(json_values, st.booleans()), min_size=1, max_size=3))
def test_random_json_values(watched: Live, values: list[tuple[Any, bool]]) -> None:
    play(watched, [as_json(v, a) for v, a in values])


@settings(parent=fuzz, max_examples=100)
@given(items=st.lists(st.tuples(events(), st.booleans()), min_size=1, max_size=5))
def test_random_valid_looking_events(
    watched: Live, items: list[tuple[dict[str, Any], bool]]
) -> None:
    play(watched, [as_json(e, a) for e, a in items])


@fuzz
@given(
    frames=st.lists(
        st.one_of(binaries, texts, events().map(json.dumps), json_values.map(json.dumps)),
        min_size=1,
        max_size=6,
    )
)
def test_everything_mixed_on_one_connection(watched: Live, frames: list[str | bytes]) -> None:
    play(watched, list(frames))


# -- a few inputs spelled out -------------------------------------------------------------


def test_nesting_deeper_than_the_json_parser_can_follow_is_invalid_json(watched: Live) -> None:
    assert watched.run(watched.exchange(["[" * 1500, '{"a":' * 400])) == ["error invalid_json"] * 2


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (RawPeer.encode_frame(WS_TEXT, b'{"type":"ping","id":"\xff"}'), 1007),  # not UTF-8
        (RawPeer.encode_frame(0x3, b"x"), 1002),  # a reserved opcode
        (RawPeer.encode_frame(0x0, b"x"), 1002),  # a continuation of nothing
        (RawPeer.encode_frame(0x9, b"x" * 126), 1002),  # a control frame over 125 bytes
        (b"\x00\x01\x02GET / HTTP/1.1\r\n\r\n", 1002),  # not WebSocket at all
    ],
)
def test_broken_framing_is_closed_by_the_websocket_layer(
    watched: Live, frame: bytes, code: int
) -> None:
    """Below the JSON protocol: RFC 6455's own close codes, 1002 and 1007 (docs/protocol.md)."""

    async def send() -> list[Frame]:
        peer = await RawPeer.open(watched.running, watched.running.token("raw"))
        try:
            await peer.read_frame()  # connected
            peer.writer.write(frame)
            return await peer.frames_until_eof(timeout=10)
        finally:
            peer.close()

    frames = watched.run(send())
    assert [f.close_code for f in frames] == [code]


def test_a_fragmented_text_frame_is_reassembled(watched: Live) -> None:
    async def send() -> dict[str, Any]:
        peer = await RawPeer.open(watched.running, watched.running.token("raw"))
        try:
            await peer.read_frame()  # connected
            peer.send_frame(WS_TEXT, b'{"type":"pi', fin=False)
            peer.send_frame(0x0, b'ng","id":"f1"}')
            frame = await asyncio.wait_for(peer.read_frame(), 10)
            assert frame is not None
            answer: dict[str, Any] = json.loads(frame.payload)
            return answer
        finally:
            peer.close()

    assert summary(watched.run(send())) == ("pong", None, "f1", None)
