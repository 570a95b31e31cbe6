"""Shared fixtures: real servers on ephemeral loopback ports, tokens, settings.

``gateway`` runs the real app (``create_app``) on a real TCP socket in the test's loop;
``spawn_server`` runs ``python -m qa_ws_cli serve`` as its own process for end-to-end tests.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from qa_ws_cli.agents.base import Agent
from qa_ws_cli.agents.builtin import DemoAgent
from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.config import Settings, load_settings
from qa_ws_cli.server.app import create_app
from qa_ws_cli.server.gateway import GATEWAY, Gateway
from qa_ws_cli.server.store import Store
from tests.redis_server import REDIS, RedisServer

SECRET = "test-secret-" + "x" * 40


def make_settings(tmp_path: Path, **sections: Any) -> Settings:
    """Settings for tests: a known secret, port 0, revocations in tmp_path; overrides by section."""
    base: dict[str, Any] = {
        "server": {"port": 0},
        "security": {
            "secret_key": SECRET,
            "authentication": {"revocation_file": str(tmp_path / "revoked.jsonl")},
        },
        "agent": {"demo_latency_ms": 20},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _deep(base[key], value)
        else:
            base[key] = value
    return load_settings(Path(os.devnull), base, environ={}).settings


def _deep(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@dataclass
class Running:
    app: web.Application
    url: str  # ws://127.0.0.1:PORT/ws
    http: str  # http://127.0.0.1:PORT
    settings: Settings

    @property
    def gateway(self) -> Gateway:
        return self.app[GATEWAY]

    def token(self, sub: str = "alice", **kwargs: Any) -> str:
        return issue_token(self.settings, sub, **kwargs)[0]


@contextlib.asynccontextmanager
async def run_gateway(
    settings: Settings, agent: Agent | None = None, store: Store | None = None
) -> AsyncIterator[Running]:
    app = create_app(settings, agent or DemoAgent(latency_ms=settings.agent.demo_latency_ms), store)
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Running(app, f"ws://127.0.0.1:{port}/ws", f"http://127.0.0.1:{port}", settings)
    finally:
        await runner.cleanup()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Running]:
    async with run_gateway(settings) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


# -- a real server process -------------------------------------------------------------------

_READY = re.compile(r"listening on (wss?://\S+)")


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    url: str
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text()


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        WEBSOCKET_SECRET_KEY=SECRET,
        WEBSOCKET_SECURITY__AUTHENTICATION__REVOCATION_FILE=str(tmp_path / "revoked.jsonl"),
        PYTHONUNBUFFERED="1",
        COLUMNS="200",
    )
    env.update(extra)
    return env


def launch_server(
    tmp_path: Path,
    args: tuple[str, ...],
    env: dict[str, str],
    *,
    preexec_fn: Callable[[], None] | None = None,
    timeout: float = 20.0,
) -> ServerProcess:
    """``python -m qa_ws_cli serve --port 0 ARGS`` as its own process, once it listens."""
    log = tmp_path / f"server-{time.monotonic_ns()}.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "qa_ws_cli", "serve", "--port", "0", *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=tmp_path,
            env=env,
            preexec_fn=preexec_fn,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _READY.search(log.read_text())
        if match:
            return ServerProcess(proc, match.group(1), log)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"server did not start:\n{log.read_text()}")


@pytest.fixture
def spawn_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def spawn(
        *args: str, env: dict[str, str] | None = None, timeout: float = 20.0
    ) -> ServerProcess:
        server = launch_server(tmp_path, args, env or server_env(tmp_path), timeout=timeout)
        started.append(server)
        return server

    yield spawn
    stop_servers(started)


# servers started outside ``spawn_server`` (tests/server/hostile.py)
STARTED: list[ServerProcess] = []


def stop_servers(servers: list[ServerProcess]) -> None:
    """SIGTERM (so coverage of the server process is written), then SIGKILL past 5 s."""
    for server in servers:
        if server.proc.poll() is None:
            server.proc.terminate()
    for server in servers:
        try:
            server.proc.wait(5)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait(5)
    servers.clear()


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test() -> Iterator[None]:
    yield
    stop_servers(STARTED)


@pytest.fixture(autouse=True)
def _own_state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the machine's ~/.local/state/qa-ws (the development secret a
    developer's `qa-ws serve --dev` keeps there would sign the tokens of a test expecting none);
    tests/cli's ``state_home`` names the same directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if REDIS is None:
        reason = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("QA_WS_REQUIRE_ALL") == "1":
            pytest.fail(f"QA_WS_REQUIRE_ALL=1 but {reason}")
        pytest.skip(reason)
    server = RedisServer(REDIS, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
