"""``qa-ws demo`` end to end (its own server process), and its steps against in-process servers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from qa_ws_cli.cli.demo import authentication, basic_chat, percentile, stress
from qa_ws_cli.config import Settings, load_settings

pytestmark = pytest.mark.timeout(60)


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", WEBSOCKET_SECURITY__AUTHENTICATION__ENABLED="false")
    return subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", "demo", *args],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
    )


def test_demo_plays_every_step_and_exits_0() -> None:
    # the caller's WEBSOCKET_* (here: auth off) must not leak into the demo's server
    done = run_demo()
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "Traceback" not in out + done.stderr
    assert re.search(r"agent \u203a To test a login form.*screen reader\.\n5 deltas", out)
    for refusal in ("401 missing_token", "401 invalid_token", "401 token_expired"):
        assert f"expected {refusal}, got {refusal}" in out
    assert "expected connected, got connected" in out
    assert re.search(r"answers\s+100 / 100", out)
    assert re.search(r"errors\s+0 *\n", out)
    assert re.search(r"latency p95\s+\d+ ms", out)
    assert "server drained and stopped (exit code 0)" in out
    assert out.rstrip().endswith("all demos passed")


def test_demo_fails_in_one_line_when_the_server_cannot_start() -> None:
    done = run_demo("--agent", "python:no_such_module_here:agent")
    assert done.returncode == 1
    assert "the demo server did not start: cannot import 'no_such_module_here'" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_percentile_is_a_nearest_rank_sample() -> None:
    samples = [float(n) for n in range(100, 0, -1)]
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 95) == 95.0
    assert percentile(samples, 100) == 100.0
    assert percentile([7.0], 95) == 7.0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Overrides tests/conftest.py's: a gateway with authentication off, for a failing step."""
    overrides: dict[str, Any] = {
        "security": {
            "secret_key": "s" * 48,
            "authentication": {
                "enabled": False,
                "revocation_file": str(tmp_path / "revoked.jsonl"),
            },
        },
        "agent": {"demo_latency_ms": 10},
    }
    return load_settings(Path(os.devnull), overrides, environ={}).settings


async def test_steps_tell_success_from_failure(gateway: Any, settings: Settings) -> None:
    assert await basic_chat(gateway.url, settings)
    assert await stress(gateway.url, settings, clients=4, questions=2)
    # with authentication off the refusals do not happen: the step must fail
    assert not await authentication(gateway.url, settings)


async def test_stress_counts_errors(gateway: Any, settings: Settings) -> None:
    await gateway.gateway.drain()  # draining: every new connection is refused (503)
    assert not await stress(gateway.url, settings, clients=3, questions=2)
