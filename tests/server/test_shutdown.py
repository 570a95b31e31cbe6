"""Graceful drain of a real server process on SIGTERM, and the second signal."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from qa_ws_cli.auth.tokens import issue_token
from tests.conftest import ServerProcess, make_settings


async def one_chat(
    http: aiohttp.ClientSession,
    url: str,
    token: str,
    started: asyncio.Event,
    ready: list[int],
    total: int,
) -> dict[str, Any]:
    frames: list[dict[str, Any]] = []
    async with http.ws_connect(url, headers={"Authorization": f"Bearer {token}"}) as ws:
        await ws.receive_json(timeout=10)  # connected
        await ws.send_json(
            {"type": "chat_message", "id": "q", "content": "how do I test a login form?"}
        )
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                frame = msg.json()
                frames.append(frame)
                if (
                    frame["type"] == "agent_delta"
                    and sum(f["type"] == "agent_delta" for f in frames) == 1
                ):
                    ready.append(1)
                    if len(ready) == total:
                        started.set()
        return {"frames": frames, "close": ws.close_code}


async def test_sigterm_with_50_chats_in_flight_answers_every_one(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server("--demo-latency-ms", "2500")
    settings = make_settings(tmp_path)
    started, ready, total = asyncio.Event(), [], 50
    async with aiohttp.ClientSession() as http:
        chats = [
            asyncio.create_task(
                one_chat(
                    http, server.url, issue_token(settings, f"user{n}")[0], started, ready, total
                )
            )
            for n in range(total)
        ]
        await asyncio.wait_for(started.wait(), 20)  # all 50 are streaming
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.3)
        http_url = server.url.replace("ws://", "http://").removesuffix("/ws")
        async with http.get(http_url + "/readyz") as resp:
            assert resp.status == 503
        async with http.get(
            server.url,
            headers={
                "Authorization": f"Bearer {issue_token(settings, 'late')[0]}",
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        ) as resp:
            assert resp.status == 503 and (await resp.json())["error"] == "draining"
        results = await asyncio.wait_for(asyncio.gather(*chats), 30)
    for result in results:
        kinds = [f["type"] for f in result["frames"]]
        events = [f.get("event") for f in result["frames"]]
        assert "shutdown" in events
        assert kinds.count("agent_response") == 1, kinds
        assert kinds[-1] == "agent_response" or events[-1] == "shutdown"
        assert result["close"] == 1001
    assert server.proc.wait(20) == 0
    log = server.output()
    assert "draining" in log and "drained" in log


async def test_a_second_signal_stops_at_once(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    server = spawn_server("--demo-latency-ms", "20000")
    settings = make_settings(tmp_path)
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(
            server.url, headers={"Authorization": f"Bearer {issue_token(settings, 'a')[0]}"}
        )
        await ws.receive_json(timeout=10)
        await ws.send_json({"type": "chat_message", "id": "q", "content": "slow"})
        await ws.receive_json(timeout=10)  # a delta: in flight
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        assert server.proc.poll() is None  # draining, waiting for the answer
        began = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(5) != 0
        assert time.monotonic() - began < 5
        await ws.close()
