"""Server processes for the harness: start, wait for the URL, measure, stop.

qa-ws is started through its real CLI (``qa-ws serve``), configured only through its documented
environment variables, with its log (default level) going to a file as in production.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.servers import raise_nofile

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HIGH = "100000000"  # rate limits high enough never to trigger, with the limiter still on


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    token: str = ""
    socketio: bool = False
    minting: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kib(self) -> int:
        text = Path(f"/proc/{self.pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+) kB", text)
        return int(found.group(1)) if found else 0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def settle(self, window_s: float = 0.2, max_s: float = 10.0) -> None:
        """Wait (bounded) until the process is idle, e.g. done closing the last connections.

        Idle: under a tenth of a core over the window (/proc counts in 10 ms ticks).
        """
        deadline = time.monotonic() + max_s
        while time.monotonic() < deadline:
            used = self.cpu_seconds()
            time.sleep(window_s)
            if self.cpu_seconds() - used <= window_s * 0.1:
                return

    def loop(self) -> str:
        """uvloop when the process has uvloop's extension mapped, else asyncio."""
        maps = Path(f"/proc/{self.pid}/maps").read_text()
        return "uvloop" if "uvloop/loop." in maps else "asyncio"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(name: str, cmd: list[str], env: dict[str, str], log: Path) -> Server:
    """Start a process with its output in ``log``; ``wait_ready`` then waits for its URL."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=ROOT,
            preexec_fn=raise_nofile,
        )
    return Server(name, proc, "", log)


def wait_ready(
    server: Server, pattern: str = r"listening on (ws://\S+)", timeout_s: float = 20.0
) -> Server:
    """Wait (``timeout_s`` at most) for ``pattern`` in the log; its group, if any, is the URL."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and server.proc.poll() is None:
        found = re.search(pattern, server.log.read_text(errors="replace"))
        if found:
            server.url = found.group(1) if found.re.groups else ""
            return server
        time.sleep(0.05)
    server.stop()
    tail = server.log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{server.name} did not start:\n{tail}")


def reference(name: str, kind: str, loop: str, logs: Path, prefix: tuple[str, ...] = ()) -> Server:
    """A reference server from ``benchmarks.servers`` (not yet ready: see ``wait_ready``);
    ``prefix`` runs it under another program (valgrind)."""
    cmd = [*prefix, sys.executable, "-m", "benchmarks.servers", kind, "--loop", loop]
    server = launch(name, cmd, dict(os.environ), logs / f"{name}.log")
    server.socketio = kind == "socketio"
    return server


def qa_ws_env(secret: str, store_url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEBSOCKET_")}
    env.update(
        PYTHONPATH=str(ROOT),  # for --agent python:benchmarks.agents:stream_agent
        WEBSOCKET_SECRET_KEY=secret,
        WEBSOCKET_SECURITY__RATE_LIMITING__MAX_REQUESTS_PER_MINUTE=HIGH,
        WEBSOCKET_SECURITY__RATE_LIMITING__BURST=HIGH,
        WEBSOCKET_SERVER__MAX_CONNECTIONS="100000",
        WEBSOCKET_SERVER__MAX_CONNECTIONS_PER_USER="100000",
        WEBSOCKET_SERVER__MAX_CONNECTIONS_PER_IP="100000",  # every load connection is loopback
        WEBSOCKET_LIMITS__MAX_FRAMES_PER_SECOND=HIGH,
    )
    if store_url:
        env["WEBSOCKET_STORE__URL"] = store_url
    return env


def qa_ws(
    name: str,
    agent: str,
    logs: Path,
    store_url: str | None = None,
    extra_env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
) -> Server:
    """``qa-ws serve`` (auth on, the installed console script), and its token being minted;
    ``prefix`` runs it under another program (valgrind)."""
    env = qa_ws_env(secrets.token_urlsafe(48), store_url) | (extra_env or {})
    cli = str(BIN / "qa-ws")
    cmd = [*prefix, cli, "serve", "--host", "127.0.0.1", "--port", "0", "--agent", agent]
    server = launch(name, cmd, env, logs / f"{name}.log")
    server.minting = subprocess.Popen(
        [cli, "token", "issue", "--sub", "perf", "--ttl", "1h"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    return server


def collect_token(server: Server) -> None:
    """The token ``qa-ws token issue`` printed for this server (its last line)."""
    if server.minting is None:
        return
    out, _ = server.minting.communicate(timeout=30)
    if server.minting.returncode != 0 or not out.strip():
        raise RuntimeError(f"qa-ws token issue failed for {server.name}")
    server.token = out.strip().splitlines()[-1]
    server.minting = None


def redis_server(logs: Path) -> tuple[Server, str]:
    """A real redis-server on a free loopback port, no persistence, ready."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    server = launch("redis", cmd, dict(os.environ), logs / "redis.log")
    wait_ready(server, "Ready to accept")
    return server, f"redis://127.0.0.1:{port}/0"
