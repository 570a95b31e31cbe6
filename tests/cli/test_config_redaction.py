"""`qa-ws config show` (the table, --changed, --json) never prints a URL's password: a store
URL from the environment, an agent spec with user:password from a file, a bad port or an
IPv6 host included. Before, only SecretStr settings were redacted. Real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PASSWORDS = ("pw-env-1", "s3cret-file-2", "pw-v6-3")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("WEBSOCKET_")}
    return clean | {"COLUMNS": "300", "WEBSOCKET_STORE__URL": "redis://:pw-env-1@127.0.0.1:1/0"}


def show(config: Path, env: dict[str, str], *flags: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", "config", "show", "-c", str(config), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_no_password_of_any_url_valued_setting_is_shown(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "websocket:\n"
        "  agent:\n"
        "    spec: agno+http://bob:s3cret-file-2@127.0.0.1:99999/agents/qa\n"
        "  security:\n"
        "    authentication:\n"
        "      jwks_url: https://kid:pw-v6-3@[::1]:8443/jwks.json\n"
    )
    for flags in ((), ("--changed",), ("--json",), ("--json", "--changed")):
        out = show(config, env, *flags)
        assert not [p for p in PASSWORDS if p in out], (flags, out)
    shown = json.loads(show(config, env, "--json", "--changed"))
    assert shown["store.url"]["value"] == "redis://:***@127.0.0.1:1/0"
    assert shown["agent.spec"]["value"] == "agno+http://bob:***@127.0.0.1:99999/agents/qa"
    assert shown["security.authentication.jwks_url"]["value"] == (
        "https://kid:***@[::1]:8443/jwks.json"
    )
