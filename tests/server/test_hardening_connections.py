"""Before the upgrade (issue 11, point 1 and 15): silent and slowloris sockets time out, one
address cannot hold more than its share, and running out of descriptors costs a line a second."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path

import aiohttp
import pytest

from qa_ws_cli.auth.tokens import issue_token
from tests.conftest import ServerProcess, make_settings
from tests.server.hostile import closed_by_server, log_lines, open_socket, port_of, start_server


def token(tmp_path: Path, sub: str = "alice") -> str:
    return issue_token(make_settings(tmp_path), sub)[0]


def behind_trusted_proxies(tmp_path: Path) -> ServerProcess:
    """No auth, one connection per client address, loopback and 10/8 trusted as proxies."""
    return start_server(
        tmp_path,
        "--no-auth",
        env={
            "WEBSOCKET_SERVER__MAX_CONNECTIONS_PER_IP": "1",
            "WEBSOCKET_SERVER__TRUSTED_PROXIES": '["127.0.0.1/32", "10.0.0.0/8"]',
        },
    )


async def chat_once(http: aiohttp.ClientSession, server: ServerProcess, tok: str, n: int) -> None:
    async with http.ws_connect(server.url, headers={"Authorization": f"Bearer {tok}"}) as ws:
        assert (await ws.receive_json(timeout=10))["event"] == "connected"
        await chat_on(ws, f"q{n}")


async def chat_on(ws: aiohttp.ClientWebSocketResponse, msg_id: str) -> None:
    await ws.send_json({"type": "chat_message", "id": msg_id, "content": "hello"})
    while True:
        frame = await ws.receive_json(timeout=15)
        if frame.get("reply_to") == msg_id and frame["type"] in ("agent_response", "error"):
            assert frame["type"] == "agent_response", frame
            return


async def test_silent_and_slowloris_sockets_are_closed_after_the_handshake_timeout(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path, env={"WEBSOCKET_SERVER__HANDSHAKE_TIMEOUT_S": "1"})
    port = port_of(server)
    silent = [await open_socket(port, "127.0.0.2") for _ in range(20)]
    slow = [await open_socket(port, "127.0.0.3") for _ in range(20)]

    async def drip(writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200:
                writer.write(bytes([byte]))
                await asyncio.sleep(0.1)

    drips = [asyncio.create_task(drip(w)) for _, w in slow]
    closed = await asyncio.gather(*(closed_by_server(r) for r, _ in silent + slow))
    for task in drips:
        task.cancel()
    assert all(closed), f"{closed.count(False)} sockets still open"
    assert log_lines(server, "handshake_timeout")  # said so (a few lines, not 40)
    assert len(log_lines(server, "handshake_timeout")) < 10
    async with aiohttp.ClientSession() as http:
        await chat_once(http, server, token(tmp_path), 1)
    assert server.stop() == 0


async def test_one_address_holds_at_most_its_cap_and_others_still_get_in(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"WEBSOCKET_SERVER__MAX_CONNECTIONS_PER_IP": "5"})
    port = port_of(server)
    held = [await open_socket(port, "127.0.0.2") for _ in range(5)]
    extra = [await open_socket(port, "127.0.0.2") for _ in range(5)]
    assert all(await asyncio.gather(*(closed_by_server(r, 5) for r, _ in extra)))
    assert not any(await asyncio.gather(*(closed_by_server(r, 0.3) for r, _ in held)))
    async with aiohttp.ClientSession() as http:
        await chat_once(http, server, token(tmp_path), 1)  # another address: not affected
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.5)
        reader, writer = await open_socket(port, "127.0.0.2")  # slots given back
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await reader.read(100)).startswith(b"HTTP/1.1 200")
    refused = log_lines(server, "connection_refused")
    assert refused and "reason=max_connections_per_ip" in refused[0]
    assert "remote=127.0.0.2" in refused[0]


async def test_behind_a_trusted_proxy_the_cap_counts_the_forwarded_address(
    tmp_path: Path,
) -> None:
    server = behind_trusted_proxies(tmp_path)
    first = {"X-Forwarded-For": "203.0.113.7"}
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url, headers=first):
        for same in (
            {"X-Forwarded-For": "203.0.113.7"},
            {"X-Forwarded-For": "1.2.3.4, 203.0.113.7, 10.1.2.3"},
        ):
            async with http.get(server.url.replace("ws", "http", 1), headers=same) as resp:
                assert resp.status == 429
                assert (await resp.json())["error"] == "too_many_connections"
        other = {"X-Forwarded-For": "198.51.100.9"}
        async with http.ws_connect(server.url, headers=other) as ws:
            assert (await ws.receive_json(timeout=10))["event"] == "connected"
        # every one of these came from 127.0.0.1: the proxy's TCP address is not what counts


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: str) -> bytes:
    """One request on a kept-alive socket; its answer's head (the bodies here are small)."""
    writer.write(head.encode() + b"Host: x\r\nContent-Length: 0\r\n\r\n")
    answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = re.search(rb"Content-Length: (\d+)", answer, re.IGNORECASE)
    await reader.readexactly(int(length.group(1)) if length else 0)
    return answer


async def test_a_request_no_route_matches_is_answered_counted_and_kept_alive(
    tmp_path: Path,
) -> None:
    """No route: 404 or 405 without asking for a token, with a request id, and the guard
    counts it (the handshake timeout no longer applies to its connection)."""
    server = start_server(tmp_path, env={"WEBSOCKET_SERVER__HANDSHAKE_TIMEOUT_S": "1"})
    reader, writer = await open_socket(port_of(server))
    answer = await _answer(reader, writer, "GET /admin/nope HTTP/1.1\r\nX-Request-ID: probe-1\r\n")
    assert answer.startswith(b"HTTP/1.1 404") and b"X-Request-ID: probe-1" in answer
    await asyncio.sleep(1.5)  # past the handshake timeout: the socket is still served
    answer = await _answer(reader, writer, "POST /ws HTTP/1.1\r\n")
    assert answer.startswith(b"HTTP/1.1 405") and b"X-Request-ID: " in answer
    writer.close()
    assert not log_lines(server, "handshake_timeout")


async def test_behind_a_trusted_proxy_an_unrouted_request_over_the_cap_closes_its_connection(
    tmp_path: Path,
) -> None:
    server = behind_trusted_proxies(tmp_path)
    forwarded = {"X-Forwarded-For": "203.0.113.7"}
    async with aiohttp.ClientSession() as http, http.ws_connect(server.url, headers=forwarded):
        reader, writer = await open_socket(port_of(server))
        head = "GET /nope HTTP/1.1\r\nX-Forwarded-For: 203.0.113.7\r\n"
        answer = await _answer(reader, writer, head)
        assert answer.startswith(b"HTTP/1.1 404")  # the answer stays; the connection goes
        assert await closed_by_server(reader, 5)
    refused = log_lines(server, "refused")
    assert any("error=too_many_connections" in line and "/nope" in line for line in refused)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_descriptor_exhaustion_logs_a_line_a_second_and_chats_go_on(
    tmp_path: Path, loop: str
) -> None:
    server = start_server(
        tmp_path,
        env={"WEBSOCKET_SERVER__HANDSHAKE_TIMEOUT_S": "2", "WEBSOCKET_SERVER__EVENT_LOOP": loop},
        nofile=(128, 256),
    )
    output = server.output()
    assert re.search(r"open_files_limit raised_from=128 to=256", output), output
    port = port_of(server)
    tok = token(tmp_path)
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.url, headers={"Authorization": f"Bearer {tok}"}) as ws:
            assert (await ws.receive_json(timeout=10))["event"] == "connected"
            flood: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
            for n in range(8):  # 8 "machines" x 40 silent sockets: more than 256 descriptors
                flood += [await open_socket(port, f"127.0.0.{n + 2}") for _ in range(40)]
            await asyncio.sleep(1.5)
            await chat_on(ws, "during")  # an open connection is served during the flood
            for _, writer in flood:
                writer.close()
        await asyncio.sleep(3)  # let the timeouts and the retry of accept() run
        await chat_once(http, server, tok, 2)  # and a new one after it
    failures = log_lines(server, "accept_failed")
    if loop == "asyncio":  # uvloop (libuv) keeps a spare descriptor and retries by itself
        assert failures, "the descriptor exhaustion was not reported"
        assert "error=EMFILE" in failures[0]
    assert len(failures) < 15  # one a second at most, not one per accept() attempt
    assert len(server.output().splitlines()) < 60  # the whole log stays small
    assert "Traceback" not in server.output()
    assert len(server.output().splitlines()) < 200
