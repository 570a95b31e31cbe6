"""The load users' connection (bench/transport.py): websockets' Sans-I/O protocol on a socket.

Against a real gateway process for what the gateway does (handshake with a Bearer token,
refusals, chat, heartbeats, the closing handshake), and against a small hand-written server
for what a gateway never does but a client must survive (fragments, a frame split across
TCP segments, a close code of the server's choosing, a cut, a close that gets no answer).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.bench.transport import WsConnection, open_connection, refusal
from tests.conftest import ServerProcess, make_settings, server_env

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
Script = Callable[[socket.socket], None]


def token(tmp_path: Path, sub: str = "bench-t") -> str:
    return issue_token(make_settings(tmp_path), sub, ttl_s=60)[0]


def read_until(
    ws: WsConnection, predicate: Callable[[dict[str, object]], bool]
) -> dict[str, object]:
    for _ in range(50):
        data = ws.recv(10.0)
        assert isinstance(data, str)
        event: dict[str, object] = json.loads(data)
        if predicate(event):
            return event
    raise AssertionError("no such frame among 50")


def test_chat_over_a_real_gateway_then_a_clean_close(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = spawn_server("--agent", "echo")
    ws = open_connection(server.url, token(tmp_path), 5.0)
    assert json.loads(ws.recv(5.0))["event"] == "connected"
    ws.send(json.dumps({"type": "chat_message", "id": "m1", "content": "hello there"}))
    answer = read_until(ws, lambda e: e.get("type") == "agent_response")
    assert answer["reply_to"] == "m1" and "hello there" in str(answer["content"])
    ws.close()
    assert ws.close_code == 1000  # the server answered our close frame
    assert ws.socket.fileno() == -1


def test_a_refusal_keeps_the_servers_error_code(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = spawn_server("--agent", "echo")
    with pytest.raises(InvalidStatus) as refused:
        open_connection(server.url, "not-a-jwt", 5.0)
    assert refused.value.response.status_code == 401
    assert refusal(refused.value)[0] == "invalid_token"
    with pytest.raises(ConnectionRefusedError):
        open_connection(f"ws://127.0.0.1:{_closed_port()}/ws", token(tmp_path), 5.0)


def test_server_heartbeats_are_answered_while_the_user_waits(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    env = server_env(tmp_path, WEBSOCKET_LIMITS__HEARTBEAT_S="0.2")
    server = spawn_server("--agent", "echo", env=env)
    ws = open_connection(server.url, token(tmp_path), 5.0)
    assert json.loads(ws.recv(5.0))["event"] == "connected"
    for _ in range(6):  # well past the server's pong deadline, several pings over
        with pytest.raises(TimeoutError):
            ws.recv(0.3)
    ws.send(json.dumps({"type": "ping", "id": "p1"}))
    assert read_until(ws, lambda e: e.get("type") == "pong")["reply_to"] == "p1"
    ws.close()
    assert ws.close_code == 1000


# -- a hand-written server -----------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    assert len(payload) < 126
    return bytes([(0x80 if fin else 0) | opcode, len(payload)]) + payload


def read_frame(conn: socket.socket) -> tuple[int, bytes]:
    """One masked client frame (short payloads only)."""
    head = _exact(conn, 2)
    length = head[1] & 0x7F
    assert head[1] & 0x80 and length < 126
    mask = _exact(conn, 4)
    data = _exact(conn, length)
    return head[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


@pytest.fixture
def raw_server() -> Iterator[Callable[[Script], str]]:
    """Completes one opening handshake, then runs a script on the accepted socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []
    seen: list[BaseException] = []

    def serve(script: Script) -> str:
        def run() -> None:
            conn, _ = listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                key = next(
                    line.split(b":", 1)[1].strip()
                    for line in request.split(b"\r\n")
                    if line.lower().startswith(b"sec-websocket-key")
                )
                accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
                conn.sendall(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                try:
                    script(conn)
                except BaseException as exc:  # surfaced by the test, not lost in a thread
                    seen.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return f"ws://127.0.0.1:{listener.getsockname()[1]}/ws"

    yield serve
    for thread in threads:
        thread.join(5)
    listener.close()
    if seen:
        raise seen[0]


def test_fragments_split_frames_pings_and_the_servers_close_code(
    raw_server: Callable[[Script], str],
) -> None:
    got: dict[str, object] = {}

    def script(conn: socket.socket) -> None:
        whole = frame(0x1, b'{"n":1}')
        for i in range(len(whole)):  # one byte per TCP segment
            conn.sendall(whole[i : i + 1])
        conn.sendall(frame(0x1, b'{"n":', fin=False) + frame(0x9, b"hb") + frame(0x0, b"2}"))
        got["pong"] = read_frame(conn)  # answered before the message was even complete
        conn.sendall(frame(0x2, b"\x00\x01"))
        conn.sendall(frame(0x8, struct.pack("!H", 4001) + b"bye"))
        got["echo"] = read_frame(conn)

    ws = open_connection(raw_server(script), None, 5.0)
    assert json.loads(ws.recv(5.0)) == {"n": 1}
    assert json.loads(ws.recv(5.0)) == {"n": 2}
    assert ws.recv(5.0) == b"\x00\x01"
    with pytest.raises(ConnectionClosed) as closed:
        ws.recv(5.0)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    assert closed.value.rcvd.reason == "bye"
    assert got["pong"] == (0xA, b"hb")
    assert got["echo"] == (0x8, struct.pack("!H", 4001) + b"bye")
    assert ws.socket.fileno() == -1


def test_a_cut_connection_and_a_close_nobody_answers(raw_server: Callable[[Script], str]) -> None:
    cut = open_connection(raw_server(lambda conn: conn.shutdown(socket.SHUT_RDWR)), None, 5.0)
    with pytest.raises(ConnectionClosed) as closed:
        cut.recv(5.0)
    assert closed.value.rcvd is None  # no close frame: the users count it as connection_lost

    release = threading.Event()
    got: list[tuple[int, bytes]] = []

    def deaf(conn: socket.socket) -> None:
        got.append(read_frame(conn))
        release.wait(10)  # holds the socket open and never answers

    ws = open_connection(raw_server(deaf), None, 5.0)
    ws.close(timeout=0.3)
    release.set()
    assert got == [(0x8, struct.pack("!H", 1000))]  # our close frame went out
    assert ws.close_code == 1006 and ws.socket.fileno() == -1  # gave up, socket closed


def test_this_module_runs_without_gevent() -> None:
    """The transport is imported by tests and tools outside a load process: no patching."""
    from gevent import monkey

    assert not monkey.is_module_patched("socket")
