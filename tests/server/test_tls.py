"""TLS: with server.ssl.certfile and keyfile the gateway serves wss:// itself."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.client import ClientOptions, QaWsClient
from tests.conftest import ServerProcess, make_settings, server_env


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


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
