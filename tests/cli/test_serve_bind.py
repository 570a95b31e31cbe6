"""`qa-ws serve` on a port it cannot have: the bind error first and alone, a hint, exit 2."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from qa_ws_cli.server.runner import BindError, bind
from tests.conftest import ServerProcess, server_env

pytestmark = pytest.mark.timeout(60)


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", "serve", "--dev", *args],
        env=server_env(tmp_path, XDG_STATE_HOME=str(tmp_path / "state")),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=40,
    )


def test_a_port_in_use_prints_the_bind_error_alone_with_a_port_hint(
    tmp_path: Path, spawn_server: Callable[..., ServerProcess]
) -> None:
    running = spawn_server()
    port = urlsplit(running.url).port
    assert port is not None
    done = serve(tmp_path, "--port", str(port))
    assert done.returncode == 2
    assert done.stdout == ""  # no banner, no token
    assert done.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use (another qa-ws "
        f"serve?): choose another port with --port {port + 1}, or --port 0 for a free one"
    ]
    assert running.proc.poll() is None  # the server holding the port is untouched
    assert running.stop() == 0


@pytest.mark.parametrize(
    ("host", "reason"),
    [("192.0.2.1", "Cannot assign requested address"), ("no-such-host.invalid", "")],
)
def test_a_host_that_is_not_here_says_to_check_host(tmp_path: Path, host: str, reason: str) -> None:
    done = serve(tmp_path, "--host", host, "--port", "0")
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on {host}:0: {reason}")
    assert "--host must be an address of this machine" in lines[0]


def test_bind_gives_every_address_one_port_and_refuses_a_taken_one() -> None:
    sockets = bind("", 0)  # every interface: 0.0.0.0 and, where there is IPv6, ::
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1 and 0 not in ports
        families = {sock.family for sock in sockets}
        assert socket.AF_INET in families
        with pytest.raises(BindError) as caught:
            bind("127.0.0.1", ports.pop())
        assert "Address already in use" in caught.value.message
        assert "while attempting" not in caught.value.message
    finally:
        for sock in sockets:
            sock.close()
