"""After the upgrade (issue 11, points 9 and 15): duplicate keys, and ``--no-auth`` users."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from qa_ws_cli.auth.tokens import issue_token
from tests.conftest import make_settings
from tests.server.hostile import closed_by_server, open_socket, port_of, start_server


async def test_a_key_twice_in_a_frame_is_invalid_json(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    tok = issue_token(make_settings(tmp_path), "alice")[0]
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(server.url, headers={"Authorization": f"Bearer {tok}"}) as ws,
    ):
        await ws.receive_json(timeout=10)
        await ws.send_str('{"type": "ping", "id": "a", "type": "chat_message", "content": "x"}')
        answer = await ws.receive_json(timeout=10)
        assert (answer["type"], answer["code"]) == ("error", "invalid_json")
        await ws.send_str('{"type": "ping", "id": "b"}')  # still open, still answering
        assert (await ws.receive_json(timeout=10))["type"] == "pong"


async def test_no_auth_gives_each_connection_its_own_user_and_the_address_cap_holds(
    tmp_path: Path,
) -> None:
    server = start_server(
        tmp_path, "--no-auth", env={"WEBSOCKET_SERVER__MAX_CONNECTIONS_PER_IP": "3"}
    )
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(server.url) as one, http.ws_connect(server.url) as two:
            first, second = await one.receive_json(timeout=10), await two.receive_json(timeout=10)
            assert first["user"].startswith("anon-") and second["user"].startswith("anon-")
            assert first["user"] != second["user"]
            reader, _ = await open_socket(port_of(server))  # the third slot of 127.0.0.1
            extra, _ = await open_socket(port_of(server))  # over the cap: closed at once
            assert await closed_by_server(extra, 5)
            reader.feed_eof()
        # the session id alone resumes a session, as its user (the only credential there is)
        resume = f"{server.url}?session_id={first['session_id']}&last_seq=0"
        async with http.ws_connect(resume) as again:
            back = await again.receive_json(timeout=10)
            assert back["resumed"] is True and back["user"] == first["user"]
