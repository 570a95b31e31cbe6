"""The parent's side of a run: preflight against things that are not a gateway, the hard stop."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from aiohttp import web

from qa_ws_cli.bench import launch
from qa_ws_cli.bench.spec import BenchSpec
from tests.conftest import ServerProcess


@pytest.fixture
async def stranger() -> AsyncIterator[str]:
    """An aiohttp server on loopback: /ws speaks WebSocket but not our protocol; / is 404."""

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        await sock.send_json({"hello": "world"})
        await sock.close()
        return sock

    async def mute(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        await sock.close()
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    app.router.add_get("/mute", mute)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"ws://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_preflight_tells_a_stranger_from_a_gateway(stranger: str) -> None:
    with pytest.raises(launch.LaunchError, match="is not a qa-ws gateway"):
        await asyncio.to_thread(launch.preflight, f"{stranger}/ws", None)
    with pytest.raises(launch.LaunchError, match="sent no `connected` event"):
        await asyncio.to_thread(launch.preflight, f"{stranger}/mute", None)
    with pytest.raises(launch.LaunchError, match=r"refused the connection: HTTP 404$"):
        await asyncio.to_thread(launch.preflight, f"{stranger}/nowhere", None)


async def test_preflight_accepts_the_gateway(
    spawn_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    from qa_ws_cli.auth.tokens import issue_token
    from tests.conftest import make_settings

    server = spawn_server("--agent", "echo")
    token = issue_token(make_settings(tmp_path), "probe", ttl_s=60)[0]
    await asyncio.to_thread(launch.preflight, server.url, token)
    with pytest.raises(launch.LaunchError, match="HTTP 401 missing_token"):
        await asyncio.to_thread(launch.preflight, server.url, None)


def test_a_silent_port_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(launch.LaunchError, match=f"cannot reach 127.0.0.1:{port}"):
            launch.reachable(f"ws://127.0.0.1:{port}/ws", timeout=1.0)


def test_the_load_process_is_killed_after_duration_plus_grace(tmp_path: Path) -> None:
    spec = BenchSpec(url="ws://127.0.0.1:1/ws", users=1, duration_s=0.1, mint_tokens=False)
    run = launch.run_load_process(spec, tmp_path, {"PATH": "/usr/bin:/bin"}, grace_s=0.1)
    assert run.returncode < 0 and run.raw is None  # killed before it could start Locust


def test_the_served_server_environment_keeps_burst_low_and_the_rest_generous(
    tmp_path: Path,
) -> None:
    burst = launch.served_env("burst", "s" * 48, tmp_path)
    chat = launch.served_env("chat", "s" * 48, tmp_path)
    assert burst["WEBSOCKET_SECURITY__RATE_LIMITING__BURST"] == "5"
    assert int(chat["WEBSOCKET_SECURITY__RATE_LIMITING__BURST"]) >= 100000
    assert burst["WEBSOCKET_SECRET_KEY"] == "s" * 48
    assert str(tmp_path) in burst["WEBSOCKET_SECURITY__AUTHENTICATION__REVOCATION_FILE"]


def test_local_server_stop_before_start_and_tail(tmp_path: Path) -> None:
    server = launch.LocalServer(
        tmp_path, scenario="chat", demo_latency_ms=5, config_file=str(tmp_path / "c.yaml")
    )
    assert server.stop() is None
    assert server.cmd[-4:] == ["--demo-latency-ms", "5", "--config", str(tmp_path / "c.yaml")]
    assert launch.tail("\n".join(str(i) for i in range(30)), lines=2) == "28\n29"


def test_nofile_limit_is_raised_to_the_hard_limit() -> None:
    import resource

    assert launch.raise_nofile_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
