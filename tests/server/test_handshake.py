"""The handshake over real sockets: token carriers, subprotocol, origin, refusals, endpoints."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from qa_ws_cli.auth import RevocationList
from qa_ws_cli.client import ClientOptions, QaWsClient
from qa_ws_cli.errors import HandshakeRefused
from tests.conftest import SECRET, Running, make_settings, run_gateway
from tests.server.wire import RawPeer


async def refused(
    http: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, dict[str, Any], Any]:
    async with http.get(
        url,
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            **kwargs.pop("headers", {}),
        },
        **kwargs,
    ) as resp:
        return resp.status, await resp.json(), resp.headers


@pytest.mark.parametrize("carrier", ["header", "subprotocol", "query"])
async def test_chat_round_trip_with_each_token_carrier(gateway: Running, carrier: str) -> None:
    options = ClientOptions(gateway.url, token=gateway.token("alice"), carrier=carrier)  # type: ignore[arg-type]
    async with QaWsClient(options) as client:
        assert client.connected is not None and client.connected.user == "alice"
        deltas: list[str] = []
        answer = await client.ask("how do I test a login form?", timeout=10, on_delta=deltas.append)
    assert "login form" in answer.content
    assert len(deltas) > 1 and "".join(deltas) == answer.content
    assert answer.seq == 1 and answer.latency_ms > 0


async def test_subprotocol_selection_never_echoes_the_token(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    token = gateway.token()
    async with http.ws_connect(gateway.url, protocols=("qa-ws.v1", f"bearer.{token}")) as ws:
        assert ws.protocol == "qa-ws.v1"
        hello = await ws.receive_json(timeout=5)
        assert hello["event"] == "connected" and "seq" not in hello
        assert token not in json.dumps(hello)


async def test_the_upgrade_carries_its_headers_and_the_connection_works_after_it(
    gateway: Running,
) -> None:
    """The server drops the 101's headers once sent (memory of idle connections): what the
    client received, and everything after it, must not change."""
    peer = await RawPeer.open(gateway, gateway.token())
    head = peer.head.decode().lower()
    for line in (
        "upgrade: websocket",
        "sec-websocket-protocol: qa-ws.v1",
        "x-content-type-options: nosniff",
        "referrer-policy: no-referrer",
        "server: qa-ws",
        "x-request-id: ",
    ):
        assert f"\r\n{line}" in head
    hello = await peer.read_frame()
    assert hello is not None and json.loads(hello.payload)["event"] == "connected"
    peer.send_text(json.dumps({"type": "chat_message", "id": "m1", "content": "still here?"}))
    answer = await peer.read_frame()
    assert answer is not None and json.loads(answer.payload)["reply_to"] == "m1"
    peer.writer.close()


async def test_connected_event_describes_the_connection(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(
        gateway.url, headers={"Authorization": f"Bearer {gateway.token('zoe')}"}
    ) as ws:
        hello = await ws.receive_json(timeout=5)
    assert hello["type"] == "system_event" and hello["event"] == "connected"
    assert hello["user"] == "zoe" and hello["resumed"] is False and hello["replayed"] == 0
    assert hello["session_id"] and hello["connection_id"]
    assert hello["server"]["protocol"] == 1
    assert hello["limits"]["max_message_bytes"] == 64 * 1024


async def test_origin_outside_the_allowlist_is_refused(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await refused(
        http,
        gateway.url,
        headers={"Origin": "https://evil.example", "Authorization": f"Bearer {gateway.token()}"},
    )
    assert (status, body["error"]) == (403, "origin_not_allowed")
    async with http.ws_connect(
        gateway.url,
        origin="http://localhost:8765",
        headers={"Authorization": f"Bearer {gateway.token()}"},
    ) as ws:
        assert (await ws.receive_json(timeout=5))["event"] == "connected"


NOW = int(time.time())


def _token(payload: dict[str, Any], key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg)


@pytest.mark.parametrize(
    ("token", "error"),
    [
        (None, "missing_token"),
        (_token({"sub": "a", "iat": NOW - 99, "exp": NOW - 9}), "token_expired"),
        (
            _token({"sub": "a", "iat": NOW, "exp": NOW + 86400, "nbf": NOW + 864009}),
            "invalid_token",
        ),
        (
            _token({"sub": "a", "iat": NOW, "exp": NOW + 86400}, key="wrong-" + "k" * 40),
            "invalid_token",
        ),
        (
            jwt.encode({"sub": "a", "iat": NOW, "exp": NOW + 86400}, None, algorithm="none"),
            "invalid_token",
        ),
        (_token({"iat": NOW, "exp": NOW + 86400}), "invalid_token"),
        (_token({"sub": "a", "iat": NOW}), "invalid_token"),
        ("garbage", "invalid_token"),
    ],
)
async def test_bad_tokens_are_refused_before_upgrade(
    gateway: Running, http: aiohttp.ClientSession, token: str | None, error: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, body, resp_headers = await refused(http, gateway.url, headers=headers)
    assert (status, body["error"]) == (401, error)
    assert body["detail"]
    assert resp_headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert gateway.gateway.metrics.refused.labels(error).value >= 1


async def test_wrong_audience_and_issuer_are_refused(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    settings = make_settings(
        tmp_path, security={"authentication": {"issuer": "qa", "audience": "qa-ws"}}
    )
    async with run_gateway(settings) as running:
        good = running.token()
        async with http.ws_connect(running.url, headers={"Authorization": f"Bearer {good}"}) as ws:
            assert (await ws.receive_json(timeout=5))["event"] == "connected"
        for payload in ({"aud": "other", "iss": "qa"}, {"aud": "qa-ws", "iss": "x"}, {}):
            token = _token({"sub": "a", "iat": NOW, "exp": NOW + 86400, **payload})
            status, body, _ = await refused(
                http, running.url, headers={"Authorization": f"Bearer {token}"}
            )
            assert (status, body["error"]) == (401, "invalid_token")


async def test_scope_without_chat_is_refused(gateway: Running, http: aiohttp.ClientSession) -> None:
    status, body, _ = await refused(
        http, gateway.url, params={"token": gateway.token(scope="admin")}
    )
    assert (status, body["error"]) == (403, "insufficient_scope")


async def test_revoked_token_is_refused(gateway: Running, http: aiohttp.ClientSession) -> None:
    token = gateway.token()
    RevocationList(gateway.settings.security.authentication.revocation_file).revoke(
        jwt.decode(token, options={"verify_signature": False})["jti"], time.time() + 60
    )
    status, body, _ = await refused(http, gateway.url, headers={"Authorization": f"Bearer {token}"})
    assert (status, body["error"]) == (401, "token_revoked")


async def test_client_reports_refusals_with_status_and_error(gateway: Running) -> None:
    with pytest.raises(HandshakeRefused) as caught:
        await QaWsClient(ClientOptions(gateway.url, token="bad")).connect()
    assert caught.value.status == 401 and caught.value.error == "invalid_token"
    assert "HTTP 401 invalid_token" in caught.value.message


async def test_auth_can_be_turned_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, security={"authentication": {"enabled": False}})
    async with run_gateway(settings) as running, QaWsClient(ClientOptions(running.url)) as client:
        assert client.connected is not None and client.connected.user.startswith("anon-")


async def test_health_readiness_metrics_and_page(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    async with http.get(gateway.http + "/healthz") as resp:
        assert (resp.status, await resp.json()) == (200, {"status": "ok"})
        assert resp.headers["X-Request-ID"]
    async with http.get(gateway.http + "/readyz") as resp:
        body = await resp.json()
        assert resp.status == 200 and body["checks"] == {
            "accepting": True,
            "agent": True,
            "store": True,
        }
    async with http.get(gateway.http + "/metrics") as resp:
        text = await resp.text()
        assert resp.status == 200 and "qa_ws_connections" in text
    async with http.get(gateway.http + "/") as resp:
        assert resp.status == 200 and "<title>qa-ws" in await resp.text()
        assert "Content-Security-Policy" in resp.headers


async def test_readyz_turns_503_while_draining(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    gateway.gateway.draining = True
    async with http.get(gateway.http + "/readyz") as resp:
        assert resp.status == 503 and (await resp.json())["checks"]["accepting"] is False
    status, body, headers = await refused(
        http, gateway.url, headers={"Authorization": f"Bearer {gateway.token()}"}
    )
    assert (status, body["error"]) == (503, "draining") and headers["Retry-After"]
    gateway.gateway.draining = False


async def test_admin_broadcast_reaches_every_connection(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    admin = {"Authorization": f"Bearer {gateway.token('root', scope='chat admin')}"}
    async with (
        QaWsClient(ClientOptions(gateway.url, token=gateway.token("a"))) as a,
        QaWsClient(ClientOptions(gateway.url, token=gateway.token("b"))) as b,
    ):
        async with http.post(
            gateway.http + "/admin/broadcast", json={"message": "deploy at 5"}, headers=admin
        ) as resp:
            assert (resp.status, await resp.json()) == (202, {"delivered_to": 2})
        for client in (a, b):
            async for event in client.events():
                if event.type == "system_event" and event.event == "broadcast":
                    assert event.message == "deploy at 5" and event.seq == 1
                    break
    async with http.post(
        gateway.http + "/admin/broadcast",
        json={"message": "x"},
        headers={"Authorization": f"Bearer {gateway.token()}"},
    ) as resp:
        assert (resp.status, (await resp.json())["error"]) == (403, "insufficient_scope")
    async with http.post(gateway.http + "/admin/broadcast", json={"message": "x"}) as resp:
        assert resp.status == 401
    refusals = (
        ({"message": ""}, "invalid_message"),
        ({"nope": 1}, "unknown_fields"),  # as every admin body: protocol.md, "Admin"
        ([1], "invalid_request"),
    )
    for body, error in refusals:
        async with http.post(gateway.http + "/admin/broadcast", json=body, headers=admin) as resp:
            assert resp.status == 400 and (await resp.json())["error"] == error
    async with http.post(gateway.http + "/admin/broadcast", data=b"{", headers=admin) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_json"


async def test_the_servers_own_page_origin_is_allowed_once_it_knows_its_port(
    gateway: Running, http: aiohttp.ClientSession
) -> None:
    port = int(gateway.http.rsplit(":", 1)[1])
    own = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {gateway.token()}"}
    status, body, _ = await refused(http, gateway.url, headers={"Origin": own, **auth})
    assert (status, body["error"]) == (403, "origin_not_allowed")  # not configured, not known yet
    gateway.gateway.allow_own_origins(port, tls=False)
    async with http.ws_connect(gateway.url, origin=own, headers=auth) as ws:
        assert (await ws.receive_json(timeout=5))["event"] == "connected"
    for other in (f"http://evil.example:{port}", f"https://127.0.0.1:{port}", "http://127.0.0.1:1"):
        status, body, _ = await refused(http, gateway.url, headers={"Origin": other, **auth})
        assert (status, body["error"]) == (403, "origin_not_allowed")
