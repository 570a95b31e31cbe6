"""A real Agno AgentOS process with its stand-in model, for every test that needs one.

AgentOS (``agno_os.py``) runs as its own process (uvicorn), with one agent that has a Python
tool; its model is the stand-in ``ToolModel`` (the only part outside every deployment),
served on a loopback port from a thread. Import ``agentos_stack`` into a test module for its
``stack`` fixture.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from tests.conftest import free_port

from .conftest import ToolModel

HERE = Path(__file__).parent


@dataclass
class Stack:
    agentos: str  # http://127.0.0.1:PORT
    model_url: str  # http://127.0.0.1:PORT/v1
    model: ToolModel


def _serve_in_thread(app: web.Application) -> tuple[int, asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port = free_port()

    def run() -> None:
        asyncio.set_event_loop(loop)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    threading.Thread(target=run, daemon=True).start()
    assert ready.wait(10), "the model stand-in did not start"
    return port, loop


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"AgentOS did not start:\n{log.read_text()}")


@pytest.fixture(scope="module", name="stack")
def agentos_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    pytest.importorskip("agno", reason="agno is a test dependency: pip install -e '.[dev]'")
    model = ToolModel()
    model_port, loop = _serve_in_thread(model.app())
    model_url = f"http://127.0.0.1:{model_port}/v1"
    port = free_port()
    log = tmp_path_factory.mktemp("agentos") / "agentos.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "agno_os.py"), str(port), model_url],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield Stack(url, model_url, model)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        loop.call_soon_threadsafe(loop.stop)
