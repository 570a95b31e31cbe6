"""The reconnect scenario: every asked id answered exactly once across drops, or counted lost.

Against the real gateway (one instance; two behind Redis) and against a small stand-in
that streams a first piece and then drops every answer, as a broken gateway would.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from typer.testing import CliRunner

from qa_ws_cli.cli.main import app
from tests.redis_server import RedisServer

runner = CliRunner()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("QA_WS_TOKEN", "WEBSOCKET_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)


def reconnect_run(out: Path, *args: str) -> Any:
    return runner.invoke(
        app,
        [
            "bench",
            "--scenario",
            "reconnect",
            "--users",
            "6",
            "--spawn-rate",
            "6",
            "--duration",
            "3s",
            "--think-time",
            "0.2",
            "--report-json",
            str(out),
            *args,
        ],
    )


def test_the_gateway_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    result = reconnect_run(out, "--serve")
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    figures = data["reconnect"]
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["asked"] >= 6 and figures["answered"] >= 6
    assert figures["resumed"] >= 6 and figures["not_resumed"] == 0
    gates = {g["name"]: g for g in data["gates"]}
    assert gates["lost answers"]["passed"] and gates["duplicated answers"]["passed"]
    assert "reconnect: asked" in result.output


@pytest.fixture
def dropping_server() -> Iterator[str]:
    """Speaks enough of the protocol to pass the preflight; streams a piece, never answers."""

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        resumed = "session_id" in request.query
        await sock.send_json(
            {
                "type": "system_event",
                "event": "connected",
                "session_id": "s-stand-in",
                "resumed": resumed,
                "replayed": 0,
            }
        )
        async for msg in sock:
            frame = json.loads(msg.data)
            if frame.get("type") == "chat_message":
                await sock.send_json(
                    {"type": "agent_delta", "reply_to": frame["id"], "delta": "a piece"}
                )
        return sock

    loop = asyncio.new_event_loop()
    app_ = web.Application()
    app_.router.add_get("/ws", ws)
    site_runner = web.AppRunner(app_)
    loop.run_until_complete(site_runner.setup())
    site = web.TCPSite(site_runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site_runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"ws://127.0.0.1:{port}/ws"
    asyncio.run_coroutine_threadsafe(site_runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_a_server_that_drops_answers_is_caught(tmp_path: Path, dropping_server: str) -> None:
    out = tmp_path / "r.json"
    result = reconnect_run(
        out, "--url", dropping_server, "--token", "anything", "--answer-timeout", "1"
    )
    assert result.exit_code == 1, result.output
    data = json.loads(out.read_text())
    figures = data["reconnect"]
    assert figures["lost"] >= 1 and figures["answered"] == 0 and figures["duplicated"] == 0
    gates = {g["name"]: g for g in data["gates"]}
    assert not gates["lost answers"]["passed"] and gates["duplicated answers"]["passed"]
    assert data["errors"]["by_code"]["lost"] == figures["lost"]


def test_a_tolerance_for_lost_answers_is_a_gate_too(tmp_path: Path, dropping_server: str) -> None:
    out = tmp_path / "r.json"
    result = reconnect_run(
        out,
        "--url",
        dropping_server,
        "--token",
        "anything",
        "--answer-timeout",
        "1",
        "--max-lost",
        "1000",
    )
    data = json.loads(out.read_text())
    gates = {g["name"]: g for g in data["gates"]}
    assert data["reconnect"]["lost"] >= 1 and gates["lost answers"]["passed"]
    assert gates["lost answers"]["threshold"] == 1000
    assert result.exit_code == 1  # no answer at all still fails the p95 gate


def test_instances_need_a_store() -> None:
    result = runner.invoke(app, ["bench", "--serve", "--instances", "2"])
    assert result.exit_code == 2 and "--redis-url" in result.output


def test_two_instances_behind_redis_resume_on_the_other_one(
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    out = tmp_path / "r.json"
    result = reconnect_run(out, "--serve", "--instances", "2", "--redis-url", redis_server.url)
    data = json.loads(out.read_text())
    assert len(data["run"]["urls"]) == 2
    figures = data["reconnect"]
    assert figures["lost"] == 0 and figures["duplicated"] == 0, result.output
    # every reconnect lands on the other instance: it resumes only if sessions are shared
    assert figures["resumed"] >= 6 and figures["not_resumed"] == 0, figures
    assert result.exit_code == 0, result.output
