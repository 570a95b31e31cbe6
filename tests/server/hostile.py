"""Helpers for the hardening tests: a server process with chosen limits, raw TCP peers.

Loopback has a whole /8, so a "flooding machine" binds its sockets to 127.0.0.2 (and up) while
the honest client stays on 127.0.0.1: the per-address cap can tell them apart.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Callable
from pathlib import Path

from tests.conftest import STARTED, ServerProcess, launch_server, server_env


def start_server(
    tmp_path: Path,
    *args: str,
    env: dict[str, str] | None = None,
    nofile: tuple[int, int] | None = None,
    timeout: float = 20.0,
) -> ServerProcess:
    """``qa-ws serve`` as its own process; ``nofile`` sets its (soft, hard) RLIMIT_NOFILE.
    Stopped after the test (``STARTED``, tests/conftest.py)."""
    preexec: Callable[[], None] | None = None
    if nofile is not None:
        limits = nofile

        def preexec() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)

    environ = {**server_env(tmp_path), **(env or {})}
    server = launch_server(tmp_path, args, environ, preexec_fn=preexec, timeout=timeout)
    STARTED.append(server)
    return server


def port_of(server: ServerProcess) -> int:
    return int(server.url.rsplit(":", 1)[1].split("/")[0])


async def open_socket(
    port: int, source: str = "127.0.0.1"
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 15.0) -> bool:
    """True once the server closed (EOF or reset) within ``timeout``; False if still open."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def exchange(port: int, data: bytes, source: str = "127.0.0.1") -> bytes:
    """Send raw bytes, read the answer until the server closes (or 10 s)."""
    reader, writer = await open_socket(port, source)
    writer.write(data)
    chunks: list[bytes] = []
    try:
        async with asyncio.timeout(10):
            while chunk := await reader.read(65536):
                chunks.append(chunk)
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    return b"".join(chunks)


def log_lines(server: ServerProcess, word: str) -> list[str]:
    return [line for line in server.output().splitlines() if word in line]
