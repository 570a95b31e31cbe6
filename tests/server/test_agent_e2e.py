"""Tools, files and cancel end to end: a WebSocket client, a real ``qa-ws serve`` process, and
behind it a real Agno AgentOS (``agno+http://…``) or the OpenAI-compatible stand-in
(``openai+http://…``) that AgentOS itself uses as its model (tests/agents/stack.py).

Files go up with ``POST /files`` and into ``chat_message.attachments``, as every client sends
them; what reached the model is read from the stand-in's own record of its requests.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from qa_ws_cli.auth.tokens import issue_token
from tests.agents.stack import Stack, agentos_stack  # noqa: F401 (the stack fixture)
from tests.conftest import ServerProcess, make_settings, server_env
from tests.server.test_files import PNG
from tests.server.wire import answer_to, eventually, next_event, until

pytestmark = pytest.mark.timeout(120)
Spawn = Callable[..., ServerProcess]
JUNIT = b'<testsuite name="login" tests="3" failures="1"><testcase name="lockout"/></testsuite>'


def gateway(spawn_server: Spawn, tmp_path: Path, agent: str, **env: str) -> ServerProcess:
    environ = server_env(
        tmp_path, WEBSOCKET_AGENT__TIMEOUT_S="60", WEBSOCKET_AGENT__MODEL="qa-model", **env
    )
    return spawn_server("--agent", agent, env=environ)


def agno(spawn_server: Spawn, tmp_path: Path, stack: Stack, **env: str) -> ServerProcess:
    return gateway(spawn_server, tmp_path, f"agno+{stack.agentos}/agents/qa", **env)


def openai(spawn_server: Spawn, tmp_path: Path, stack: Stack) -> ServerProcess:
    return gateway(spawn_server, tmp_path, f"openai+{stack.model_url}")


def auth(tmp_path: Path, sub: str = "alice") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(make_settings(tmp_path), sub)[0]}"}


def http_base(server: ServerProcess) -> str:
    return server.url.replace("ws://", "http://").removesuffix("/ws")


async def upload(
    http: aiohttp.ClientSession,
    server: ServerProcess,
    headers: dict[str, str],
    name: str,
    data: bytes,
) -> dict[str, Any]:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="application/octet-stream")
    async with http.post(http_base(server) + "/files", data=form, headers=headers) as response:
        body: dict[str, Any] = await response.json()
        assert response.status == 201, body
        return body


async def ask(
    http: aiohttp.ClientSession,
    server: ServerProcess,
    headers: dict[str, str],
    content: str,
    attachments: list[str] | None = None,
    msg_id: str = "q1",
) -> list[dict[str, Any]]:
    """Every event of one answer, up to its ``agent_response`` or ``error``."""
    async with http.ws_connect(server.url, headers=headers) as ws:
        hello = await next_event(ws)
        assert hello["event"] == "connected"
        frame: dict[str, Any] = {"type": "chat_message", "id": msg_id, "content": content}
        if attachments is not None:
            frame["attachments"] = attachments
        await ws.send_json(frame)
        return await until(ws, answer_to(msg_id), timeout=60)


def model_saw_png(stack: Stack) -> bool:
    """Whether a request to the model held the PNG as a data URL image part."""
    for call in stack.model.calls:
        for message in call.body.get("messages", []):
            content = message.get("content")
            for part in content if isinstance(content, list) else []:
                url = part.get("image_url", {}).get("url", "") if isinstance(part, dict) else ""
                if url.startswith("data:image/png;base64,"):
                    return True
    return False


async def test_tool_events_arrive_in_order_before_the_answer_that_sums_them_up(
    spawn_server: Spawn, tmp_path: Path, stack: Stack, http: aiohttp.ClientSession
) -> None:
    server = agno(spawn_server, tmp_path, stack)
    events = await ask(http, server, auth(tmp_path), "What is our login test plan?")
    kinds = [(e["type"], e.get("kind")) for e in events]
    assert kinds[-1] == ("agent_response", None), kinds
    tool_events = [e for e in events if e["type"] == "agent_event"]
    assert [e["kind"] for e in tool_events] == ["tool_started", "tool_finished"], kinds
    started, finished = tool_events
    assert started["reply_to"] == finished["reply_to"] == "q1"
    assert started["tool"]["name"] == "lookup_test_plan"
    assert started["tool"]["args"] == {"feature": "login"}
    assert finished["tool"]["id"] == started["tool"]["id"]
    assert finished["result_preview"].startswith("plan for login")
    assert finished["ms"] >= 0
    assert "seq" not in started and "seq" not in finished  # live only
    first_delta = next(i for i, e in enumerate(events) if e["type"] == "agent_delta")
    assert events.index(finished) < first_delta  # the tool ran before the model answered
    answer = events[-1]
    assert "Tool said: plan for login" in answer["content"]
    (summary,) = answer["tools"]
    assert summary["name"] == "lookup_test_plan" and summary["status"] == "finished"
    assert summary["ms"] >= 0


async def test_an_uploaded_png_reaches_the_model_through_agno(
    spawn_server: Spawn, tmp_path: Path, stack: Stack, http: aiohttp.ClientSession
) -> None:
    server = agno(spawn_server, tmp_path, stack)
    headers = auth(tmp_path)
    png = await upload(http, server, headers, "screen.png", PNG)
    assert png["mime"] == "image/png"
    stack.model.calls.clear()
    events = await ask(http, server, headers, "What is wrong here?", [png["file_id"]])
    assert events[-1]["type"] == "agent_response", events[-1]
    assert "Image seen: yes" in events[-1]["content"]
    assert model_saw_png(stack)


async def test_a_png_and_a_junit_report_reach_the_openai_compatible_model(
    spawn_server: Spawn, tmp_path: Path, stack: Stack, http: aiohttp.ClientSession
) -> None:
    server = openai(spawn_server, tmp_path, stack)
    headers = auth(tmp_path)
    png = await upload(http, server, headers, "screen.png", PNG)
    report = await upload(http, server, headers, "junit.xml", JUNIT)
    assert report["mime"] == "application/xml"
    stack.model.calls.clear()
    ids = [png["file_id"], report["file_id"]]
    events = await ask(http, server, headers, "Why did the login suite fail?", ids)
    assert events[-1]["type"] == "agent_response", events[-1]
    assert "Image seen: yes" in events[-1]["content"]
    assert model_saw_png(stack)
    (call,) = stack.model.calls
    assert any("junit.xml" in text and JUNIT.decode() in text for text in call.texts)
    assert any("Why did the login suite fail?" in text for text in call.texts)


def agentos(stack: Stack, what: str) -> list[dict[str, str]]:
    """What AgentOS itself recorded: ``tool-log`` or ``requests`` (tests/agents/agno_os.py)."""
    with urllib.request.urlopen(f"{stack.agentos}/test/{what}", timeout=5) as response:
        log: list[dict[str, str]] = json.load(response)
        return log


async def test_cancel_mid_tool_reaches_agnos_cancel_endpoint(
    spawn_server: Spawn, tmp_path: Path, stack: Stack, http: aiohttp.ClientSession
) -> None:
    server = agno(spawn_server, tmp_path, stack)
    stack.model.calls.clear()
    tools_before, requests_before = len(agentos(stack, "tool-log")), len(agentos(stack, "requests"))
    async with http.ws_connect(server.url, headers=auth(tmp_path)) as ws:
        await next_event(ws)
        await ws.send_json({"type": "chat_message", "id": "slow", "content": "Run the slow check"})
        seen = await until(ws, lambda e: e.get("kind") == "tool_started", timeout=60)
        assert seen[-1]["tool"]["args"] == {"feature": "slow"}
        await ws.send_json({"type": "cancel", "id": "stop-1", "target": "slow"})
        rest = await until(ws, answer_to("slow"), timeout=30)
    end = rest[-1]
    assert (end["type"], end["code"]) == ("error", "cancelled"), end
    assert not any(e["type"] == "agent_delta" for e in seen + rest)
    # AgentOS received the cancel for the run, with its session ...
    cancels = [
        r
        for r in agentos(stack, "requests")[requests_before:]
        if r["method"] == "POST" and r["path"].endswith("/cancel")
    ]
    assert len(cancels) == 1, cancels
    assert cancels[0]["path"].startswith("/agents/qa/runs/")
    assert cancels[0]["query"].startswith("session_id=")
    # ... and the tool stopped there and then (the slow one would run on for 20 s)
    await eventually(
        lambda: len(agentos(stack, "tool-log")) > tools_before, timeout=15, what="the tool's end"
    )
    assert agentos(stack, "tool-log")[tools_before:] in (
        [{"feature": "slow", "ended": "stopped"}],
        [{"feature": "slow", "ended": "killed"}],
    )
    assert len(stack.model.calls) == 1  # the model was never asked to go on


async def test_another_users_file_is_not_found_and_the_agent_is_not_asked(
    spawn_server: Spawn, tmp_path: Path, stack: Stack, http: aiohttp.ClientSession
) -> None:
    server = openai(spawn_server, tmp_path, stack)
    png = await upload(http, server, auth(tmp_path, "alice"), "screen.png", PNG)
    stack.model.calls.clear()
    events = await ask(http, server, auth(tmp_path, "mallory"), "show me", [png["file_id"]])
    end = events[-1]
    assert (end["type"], end["code"], end["reply_to"]) == ("error", "file_not_found", "q1")
    assert "alice" not in json.dumps(end)
    unknown = await ask(http, server, auth(tmp_path), "and this?", ["f" * 32], msg_id="q2")
    assert (unknown[-1]["type"], unknown[-1]["code"]) == ("error", "file_not_found")
    assert stack.model.calls == []


async def test_an_expired_file_is_not_found(
    spawn_server: Spawn, tmp_path: Path, stack: Stack, http: aiohttp.ClientSession
) -> None:
    server = agno(spawn_server, tmp_path, stack, WEBSOCKET_LIMITS__FILE_TTL_S="0.5")
    headers = auth(tmp_path)
    png = await upload(http, server, headers, "screen.png", PNG)

    async def gone() -> bool:
        url = f"{http_base(server)}/files/{png['file_id']}"
        async with http.get(url, headers=headers) as response:
            return response.status == 404

    await eventually(gone, timeout=10, what="the file to expire")
    stack.model.calls.clear()
    events = await ask(http, server, headers, "What is wrong here?", [png["file_id"]])
    assert (events[-1]["type"], events[-1]["code"]) == ("error", "file_not_found")
    assert stack.model.calls == []
