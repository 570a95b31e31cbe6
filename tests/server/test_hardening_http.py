"""Hostile HTTP (issue 11, points 2, 10, 11, 12, 13, 14): generic answers, short escaped logs."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import aiohttp
import jwt
import pytest

from qa_ws_cli.auth.tokens import issue_token
from tests.conftest import ServerProcess, make_settings
from tests.server.hostile import exchange, log_lines, port_of, start_server

GENERIC_400 = {"error": "bad_request", "detail": "the request could not be parsed"}


@pytest.fixture
def server(tmp_path: Path) -> ServerProcess:
    return start_server(tmp_path)


def http_url(server: ServerProcess) -> str:
    return server.url.replace("ws", "http", 1).removesuffix("/ws")


def split(answer: bytes) -> tuple[str, bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


async def test_malformed_requests_get_a_generic_400_and_short_log_lines(
    server: ServerProcess,
) -> None:
    port = port_of(server)
    garbage = [
        b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
        b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",  # not a method token
    ] * 10
    for request in garbage:
        head, body = split(await exchange(port, request))
        assert head.split(" ")[1] == "400", head
        assert json.loads(body) == GENERIC_400
        assert "\r\nServer: qa-ws\r\n" in head
        assert re.search(r"\r\nX-Request-ID: [0-9a-f]{16}\r\n", head), head
    output = server.output()
    assert "Traceback" not in output
    assert not log_lines(server, "http ")  # no access line each: the bad_request lines count
    lines = log_lines(server, "bad_request")
    assert lines and len(lines) < 10  # rate-limited: about one a second, with a count
    assert sum(int(line.split("count=")[1].split()[0]) for line in lines) <= len(garbage)


async def test_an_unknown_expect_is_417_without_echoing_it(server: ServerProcess) -> None:
    for path in ("/healthz", "/nowhere"):
        expect = "Expect: <script>x</script>\r\nConnection: close"
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\n{expect}\r\n\r\n"
        head, body = split(await exchange(port_of(server), request.encode()))
        assert head.split(" ")[1] == "417", head
        assert json.loads(body) == {
            "error": "expectation_failed",
            "detail": "only Expect: 100-continue is supported",
        }
        assert "X-Request-ID: " in head


async def test_a_100_kb_token_is_not_echoed(server: ServerProcess) -> None:
    secret_part = "eyJhbGciOiJIUzI1NiJ9." + "A" * 100_000
    request = (
        f"GET /ws HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret_part}\r\n\r\n"
    ).encode()
    head, body = split(await exchange(port_of(server), request))
    assert head.split(" ")[1] == "400", head
    assert json.loads(body) == GENERIC_400
    assert b"AAAA" not in head.encode() + body and "AAAA" not in server.output()


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json; charset=nonexistent", b'{"message": "hi"}'),
        ("application/json; charset=punycode", b'{"message": "hi"}'),  # was a 500
        ("application/json; charset=utf-16", '{"message": "hi"}'.encode("utf-16")),
        ("application/json", b"[" * 30_000 + b"]" * 30_000),
        ("application/json", b'{"message": "hi", "n": ' + b"9" * 5000 + b"}"),
        ("application/json", b"\xff\xfe not json"),
        ("application/json", b'{"message": "bad \\ud800"}'),
        ("application/json", b'{"message": "hi", "extra": 1}'),
    ],
    ids=["charset", "punycode", "utf-16", "deep", "digits", "bytes", "surrogate", "unknown"],
)
async def test_admin_broadcast_answers_400_json_to_hostile_bodies(
    tmp_path: Path, server: ServerProcess, content_type: str, body: bytes
) -> None:
    admin = issue_token(make_settings(tmp_path), "ops", scope="admin")[0]
    headers = {"Authorization": f"Bearer {admin}", "Content-Type": content_type}
    async with (
        aiohttp.ClientSession() as http,
        http.post(http_url(server) + "/admin/broadcast", data=body, headers=headers) as resp,
    ):
        assert resp.status == 400
        expected = "unknown_fields" if b"extra" in body else "invalid_json"
        assert (await resp.json())["error"] == expected
    assert "Traceback" not in server.output()


async def test_an_admin_body_whose_content_encoding_does_not_decode_is_400(
    tmp_path: Path, server: ServerProcess
) -> None:
    admin = issue_token(make_settings(tmp_path), "ops", scope="admin")[0]
    headers = {
        "Authorization": f"Bearer {admin}",
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            http_url(server) + "/admin/broadcast", data=b"not gzip at all", headers=headers
        ) as resp,
    ):
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_json"
    await asyncio.sleep(0.2)  # what aiohttp does with the rest of the body comes after
    assert "Traceback" not in server.output() and "Unhandled" not in server.output()


async def test_every_response_says_server_qa_ws_and_the_page_forbids_framing(
    tmp_path: Path, server: ServerProcess
) -> None:
    base = http_url(server)
    tok = issue_token(make_settings(tmp_path), "alice")[0]
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/healthz", "/readyz", "/metrics", "/nope", "/ws"):
            async with http.get(base + path) as resp:
                assert resp.headers["Server"] == "qa-ws", path
                assert resp.headers["X-Content-Type-Options"] == "nosniff", path
                assert resp.headers["Referrer-Policy"] == "no-referrer", path
        async with http.get(base + "/") as resp:
            assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        async with http.ws_connect(server.url, headers={"Authorization": f"Bearer {tok}"}) as ws:
            assert ws._response.headers["Server"] == "qa-ws"  # the 101 too
    assert "Python/" not in server.output()


async def test_metrics_behind_a_token(tmp_path: Path) -> None:
    server = start_server(tmp_path, env={"WEBSOCKET_METRICS__TOKEN": "scrape-me-please"})
    url = http_url(server) + "/metrics"
    async with aiohttp.ClientSession() as http:
        for headers, status in (
            ({}, 401),
            ({"Authorization": "Bearer wrong"}, 401),
            ({"Authorization": "Bearer scrape-me-please"}, 200),
        ):
            async with http.get(url, headers=headers) as resp:
                assert resp.status == status
                if status == 200:
                    assert "qa_ws_connections" in await resp.text()
    # a token no client library would send: a byte that is not UTF-8 (it was a 500)
    raw = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xe9\r\n\r\n"
    head, body = split(await exchange(port_of(server), raw))
    assert head.split(" ")[1] == "401" and json.loads(body)["error"] == "invalid_token"
    assert "Traceback" not in server.output()


async def test_metrics_refused_on_a_public_bind_without_a_token(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--host", "0.0.0.0")
    url = f"http://127.0.0.1:{port_of(server)}"
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics") as resp:
            assert resp.status == 403
            assert (await resp.json())["error"] == "metrics_token_required"
        async with http.get(url + "/healthz") as resp:
            assert resp.status == 200


async def test_control_characters_never_reach_a_console_line(
    tmp_path: Path, server: ServerProcess
) -> None:
    evil_sub = "mallory\r\n12:00:00 INFO    FORGED-SUB\x1b[2J\x9b"
    tok = issue_token(make_settings(tmp_path), evil_sub)[0]
    async with aiohttp.ClientSession() as http:
        async with http.get(http_url(server) + "/files/%0d%0aFORGED-PATH%1b[2J") as resp:
            assert resp.status == 401
        async with http.ws_connect(server.url, headers={"Authorization": f"Bearer {tok}"}) as ws:
            assert (await ws.receive_json(timeout=10))["user"] == evil_sub
        for _ in range(200):  # the disconnect line comes once the server saw the close
            if log_lines(server, "disconnect"):
                break
            await asyncio.sleep(0.05)
    output = server.output()
    assert "\x1b" not in output and "\x9b" not in output and "\r" not in output
    for line in output.splitlines():
        assert not line.startswith(("FORGED", "12:00:00 INFO    FORGED")), line
    assert any("FORGED-PATH" in line and "refused" in line for line in output.splitlines())
    assert any("\\r\\n12:00:00" in line for line in log_lines(server, "connect"))
    assert any("\\x1b[2J" in line for line in log_lines(server, "disconnect"))


async def test_a_token_last_in_the_query_keeps_status_and_ms_in_the_access_line(
    tmp_path: Path, server: ServerProcess
) -> None:
    tok = issue_token(make_settings(tmp_path), "alice")[0]
    async with (
        aiohttp.ClientSession() as http,
        http.get(http_url(server) + f"/healthz?x=1&token={tok}") as resp,
    ):
        assert resp.status == 200
    lines: list[str] = []
    for _ in range(200):  # the access line is written just after the answer is sent
        lines = [line for line in log_lines(server, " http ") if "/healthz" in line]
        if lines:
            break
        await asyncio.sleep(0.05)
    assert lines and "token=[redacted]" in lines[0]
    assert "status=200" in lines[0] and "ms=" in lines[0]
    assert tok not in server.output()


async def test_a_token_percent_encoded_or_of_another_shape_is_redacted_from_log_lines(
    tmp_path: Path, server: ServerProcess
) -> None:
    tok = issue_token(make_settings(tmp_path), "alice")[0]
    spaced = jwt.encode({"sub": "alice"}, "k" * 32, "HS256", headers={"kid": "x"})
    spaced = "eyAi" + spaced[4:]  # a header JSON that starts with a space: not "eyJ"
    encoded = "".join(f"%{b:02x}" for b in tok[:3].encode()) + tok[3:]
    async with aiohttp.ClientSession() as http:
        for path in (f"/healthz?%74oken={encoded}", f"/healthz?t={spaced}", f"/files/{spaced}"):
            async with http.get(http_url(server) + path) as resp:
                assert resp.status in (200, 401)
    signatures = (tok.rsplit(".", 1)[1], spaced.rsplit(".", 1)[1])
    for _ in range(200):  # the access lines are written just after the answers are sent
        if len(log_lines(server, " http ")) >= 2 and log_lines(server, "refused"):
            break
        await asyncio.sleep(0.05)
    output = server.output()
    assert output.count("[redacted]") >= 3
    assert not any(signature in output for signature in signatures)


async def test_a_websocket_logs_connect_and_disconnect_and_no_access_line(
    tmp_path: Path, server: ServerProcess
) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {issue_token(make_settings(tmp_path), 'alice')[0]}"}
        async with http.ws_connect(server.url, headers=headers) as ws:
            await ws.receive()
        async with http.get(http_url(server) + "/healthz") as resp:
            assert resp.status == 200
    for _ in range(200):  # the access line of /healthz comes last
        if [line for line in log_lines(server, " http ") if "/healthz" in line]:
            break
        await asyncio.sleep(0.05)
    connects, disconnects = log_lines(server, " connect "), log_lines(server, " disconnect ")
    assert len(connects) == len(disconnects) == 1
    request_id = connects[0].split("request_id=")[1].split()[0]
    assert f"request_id={request_id}" in disconnects[0]
    assert not [line for line in log_lines(server, " http ") if "path=/ws" in line]


async def test_json_lines_carry_a_hostile_sub_intact_and_nothing_a_terminal_acts_on(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path, "--log-format", "json")
    evil_sub = 'mallory\r\n{"level": "error"}\x1b[2J\x9b\u2028é'
    tok = issue_token(make_settings(tmp_path), evil_sub)[0]
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.url, headers={"Authorization": f"Bearer {tok}"}) as ws,
    ):
        assert (await ws.receive_json(timeout=10))["user"] == evil_sub
        await ws.send_json({"type": "chat_message", "id": "c1", "content": "hello"})
        while (await ws.receive_json(timeout=10))["type"] != "agent_response":
            pass  # the demo agent streams its pieces first
    for _ in range(200):  # the disconnect line comes once the server saw the close
        if log_lines(server, '"disconnect"'):
            break
        await asyncio.sleep(0.05)
    output = server.output()
    for raw in ("\x1b", "\x9b", "\u2028", "\r"):
        assert raw not in output
    entries = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    by_event = {e["event"]: e for e in entries}
    assert by_event["connect"]["user"] == by_event["disconnect"]["user"] == evil_sub
    assert by_event["chat"]["reply_to"] == "c1" and by_event["chat"]["outcome"] == "ok"
    assert by_event["chat"]["level"] == "info" and by_event["chat"]["latency_ms"] >= 0
    assert "é" in output  # UTF-8, not \u00e9
    assert tok not in output


@pytest.mark.parametrize(
    "headers",
    [
        {},  # a plain GET, as a browser's address bar sends it
        {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"},  # no key
        {
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "99",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    ],
)
async def test_ws_without_a_websocket_handshake_gets_a_400_and_gives_its_slot_back(
    tmp_path: Path, headers: dict[str, str]
) -> None:
    server = start_server(tmp_path, env={"WEBSOCKET_SERVER__MAX_CONNECTIONS_PER_USER": "1"})
    auth = {"Authorization": f"Bearer {issue_token(make_settings(tmp_path), 'alice')[0]}"}
    async with aiohttp.ClientSession() as http:
        for _ in range(3):  # the user's one slot is given back each time
            async with http.get(
                server.url.replace("ws", "http", 1), headers=auth | headers
            ) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"] == "bad_request"
                assert resp.headers["X-Request-ID"]
        async with http.ws_connect(server.url, headers=auth) as ws:
            assert (await ws.receive_json(timeout=10))["event"] == "connected"
    for _ in range(200):  # the lines reach the server's output a little after the answers
        if len(log_lines(server, "error=bad_request")) == 3:
            break
        await asyncio.sleep(0.05)
    assert len(log_lines(server, "error=bad_request")) == 3
    output = server.output()
    assert "Traceback" not in output and "connection handler failed" not in output
    assert len(log_lines(server, " connect ")) == 1  # the refused ones never connected
    assert len(log_lines(server, " disconnect ")) <= 1


async def test_an_unrouted_request_has_the_same_id_in_its_answer_and_its_access_line(
    server: ServerProcess,
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(http_url(server) + "/nope", headers={"X-Request-ID": "probe-7"}) as resp,
    ):
        assert resp.status == 404 and resp.headers["X-Request-ID"] == "probe-7"
    for _ in range(200):  # the access line is written just after the answer is sent
        if log_lines(server, "path=/nope"):
            break
        await asyncio.sleep(0.05)
    assert "request_id=probe-7" in log_lines(server, "path=/nope")[0]


async def test_a_handshake_refused_at_the_caps_has_its_id_in_the_answer_and_the_log_line(
    tmp_path: Path,
) -> None:
    """Refusals made after admission (the server's and the user's caps) log the request's id,
    as the admission's own refusals do."""
    server = start_server(tmp_path, env={"WEBSOCKET_SERVER__MAX_CONNECTIONS": "1"})
    tok = issue_token(make_settings(tmp_path), "alice")[0]
    upgrade = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Authorization": f"Bearer {tok}",
        "X-Request-ID": "probe-full",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.url, headers={"Authorization": f"Bearer {tok}"}),
        http.get(server.url.replace("ws", "http", 1), headers=upgrade) as resp,
    ):
        assert resp.status == 503 and (await resp.json())["error"] == "server_full"
        assert resp.headers["X-Request-ID"] == "probe-full"
    for _ in range(200):  # the line reaches the server's output a little after the answer
        if log_lines(server, "error=server_full"):
            break
        await asyncio.sleep(0.05)
    assert "request_id=probe-full" in log_lines(server, "error=server_full")[0]
