"""``configs/nginx.conf`` itself, run by real nginx in front of two real ``qa-ws serve`` processes.

The shipped file is rendered for the test run by swapping a few values it writes exactly as
checked here (upstream addresses, listen ports, certificate paths, access log path) on its
uncommented lines, then included in a test-only main config (pid, error log, temp paths). Every
check goes through nginx: TLS with a self-signed certificate, a chat over ``wss://`` with each
token carrier, the redirect from plain HTTP, a token-free access log, plain round-robin over
two instances that share one real Redis (a conversation whose every reconnect lands on the
other instance keeps one session and gets exactly what it missed), and nginx's request id in
the server's log.

Without an ``nginx`` binary the tests skip, unless ``QA_WS_REQUIRE_ALL=1`` (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import aiohttp
import pytest
from yarl import URL

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.client.connection import ClientOptions, QaWsClient
from qa_ws_cli.protocol.events import SystemEvent
from tests.conftest import ServerProcess, free_port, make_settings, self_signed, server_env
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "nginx.conf"
WAIT = 10.0  # the longest any single wait lasts
QUESTION = "how do I test a login form?"
Spawn = Callable[..., ServerProcess]


def unavailable(reason: str) -> NoReturn:
    """Skip when nginx cannot run here; fail instead where everything must run (CI)."""
    if os.environ.get("QA_WS_REQUIRE_ALL") == "1":
        pytest.fail(f"{reason} (QA_WS_REQUIRE_ALL=1: the nginx tests must run)", pytrace=False)
    pytest.skip(reason)


def nginx_binary() -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = shutil.which("nginx", path=path)
    if found is None:
        unavailable("no nginx binary (apt-get install nginx-light)")
    return found


def render(source: str, swaps: dict[str, tuple[str, int]]) -> str:
    """``source`` with each key replaced by its value on uncommented lines, exactly n times."""
    counts = dict.fromkeys(swaps, 0)
    lines = []
    for line in source.splitlines(keepends=True):
        if not line.lstrip().startswith("#"):
            for old, (new, _) in swaps.items():
                counts[old] += line.count(old)
                line = line.replace(old, new)
        lines.append(line)
    for old, (_, expected) in swaps.items():
        assert counts[old] == expected, (
            f"{CONFIG.name}: expected {expected} uncommented occurrence(s) of {old!r}, "
            f"found {counts[old]}: keep the values the test swaps as they are documented"
        )
    return "".join(lines)


def main_config(prefix: Path, site: Path, nginx: str) -> str:
    """A minimal nginx.conf of the test's own around the rendered site (no system paths)."""
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True, timeout=WAIT).stderr
    temp = [
        f"    {module}_temp_path {prefix / module};"
        for module in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        if module == "client_body" or f"--without-http_{module}_module" not in built
    ]
    # as root, nginx would run its workers as nobody, who cannot enter pytest's tmp dirs
    user = ["user root;"] if os.geteuid() == 0 else []
    return "\n".join(
        [
            *user,
            "worker_processes 1;",
            "worker_shutdown_timeout 5s;",
            f"pid {prefix / 'nginx.pid'};",
            f"lock_file {prefix / 'nginx.lock'};",
            f"error_log {prefix / 'error.log'} notice;",
            "events { worker_connections 256; }",
            "http {",
            "    access_log off;",
            *temp,
            f"    include {site};",
            "}",
            "",
        ]
    )


@dataclass
class Stack:
    servers: dict[str, ServerProcess]  # by server name: qa-ws-a, qa-ws-b
    https_port: int
    http_port: int
    access_log: Path
    error_log: Path
    tmp_path: Path

    @property
    def wss(self) -> str:
        return f"wss://127.0.0.1:{self.https_port}/ws"

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def token(self, sub: str = "alice") -> str:
        return issue_token(make_settings(self.tmp_path), sub)[0]

    def port_of(self, name: str) -> int:
        port = URL(self.servers[name].url).port
        assert port is not None
        return port

    def access_lines(self, path: str) -> list[str]:
        text = self.access_log.read_text() if self.access_log.exists() else ""
        return [line for line in text.splitlines() if f'"GET {path} ' in line]


def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


async def aeventually(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    return await asyncio.to_thread(eventually, check, what, timeout)


def unverified() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.fixture
def stack(spawn_server: Spawn, tmp_path: Path, redis_server: RedisServer) -> Iterator[Stack]:
    nginx = nginx_binary()
    servers = {
        name: spawn_server(
            "--demo-latency-ms",
            "20",
            env=server_env(
                tmp_path, WEBSOCKET_SERVER__NAME=name, WEBSOCKET_STORE__URL=redis_server.url
            ),
        )
        for name in ("qa-ws-a", "qa-ws-b")
    }
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    cert, key = self_signed(prefix)
    https_port, http_port = free_port(), free_port()
    access_log = prefix / "access.log"
    site = prefix / "qa-ws.conf"
    site.write_text(
        render(
            CONFIG.read_text(),
            {
                "127.0.0.1:8765": (f"127.0.0.1:{URL(servers['qa-ws-a'].url).port}", 1),
                "127.0.0.1:8766": (f"127.0.0.1:{URL(servers['qa-ws-b'].url).port}", 1),
                "listen 443 ssl;": (f"listen 127.0.0.1:{https_port} ssl;", 1),
                "listen 80;": (f"listen 127.0.0.1:{http_port};", 1),
                "/etc/ssl/certs/qa-ws.fullchain.pem": (str(cert), 1),
                "/etc/ssl/private/qa-ws.key": (str(key), 1),
                "/var/log/nginx/qa-ws.access.log": (str(access_log), 2),
            },
        )
    )
    main = prefix / "nginx.conf"
    main.write_text(main_config(prefix, site, nginx))
    output = prefix / "nginx.out"
    with output.open("w") as out:
        proc = subprocess.Popen(
            [nginx, "-p", f"{prefix}/", "-c", str(main), "-g", "daemon off;"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def answers() -> bool:
        if proc.poll() is not None:
            error_log = prefix / "error.log"
            logs = output.read_text() + (error_log.read_text() if error_log.exists() else "")
            raise AssertionError(f"nginx exited with {proc.returncode}:\n{logs}")
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{https_port}/healthz", timeout=2, context=unverified()
            ) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    try:
        eventually(answers, "nginx to answer /healthz")
        yield Stack(servers, https_port, http_port, access_log, prefix / "error.log", tmp_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)  # graceful: finish requests, close, exit
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(WAIT)


def client(stack: Stack, carrier: Any = "header", **kwargs: Any) -> QaWsClient:
    return QaWsClient(
        ClientOptions(url=stack.wss, token=stack.token(), carrier=carrier, ssl=False, **kwargs)
    )


@dataclass
class Hello:
    connected: dict[str, Any]  # the `connected` event
    seq: int | None  # the seq of the chat's answer
    request_id: str  # X-Request-ID of the handshake's answer
    protocol: str | None  # the subprotocol the server selected


async def hello(
    stack: Stack,
    *,
    sub: str = "alice",
    carrier: str = "header",
    **query: str,
) -> Hello:
    """Connect through nginx, chat once, close."""
    token = stack.token(sub)
    headers, protocols = {}, ("qa-ws.v1",)
    if carrier == "header":
        headers["Authorization"] = f"Bearer {token}"
    elif carrier == "subprotocol":
        protocols = ("qa-ws.v1", "bearer." + token)
    else:
        query["token"] = token
    handshake: dict[str, str] = {}

    async def on_request_end(*args: Any) -> None:
        handshake.update(args[2].response.headers)

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_request_end)
    connector = aiohttp.TCPConnector(ssl=False)
    async with (
        aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as http,
        http.ws_connect(
            URL(stack.wss).with_query(query),
            headers=headers,
            protocols=protocols,
            timeout=aiohttp.ClientWSTimeout(ws_close=WAIT),
        ) as ws,
    ):
        connected = await ws.receive_json(timeout=WAIT)
        assert connected["event"] == "connected"
        await ws.send_json({"type": "chat_message", "id": "q1", "content": QUESTION})
        while (event := await ws.receive_json(timeout=WAIT))["type"] in (
            "agent_delta",
            "agent_event",
        ):
            pass
        assert event["type"] == "agent_response", event
        assert event["reply_to"] == "q1"
        assert event["content"]
        return Hello(connected, event.get("seq"), handshake["X-Request-ID"], ws.protocol)


# -- the checks, each against the one stack ----------------------------------------------------


async def check_health_and_metrics(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/healthz", "/readyz", "/metrics"):
            async with http.get(stack.https + path, ssl=False) as response:
                assert response.status == 200, path
                body = await response.text()
            if path == "/healthz":
                assert json.loads(body) == {"status": "ok"}
            elif path == "/readyz":
                assert json.loads(body)["checks"]["accepting"] is True
            else:
                assert "qa_ws_connections" in body


async def check_plain_http_redirects_to_https(stack: Stack) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{stack.http_port}/ws?x=1", allow_redirects=False) as response,
    ):
        assert response.status == 301
        assert response.headers["Location"] == "https://127.0.0.1/ws?x=1"


async def check_chat_with_the_authorization_header(stack: Stack) -> None:
    async with client(stack, "header") as qa:
        assert qa.connected is not None
        assert qa.connected.server["name"] in stack.servers
        assert (await qa.ask(QUESTION, timeout=WAIT)).content


async def check_chat_with_the_subprotocol_carrier(stack: Stack) -> None:
    """nginx passes ``Sec-WebSocket-Protocol`` both ways: the server selects ``qa-ws.v1``."""
    done = await hello(stack, carrier="subprotocol")
    assert done.protocol == "qa-ws.v1"


async def check_query_token_stays_out_of_the_logs(stack: Stack) -> None:
    token = stack.token()
    qa = QaWsClient(ClientOptions(url=stack.wss, token=token, carrier="query", ssl=False))
    async with qa:
        assert (await qa.ask(QUESTION, timeout=WAIT)).content
        connection = qa.connected.connection_id if qa.connected else None
    server_logs = "".join(server.output() for server in stack.servers.values())
    assert f"connection={connection}" in server_logs
    # nginx writes a WebSocket's access log line when the connection ends
    await aeventually(lambda: stack.access_lines("/ws"), "the /ws access log lines")
    for log in (stack.access_log, stack.error_log):
        text = log.read_text()
        assert token not in text, log
        assert "token=" not in text, log
    assert token not in server_logs


async def check_the_client_library_resumes_through_nginx(stack: Stack) -> None:
    qa = client(stack, reconnect=True, backoff_base=0.05)
    async with qa:
        first = qa.connected
        assert first is not None
        assert not first.resumed
        await qa.ask(QUESTION, timeout=WAIT)
        seq = qa.last_seq
        assert seq > 0
        events = qa.events()
        await qa.drop()  # a network failure: no close frame; the client reconnects by itself

        async def reconnected() -> SystemEvent:
            async for event in events:
                if (
                    isinstance(event, SystemEvent)
                    and event.event == "connected"
                    and event.connection_id != first.connection_id
                ):
                    return event
            raise AssertionError("unreachable")

        again = await asyncio.wait_for(reconnected(), WAIT)
        assert again.resumed is True
        assert again.session_id == first.session_id  # on whichever instance it landed
        assert qa.reconnects == 1
        assert (await qa.ask("and a signup form?", timeout=WAIT)).content
        assert qa.last_seq > seq


async def check_every_reconnect_lands_on_the_other_instance(stack: Stack) -> None:
    """Round-robin, no stickiness: each reconnect reaches the other instance, and the session
    goes with it. Each time the client leaves with a question asked and unanswered; the answer
    completes while it is away and the next instance replays exactly that, once."""
    headers = {"Authorization": f"Bearer {stack.token('dana')}"}
    session: dict[str, str] = {}
    instances: list[str] = []
    last_seq = 0
    async with aiohttp.ClientSession() as http:
        for round_ in range(4):
            ws = await http.ws_connect(
                URL(stack.wss).with_query(session), headers=headers, ssl=False
            )
            hello = await ws.receive_json(timeout=WAIT)
            instances.append(hello["server"]["name"])
            if round_:
                assert hello["resumed"] is True and hello["replayed"] == 1
                assert hello["session_id"] == session["session_id"]
                missed = await ws.receive_json(timeout=WAIT)
                assert missed["type"] == "agent_response" and missed["reply_to"] == f"q{round_}"
                assert missed["seq"] == last_seq + 1
                last_seq = missed["seq"]
            await ws.send_json(
                {"type": "chat_message", "id": f"q{round_ + 1}", "content": QUESTION}
            )
            await ws.close()  # before the answer (20 ms): it completes into the session
            await asyncio.sleep(0.3)
            session = {"session_id": hello["session_id"], "last_seq": str(last_seq)}
    assert set(instances) == set(stack.servers)
    assert all(a != b for a, b in itertools.pairwise(instances)), instances


async def check_request_id_reaches_the_server_log(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http, http.get(stack.https + "/healthz", ssl=False) as r:
        health_id = r.headers["X-Request-ID"]  # nginx's $request_id, echoed by qa-ws
    assert re.fullmatch(r"[0-9a-f]{32}", health_id)
    done = await hello(stack)
    assert re.fullmatch(r"[0-9a-f]{32}", done.request_id)
    name = done.connected["server"]["name"]
    server = stack.servers[name]
    await aeventually(
        lambda: f"connect request_id={done.request_id} " in server.output(),
        "the server's connect line with nginx's request id",
    )
    # round-robin: the health check may have reached either instance
    assert any(f"request_id={health_id} " in s.output() for s in stack.servers.values())
    # and nginx's access log carries the same ids, and the instance that answered
    line = await aeventually(
        lambda: [x for x in stack.access_lines("/ws") if f"rid={done.request_id}" in x],
        "the access log line with the same request id",
    )
    assert " 101 " in line[0]
    assert f"upstream=127.0.0.1:{stack.port_of(name)} " in line[0]
    assert [x for x in stack.access_lines("/healthz") if f"rid={health_id}" in x]


async def test_nginx_in_front_of_two_instances(stack: Stack) -> None:
    """One nginx and two servers (a few seconds to start) for all checks, in order."""
    await check_health_and_metrics(stack)
    await check_plain_http_redirects_to_https(stack)
    await check_chat_with_the_authorization_header(stack)
    await check_chat_with_the_subprotocol_carrier(stack)
    await check_query_token_stays_out_of_the_logs(stack)
    await check_the_client_library_resumes_through_nginx(stack)
    await check_every_reconnect_lands_on_the_other_instance(stack)
    await check_request_id_reaches_the_server_log(stack)


def test_config_names_what_the_test_swaps_and_logs_no_query() -> None:
    text = CONFIG.read_text()
    for value in ("127.0.0.1:8765", "127.0.0.1:8766", "`listen 80;`", "`listen 443 ssl;`"):
        assert value in text, value
    log_format = text[text.index("log_format qa_ws") :].split(";")[0]
    assert "$uri" in log_format
    for leaky in ("$request ", "$request_uri", "$args", "$query_string", "$arg_", "$http_referer"):
        assert leaky not in log_format, leaky
