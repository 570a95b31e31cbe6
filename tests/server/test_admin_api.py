"""The admin API on one real server (memory store): notify, the inbox, connections,
disconnect, and every refusal a bad body gets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Running, make_settings, run_gateway
from tests.server.wire import close_code, connect, metric, next_event, ping

pytestmark = pytest.mark.timeout(60)


def admin(running: Running) -> dict[str, str]:
    return {"Authorization": f"Bearer {running.token('ops', scope='admin')}"}


async def post(
    http: aiohttp.ClientSession, running: Running, path: str, body: Any
) -> tuple[int, dict[str, Any]]:
    kwargs = {"data": body} if isinstance(body, str | bytes) else {"json": body}
    async with http.post(running.http + path, headers=admin(running), **kwargs) as resp:
        return resp.status, await resp.json()


@pytest.fixture
async def small_inbox(tmp_path: Path) -> Any:
    settings = make_settings(tmp_path, notifications={"inbox_size": 2, "max_data_bytes": 64})
    async with run_gateway(settings) as running:
        yield running


async def test_a_live_user_gets_a_replayable_notification_on_each_connection(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    ws1, _ = await connect(http, gateway, "alice")
    ws2, _ = await connect(http, gateway, "alice")
    other, _ = await connect(http, gateway, "bob")
    status, body = await post(
        http, gateway, "/admin/notify", {"user": "alice", "message": "run done", "data": {"n": 1}}
    )
    assert (status, body) == (202, {"delivered_to": 2, "stored": False})
    first, second = await next_event(ws1), await next_event(ws2)
    for event in (first, second):
        assert event["type"] == "system_event" and event["event"] == "notification"
        assert (event["message"], event["data"], event["seq"]) == ("run done", {"n": 1}, 1)
    assert first["id"] == second["id"] and len(first["id"]) == 32
    await ping(other, "p1")  # bob got nothing before his pong
    assert await metric(http, gateway, 'qa_ws_notifications_total{outcome="delivered"}') == 2
    for ws in (ws1, ws2, other):
        await ws.close()


async def test_an_offline_user_gets_it_once_at_the_next_connect(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    status, body = await post(http, gateway, "/admin/notify", {"user": "carol", "message": "hi"})
    assert (status, body) == (202, {"delivered_to": 0, "stored": True})
    ws, hello = await connect(http, gateway, "carol")
    note = await next_event(ws)
    assert (note["event"], note["message"], note["seq"]) == ("notification", "hi", 1)
    assert "data" not in note
    await ws.close()
    # resuming the session replays it (it is a session event) ...
    params = {"session_id": hello["session_id"], "last_seq": "0"}
    again, resumed = await connect(http, gateway, "carol", params=params)
    assert resumed["replayed"] == 1 and (await next_event(again))["id"] == note["id"]
    await again.close()
    # ... but a fresh connect does not get it from the inbox a second time
    fresh, _ = await connect(http, gateway, "carol")
    await ping(fresh, "p1")
    await fresh.close()
    assert await metric(http, gateway, 'qa_ws_notifications_total{outcome="stored"}') == 1


async def test_a_full_inbox_drops_the_oldest_and_counts_it(
    small_inbox: Running, http: aiohttp.ClientSession
) -> None:
    for text in ("one", "two", "three"):
        status, body = await post(
            http, small_inbox, "/admin/notify", {"user": "dan", "message": text}
        )
        assert (status, body["stored"]) == (202, True)
    ws, _ = await connect(http, small_inbox, "dan")
    got = [(await next_event(ws))["message"] for _ in range(2)]
    assert got == ["two", "three"]
    await ping(ws, "p1")
    await ws.close()
    dropped = 'qa_ws_notifications_dropped_total{reason="overflow"}'
    assert await metric(http, small_inbox, dropped) == 1


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"user": "alice", "message": "x", "extra": 1}, "unknown_fields"),
        ({"user": "alice", "message": "x", "data": {"k": "v" * 100}}, "data_too_large"),
        ({"user": "alice", "message": "x", "data": [1, 2]}, "invalid_data"),
        ({"user": "al\x1bice", "message": "x"}, "invalid_user"),
        ({"user": "", "message": "x"}, "invalid_user"),
        ({"user": "u" * 257, "message": "x"}, "invalid_user"),
        ({"user": 7, "message": "x"}, "invalid_user"),
        ({"user": "alice", "message": "   "}, "invalid_message"),
        ({"user": "alice"}, "invalid_message"),
        (["user", "alice"], "invalid_request"),
        ("{not json", "invalid_json"),
        ('{"user": "a", "message": "x", "data": {"n": 1' + "0" * 200 + "}}", "invalid_json"),
        ("[" * 100_00 + "]" * 100_00, "invalid_json"),
        # a lone surrogate would have poisoned the user's inbox (1011 at their next connect)
        ('{"user": "alice", "message": "bad \\ud800"}', "invalid_json"),
        ('{"user": "alice", "message": "x", "data": {"k": "\\udfff"}}', "invalid_json"),
        ('{"user": "alice", "message": "x", "message": "y"}', "invalid_json"),  # duplicate key
        ('{"user": "alice", "message": "x", "data": {"n": NaN}}', "invalid_json"),
        ('{"user": "alice", "message": "x", "data": {"n": 1e999999}}', "invalid_json"),
        ('{"user": "alice", "message": "x", "data": {"n": 0.' + "1" * 200 + "}}", "invalid_json"),
    ],
)
async def test_bad_notify_bodies_get_400_and_change_nothing(
    small_inbox: Running, http: aiohttp.ClientSession, body: Any, error: str
) -> None:
    status, answer = await post(http, small_inbox, "/admin/notify", body)
    assert (status, answer["error"]) == (400, error)
    assert answer["detail"]
    assert small_inbox.gateway.store.inbox.__len__() == 0  # type: ignore[attr-defined]


async def test_notify_needs_an_admin_token(gateway: Running, http: aiohttp.ClientSession) -> None:
    body = {"user": "alice", "message": "x"}
    headers = {"Authorization": f"Bearer {gateway.token('alice')}"}
    async with http.post(gateway.http + "/admin/notify", json=body, headers=headers) as resp:
        assert resp.status == 403 and (await resp.json())["error"] == "insufficient_scope"


async def test_connections_lists_each_live_connection_and_disconnect_closes_with_4002(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    ws, hello = await connect(http, gateway, "erin")
    keep, _ = await connect(http, gateway, "frank")
    await ping(ws, "p1")
    url = gateway.http + "/admin/connections"
    async with http.get(url, params={"user": "erin"}, headers=admin(gateway)) as resp:
        listing = await resp.json()
    (row,) = listing["connections"]
    assert row["user"] == "erin" and row["connection_id"] == hello["connection_id"]
    assert row["session_id"] == hello["session_id"] and row["remote"] == "127.0.0.1"
    assert row["instance"] == hello["server"]["instance"] == listing["instances"][0]["instance"]
    assert (row["frames_in"], row["frames_out"], row["in_flight"]) == (1, 2, 0)
    assert row["connected_since"].endswith("Z")
    async with http.get(url, params={"sub": "erin"}, headers=admin(gateway)) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "unknown_fields"
    token = admin(gateway)["Authorization"].removeprefix("Bearer ")  # the last-resort carrier
    async with http.get(url, params={"user": "erin", "token": token}) as resp:
        assert resp.status == 200 and len((await resp.json())["connections"]) == 1

    status, answer = await post(
        http, gateway, "/admin/disconnect", {"connection_id": hello["connection_id"]}
    )
    assert (status, answer) == (200, {"disconnected": 1})
    assert await close_code(ws) == 4002
    await ping(keep, "p2")  # frank's connection is untouched
    assert await metric(http, gateway, 'qa_ws_closes_total{code="4002"}') == 1
    await keep.close()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({}, "invalid_request"),
        ({"user": "a", "connection_id": "0123456789abcdef"}, "invalid_request"),
        ({"connection_id": "../etc"}, "invalid_connection_id"),
        ({"user": "a\nb"}, "invalid_user"),
        ({"user": "a", "force": True}, "unknown_fields"),
    ],
)
async def test_bad_disconnect_bodies_get_400(
    gateway: Running, http: aiohttp.ClientSession, body: Any, error: str
) -> None:
    status, answer = await post(http, gateway, "/admin/disconnect", body)
    assert (status, answer["error"]) == (400, error)


async def test_the_first_delta_is_timed(gateway: Running, http: aiohttp.ClientSession) -> None:
    ws, _ = await connect(http, gateway, "gina")
    await ws.send_json({"type": "chat_message", "id": "q1", "content": "hello there"})
    while (await next_event(ws))["type"] != "agent_response":
        pass
    await ws.close()
    assert await metric(http, gateway, "qa_ws_first_delta_seconds_count") == 1


async def test_a_paired_surrogate_escape_is_one_character_and_stored(
    small_inbox: Running, http: aiohttp.ClientSession
) -> None:
    body = '{"user": "alice", "message": "ok \\ud83d\\ude00"}'  # U+1F600, as JSON escapes it
    status, answer = await post(http, small_inbox, "/admin/notify", body)
    assert (status, answer["stored"]) == (202, True)
