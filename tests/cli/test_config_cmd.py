"""`qa-ws config show|validate` as a user meets them: full names at any width, real sources."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qa_ws_cli.cli.main import app
from qa_ws_cli.config import Settings, flatten

runner = CliRunner()
NAMES = {f"websocket.{path}" for path in flatten(Settings.model_validate({}))}
ENV_NAME = "WEBSOCKET_SECURITY__RATE_LIMITING__MAX_REQUESTS_PER_MINUTE"


@pytest.fixture
def my_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file that changes one value and restates another's default; an env var changes a third."""
    monkeypatch.chdir(tmp_path)
    for name in [k for k in os.environ if k.upper().startswith("WEBSOCKET_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(ENV_NAME, "120")
    path = tmp_path / "my.yaml"
    path.write_text("websocket:\n  server:\n    port: 9000\n    name: qa-ws\n")
    return path


@pytest.mark.parametrize("columns", [40, 80, 120, 200])
def test_show_prints_every_name_whole_at_any_width(my_config: Path, columns: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", "config", "show", "--config", str(my_config)],
        env=dict(os.environ, COLUMNS=str(columns), TERM="xterm"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    shown = set(re.findall(r"(?<![\w.])websocket(?:\.\w+)+", done.stdout))
    assert shown == NAMES  # each one whole: a cut name would be missing or a different word
    assert "…" not in done.stdout
    flat = re.sub(r"\s+", "", done.stdout)  # values and sources may wrap; their text is all there
    assert re.search(rf"websocket\.server\.port9000\(?file{re.escape(str(my_config))}", flat)
    assert re.search(rf"max_requests_per_minute120\(?env{ENV_NAME}", flat)


def test_show_names_the_real_source_of_each_value(my_config: Path) -> None:
    result = runner.invoke(app, ["config", "show", "--json", "--config", str(my_config)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {name.removeprefix("websocket.") for name in NAMES}
    assert data["server.port"] == {
        "value": 9000,
        "source": f"file {my_config}",
        "changed": True,
        "default": 8765,
    }
    assert data["server.name"] == {
        "value": "qa-ws",
        "source": f"file {my_config}",
        "changed": False,
    }
    assert data["security.rate_limiting.max_requests_per_minute"]["source"] == f"env {ENV_NAME}"
    assert data["limits.max_message_bytes"] == {
        "value": 65536,
        "source": "default",
        "changed": False,
    }


def test_show_changed_lists_only_what_differs_from_the_defaults(my_config: Path) -> None:
    as_json = runner.invoke(app, ["config", "show", "--changed", "--json", "-c", str(my_config)])
    assert as_json.exit_code == 0
    assert set(json.loads(as_json.stdout)) == {
        "server.port",
        "security.rate_limiting.max_requests_per_minute",
    }
    table = runner.invoke(app, ["config", "show", "--changed", "-c", str(my_config)])
    assert table.exit_code == 0
    shown = set(re.findall(r"websocket(?:\.\w+)+", table.stdout))
    assert shown == {
        "websocket.server.port",
        "websocket.security.rate_limiting.max_requests_per_minute",
    }
    assert f"2 of {len(NAMES)} differ from the defaults" in table.stdout  # of all settings


def test_show_changed_counts_out_of_every_setting_when_none_differs(
    my_config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_NAME)
    result = runner.invoke(app, ["config", "show", "--changed"])
    assert result.exit_code == 0, result.output
    assert f"0 of {len(NAMES)} differ from the defaults" in result.stdout
    assert len(NAMES) > 60  # the header counts the whole tree, not the rows shown


def test_show_redacts_the_secret(my_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSOCKET_SECRET_KEY", "hush-" * 10)
    for args in (["config", "show"], ["config", "show", "--json"], ["config", "show", "--changed"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 0 and "hush-" not in result.output
        assert "**********" in result.output and "env WEBSOCKET_SECRET_KEY" in result.output


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "server:\n    prot: 9000\n",
            "error: websocket.server.prot: unknown setting; did you mean `port`?",
        ),
        (
            "limits:\n    max_mesage_bytes: 1000\n",
            "error: websocket.limits.max_mesage_bytes: unknown setting; "
            "did you mean `max_message_bytes`?",
        ),
    ],
)
def test_validate_suggests_the_nearest_key(tmp_path: Path, body: str, expected: str) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text("websocket:\n  " + body)
    result = runner.invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == expected
    assert "Extra inputs" not in result.output
