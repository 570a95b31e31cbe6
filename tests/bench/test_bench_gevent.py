"""The load users' connections inside a Locust (gevent monkey-patched) process.

No thread per connection, a blocked ``recv`` must let other greenlets run, and Locust's stop
must end users even while their ``close`` waits for a peer that never answers the closing
handshake (websocket-client's bare ``except:`` swallowed that stop).
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qa_ws_cli.bench.spec import BenchSpec, LoadOptions
from tests.bench.load_process import run_load_process
from tests.conftest import ServerProcess

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_a_connection_is_cooperative_under_gevent_without_a_thread(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = spawn_server("--agent", "echo")
    script = textwrap.dedent(f"""
        import locust  # monkey-patches, as in every load process
        import json, threading, gevent
        from gevent import monkey
        from qa_ws_cli.auth.tokens import issue_token
        from qa_ws_cli.bench.users import open_connection
        from tests.conftest import make_settings
        from pathlib import Path
        token = issue_token(make_settings(Path({str(tmp_path)!r})), "g", ttl_s=60)[0]
        threads = threading.active_count()
        ws = open_connection({server.url!r}, token, 5.0)
        assert json.loads(ws.recv(5))["event"] == "connected"
        threads_while_open = threading.active_count() - threads
        ticks = []
        def other():
            for _ in range(1000):
                ticks.append(1)
                gevent.sleep(0.01)
        g = gevent.spawn(other)
        try:
            ws.recv(0.5)  # nothing comes: it must wait without blocking the hub
            timed_out = False
        except TimeoutError:
            timed_out = True
        g.kill()
        ws.close()
        print(json.dumps({{
            "patched": [monkey.is_module_patched(m) for m in ("threading", "socket", "selectors")],
            "threads_while_open": threads_while_open,
            "timed_out": timed_out, "ticks": len(ticks), "closed": ws.close_code,
        }}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["patched"] == [True, True, True] and out["threads_while_open"] == 0
    assert out["timed_out"] and out["ticks"] >= 5  # other greenlets ran during the recv
    assert out["closed"] == 1000


@pytest.fixture
def deaf_server() -> Iterator[str]:
    """Completes the opening handshake, says `connected`, then reads and ignores everything:
    no answers, no close frame back, ever."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key")
            )
            accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            payload = b'{"type":"system_event","event":"connected","session_id":"s"}'
            conn.sendall(bytes([0x81, len(payload)]) + payload)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"ws://127.0.0.1:{listener.getsockname()[1]}/ws"
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


def test_locust_stops_users_whose_close_gets_no_answer(deaf_server: str, tmp_path: Path) -> None:
    spec = BenchSpec(
        url=deaf_server,
        users=4,
        spawn_rate=10,
        duration_s=1.5,
        load=LoadOptions(answer_timeout_s=60.0, think_time_s=0.1),
        mint_tokens=False,
    )
    proc = run_load_process(tmp_path, spec.to_json())
    assert proc.returncode == 0, proc.stderr
    raw = json.loads((tmp_path / "result.json").read_text())
    assert raw["held_peak"] == 4, raw["details"]  # every user waited for an answer
    assert raw["users_after_quit"] == 0  # and Locust's stop ended every one of them
    assert "answer_timeout" not in raw["errors"]
