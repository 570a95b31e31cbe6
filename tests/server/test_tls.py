"""TLS: with server.ssl.certfile and keyfile the gateway serves wss:// itself."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

import pytest

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.client import ClientOptions, QaWsClient
from tests.conftest import ServerProcess, make_settings, self_signed, server_env


async def test_serves_wss_with_a_certificate(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    certfile, keyfile = self_signed(tmp_path)
    env = server_env(
        tmp_path,
        WEBSOCKET_SERVER__SSL__CERTFILE=str(certfile),
        WEBSOCKET_SERVER__SSL__KEYFILE=str(keyfile),
    )
    server = spawn_server(env=env)
    assert server.url.startswith("wss://")
    trust = ssl.create_default_context(cafile=str(certfile))
    token = issue_token(make_settings(tmp_path), "tls-user")[0]
    async with QaWsClient(ClientOptions(server.url, token=token, ssl=trust)) as client:
        answer = await client.ask("how do I test a login form?", timeout=10)
    assert "login form" in answer.content
    assert server.stop() == 0


def test_half_a_tls_configuration_is_refused(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    certfile, _ = self_signed(tmp_path)
    env = server_env(tmp_path, WEBSOCKET_SERVER__SSL__CERTFILE=str(certfile))
    with pytest.raises(AssertionError, match="TLS needs both"):
        spawn_server(env=env, timeout=10)
