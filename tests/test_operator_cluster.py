"""The operator's toolkit across two real ``qa-ws serve`` processes on one real Redis:
notifications to a user on the other instance or offline, the inbox's bound, connections
listed and closed wherever they are, and ``qa-ws status`` against the cluster."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from typer.testing import CliRunner

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.cli.main import app
from tests.conftest import ServerProcess, make_settings, server_env
from tests.redis_server import RedisServer
from tests.server.wire import close_code, next_event, ping

pytestmark = pytest.mark.timeout(90)
Spawn = Callable[..., ServerProcess]
runner = CliRunner()


def base(server: ServerProcess) -> str:
    return server.url.replace("ws://", "http://").removesuffix("/ws")


def token(tmp_path: Path, sub: str, scope: str = "chat") -> str:
    return issue_token(make_settings(tmp_path), sub, scope=scope)[0]


@pytest.fixture
def pair(
    spawn_server: Spawn, tmp_path: Path, redis_server: RedisServer
) -> tuple[ServerProcess, ServerProcess]:
    def one(name: str) -> ServerProcess:
        env = server_env(
            tmp_path,
            WEBSOCKET_STORE__URL=redis_server.url,
            WEBSOCKET_SERVER__NAME=name,
            WEBSOCKET_NOTIFICATIONS__INBOX_SIZE="2",
        )
        return spawn_server(env=env)

    return one("qa-ws-a"), one("qa-ws-b")


class Admin:
    def __init__(self, http: aiohttp.ClientSession, tmp_path: Path) -> None:
        self.http = http
        self.headers = {"Authorization": f"Bearer {token(tmp_path, 'ops', 'admin')}"}

    async def post(self, server: ServerProcess, path: str, body: Any) -> dict[str, Any]:
        async with self.http.post(base(server) + path, json=body, headers=self.headers) as resp:
            assert resp.status in (200, 202), await resp.text()
            answer: dict[str, Any] = await resp.json()
            return answer

    async def get(self, server: ServerProcess, path: str) -> dict[str, Any]:
        async with self.http.get(base(server) + path, headers=self.headers) as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
            return answer


async def open_ws(
    http: aiohttp.ClientSession, server: ServerProcess, tmp_path: Path, sub: str
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    auth = {"Authorization": f"Bearer {token(tmp_path, sub)}"}
    ws = await http.ws_connect(server.url, headers=auth)
    hello = await next_event(ws)
    assert hello["event"] == "connected"
    return ws, hello


async def test_notify_reaches_a_user_connected_to_the_other_instance(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    a, b = pair
    ws, _ = await open_ws(http, b, tmp_path, "alice")
    answer = await Admin(http, tmp_path).post(
        a, "/admin/notify", {"user": "alice", "message": "build green", "data": {"id": 7}}
    )
    assert answer == {"delivered_to": 1, "stored": False}
    note = await next_event(ws)
    assert (note["event"], note["message"], note["data"], note["seq"]) == (
        "notification",
        "build green",
        {"id": 7},
        1,
    )
    await ws.close()


async def test_an_offline_user_gets_it_once_on_either_instance(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    a, b = pair
    admin = Admin(http, tmp_path)
    assert await admin.post(a, "/admin/notify", {"user": "bea", "message": "while away"}) == {
        "delivered_to": 0,
        "stored": True,
    }
    ws, _ = await open_ws(http, b, tmp_path, "bea")  # kept in Redis: B hands it over
    note = await next_event(ws)
    assert (note["event"], note["message"]) == ("notification", "while away")
    await ws.close()
    for server in (a, b):  # taken once: neither instance has it any more
        again, _ = await open_ws(http, server, tmp_path, "bea")
        await ping(again, "p1")  # the next event is the pong, not the notification
        await again.close()


async def test_a_full_inbox_drops_the_oldest(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    a, b = pair
    admin = Admin(http, tmp_path)
    for i, server in enumerate((a, b, a)):  # inbox_size is 2 on both
        await admin.post(server, "/admin/notify", {"user": "cy", "message": f"n{i}"})
    ws, _ = await open_ws(http, b, tmp_path, "cy")
    assert [(await next_event(ws))["message"] for _ in range(2)] == ["n1", "n2"]
    await ping(ws, "p1")
    await ws.close()
    async with http.get(base(a) + "/metrics") as resp:
        assert 'qa_ws_notifications_dropped_total{reason="overflow"} 1.0' in await resp.text()


async def test_connections_and_disconnect_reach_the_other_instance(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    a, b = pair
    admin = Admin(http, tmp_path)
    ws, hello = await open_ws(http, b, tmp_path, "dee")
    listing = await admin.get(a, "/admin/connections")
    assert {i["name"] for i in listing["instances"]} == {"qa-ws-a", "qa-ws-b"}
    (row,) = [c for c in listing["connections"] if c["user"] == "dee"]
    assert row["connection_id"] == hello["connection_id"]
    assert row["instance"] == hello["server"]["instance"]  # B's, though A was asked

    answer = await admin.post(a, "/admin/disconnect", {"user": "dee"})
    assert answer == {"disconnected": 1}
    assert await close_code(ws) == 4002
    listing = await admin.get(a, "/admin/connections")
    assert not [c for c in listing["connections"] if c["user"] == "dee"]


def test_status_shows_the_cluster_and_a_dead_url_is_one_line(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    a, _ = pair
    admin_token = token(tmp_path, "ops", "admin")
    result = runner.invoke(app, ["status", "-u", a.url, "-t", admin_token, "--interval", "0.2"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "ready" in out and "store ok" in out and "qa-ws-a" in out and "qa-ws-b" in out
    listed = runner.invoke(app, ["connections", "-u", base(a), "-t", admin_token, "--json"])
    assert listed.exit_code == 0
    assert len(json.loads(listed.output)["instances"]) == 2

    dead = runner.invoke(app, ["status", "-u", "http://127.0.0.1:9"])
    assert dead.exit_code == 4
    assert dead.output.count("\n") == 1 and "cannot reach http://127.0.0.1:9" in dead.output
