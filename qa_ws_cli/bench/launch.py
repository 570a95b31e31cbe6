"""The parent's side of a run: a local server to aim at, a preflight, the load process.

Everything here runs in the CLI process, so it uses only blocking sockets, ``subprocess``
and websockets' threading client (plain threads here: no gevent in this process); Locust
lives in the child it starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.sync.client import connect as ws_connect

from qa_ws_cli.bench.spec import PROGRESS_PREFIX, BenchSpec

_READY = re.compile(r"listening on (wss?://\S+)")


class LaunchError(Exception):
    """The run could not happen; the message says why, for the user."""


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard one: every connection is a descriptor.

    Children inherit limits, so lifting the CLI's lifts the served server's and the load
    process's too. Returns the soft limit now in force.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):  # pragma: no cover - a kernel cap below the hard limit
            return soft
        return target
    return soft


def served_env(scenario: str, secret: str, workdir: Path) -> dict[str, str]:
    """Limits for a server that exists only to be measured: nothing caps the bench itself.

    Each virtual user has its own ``sub``, so per-user caps would not bite anyway; the
    rate limit stays low (5 a second) for ``burst``, whose point is to hit it, with a
    per-minute limit high enough that the abuse rule (1008 close) never triggers.
    """
    burst = "5" if scenario == "burst" else "100000"
    return {
        "WEBSOCKET_SECRET_KEY": secret,
        "WEBSOCKET_SECURITY__AUTHENTICATION__REVOCATION_FILE": str(workdir / "revoked.jsonl"),
        "WEBSOCKET_SECURITY__RATE_LIMITING__MAX_REQUESTS_PER_MINUTE": "1000000",
        "WEBSOCKET_SECURITY__RATE_LIMITING__BURST": burst,
        "WEBSOCKET_SERVER__MAX_CONNECTIONS": "100000",
        "WEBSOCKET_SERVER__MAX_CONNECTIONS_PER_IP": "100000",  # every user is on loopback
        "WEBSOCKET_SERVER__MAX_CONNECTIONS_PER_USER": "100",
        "WEBSOCKET_LIMITS__MAX_INFLIGHT_PER_CONNECTION": "64",
        "WEBSOCKET_AGENT__MAX_CONCURRENCY": "10000",
        "WEBSOCKET_AGENT__MAX_QUEUE": "10000",
        "PYTHONUNBUFFERED": "1",
        "COLUMNS": "200",
    }


class LocalServer:
    """``qa-ws serve`` on an ephemeral loopback port with an ephemeral secret, for one run."""

    def __init__(
        self,
        workdir: Path,
        *,
        scenario: str,
        agent: str = "echo",
        demo_latency_ms: float | None = None,
        config_file: str | None = None,
        secret: str | None = None,
        store_url: str | None = None,
        name: str = "server",
    ) -> None:
        self.workdir = workdir
        self.secret = secret or secrets.token_urlsafe(48)
        self.log_path = workdir / f"{name}.log"
        self.cmd = [
            sys.executable,
            "-m",
            "qa_ws_cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--agent",
            agent,
            "--log-level",
            "WARNING",
        ]
        if demo_latency_ms is not None:
            self.cmd += ["--demo-latency-ms", str(demo_latency_ms)]
        if config_file:
            self.cmd += ["--config", config_file]
        # the server's settings are this run's alone: none of the caller's WEBSOCKET_* leak in
        inherited = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEBSOCKET_")}
        self.env = {**inherited, **served_env(scenario, self.secret, workdir)}
        if store_url:
            self.env["WEBSOCKET_STORE__URL"] = store_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 30.0) -> str:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _READY.search(self.output())
            if match:
                self.url = match.group(1)
                return self.url
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise LaunchError(f"the local server did not start:\n{tail(self.output())}")

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (it drains), then SIGKILL if it takes longer than ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def reachable(url: str, timeout: float = 5.0) -> None:
    """Something listens at the URL's host and port, or LaunchError."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise LaunchError(f"cannot reach {host}:{port} ({exc.strerror or exc})") from None


def preflight(url: str, token: str | None, timeout: float = 5.0) -> None:
    """One real connection before hundreds: an unreachable server or a refused token is a
    setup problem (exit 2), better said in one line now than as N identical errors later."""
    reachable(url, timeout)
    try:
        ws = ws_connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"} if token else None,
            open_timeout=timeout,
            close_timeout=1.0,
            ping_interval=None,
            compression=None,
            proxy=None,
        )
    except InvalidStatus as exc:
        raise LaunchError(f"the server refused the connection: {_refusal_text(exc)}") from None
    except (OSError, WebSocketException) as exc:
        raise LaunchError(f"WebSocket handshake with {url} failed: {exc}") from None
    with ws:
        try:
            first = json.loads(ws.recv(timeout=timeout))
        except (OSError, ValueError, WebSocketException) as exc:
            raise LaunchError(
                f"{url} accepted the connection but sent no `connected` event: {exc}"
            ) from None
    if not isinstance(first, dict) or first.get("event") != "connected":
        raise LaunchError(f"{url} is not a qa-ws gateway: its first frame was {first!r:.120}")


def _refusal_text(exc: InvalidStatus) -> str:
    status = exc.response.status_code
    try:
        body = json.loads(exc.response.body or b"{}")
        return f"HTTP {status} {body.get('error')}: {body.get('detail')}"
    except (ValueError, AttributeError):
        return f"HTTP {status}"


@dataclass
class LoadRun:
    returncode: int
    raw: dict[str, Any] | None
    log: str


def run_load_process(
    spec: BenchSpec,
    workdir: Path,
    env: dict[str, str],
    *,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    grace_s: float = 60.0,
) -> LoadRun:
    """Run the load child to completion; killed (with its workers) after duration + grace."""
    spec_path, result_path, log_path = (
        workdir / "spec.json",
        workdir / "result.json",
        workdir / "load.log",
    )
    spec_path.write_text(spec.to_json(), encoding="utf-8")
    cmd = [
        sys.executable,
        "-m",
        "qa_ws_cli.bench.runner",
        "run",
        "--spec",
        str(spec_path),
        "--result",
        str(result_path),
    ]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            env={**env, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    wait = spec.workers_wait_s if spec.expect_workers else 0.0
    killer = threading.Timer(
        spec.total_seconds + wait + grace_s, _kill_group, (proc, signal.SIGKILL)
    )
    killer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            text = line.decode("utf-8", "replace")
            if text.startswith(PROGRESS_PREFIX) and on_progress is not None:
                on_progress(json.loads(text[len(PROGRESS_PREFIX) :]))
        returncode = proc.wait()
    except KeyboardInterrupt:
        _kill_group(proc, signal.SIGTERM)
        proc.wait(30)
        raise
    finally:
        killer.cancel()
    raw = json.loads(result_path.read_text()) if returncode == 0 and result_path.exists() else None
    return LoadRun(returncode, raw, log_path.read_text(encoding="utf-8", errors="replace"))


def _kill_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """The load child leads its own process group, with its workers in it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def run_worker_process(
    master_host: str,
    port: int,
    env: dict[str, str],
    *,
    config: Path | None = None,
    allow_remote: bool = False,
) -> int:
    """A Locust worker in the foreground (its messages on our stderr) until the master quits."""
    cmd = [
        sys.executable,
        "-m",
        "qa_ws_cli.bench.runner",
        "worker",
        "--remote",
        "--master-host",
        master_host,
        "--master-port",
        str(port),
    ]
    if config is not None:
        cmd += ["--config", str(config)]
    if allow_remote:
        cmd.append("--allow-remote")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        cmd, stdin=subprocess.DEVNULL, env={**env, "PYTHONUNBUFFERED": "1"}
    )
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        raise
