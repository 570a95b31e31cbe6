"""A ``WEBSOCKET_*`` variable that must hold JSON but does not: one line naming it, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from qa_ws_cli.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.upper().startswith("WEBSOCKET_")]:
        monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "WEBSOCKET_SECURITY__CORS__ORIGINS",
            "https://qa.example.com",
            'a list is written as ["https://qa.example.com"]',
        ),
        (
            "WEBSOCKET_SERVER__TRUSTED_PROXIES",
            "127.0.0.1/32,10.0.0.0/8",
            'a list is written as ["127.0.0.1/32", "10.0.0.0/8"]',
        ),
        ("WEBSOCKET_SERVER", "port=9000", 'an object is written as {"host": ...}'),
    ],
)
def test_config_show_names_the_variable_that_is_not_json(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(name, value)
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 1  # as the same mistake in a YAML file
    assert result.stderr.strip() == f"error: {name}: not valid JSON; {expected}"
    assert result.stdout == ""


def test_serve_refuses_a_bad_variable_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qa_ws_cli", "serve", "--dev", "--port", "0"],
        env=dict(os.environ, WEBSOCKET_SERVER__TRUSTED_PROXIES="127.0.0.1/32"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "error: WEBSOCKET_SERVER__TRUSTED_PROXIES: not valid JSON; "
        'a list is written as ["127.0.0.1/32"]'
    )
    assert "Traceback" not in done.stderr


def test_valid_json_in_the_variable_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSOCKET_SECURITY__CORS__ORIGINS", '["https://qa.example.com"]')
    result = runner.invoke(app, ["config", "show", "--changed"])
    assert result.exit_code == 0, result.output
    assert "https://qa.example.com" in result.stdout
