"""Settings: defaults < YAML < environment < flags, with provenance and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from qa_ws_cli.config import (
    ConfigError,
    ensure_secret,
    flatten,
    load_settings,
    parse_duration,
    validate_file,
)

YAML = """
websocket:
  enabled: true
  server:
    host: 0.0.0.0
    port: 9001
    max_connections: 500
  security:
    authentication:
      enabled: true
      token_expiry: 7200
    cors:
      enabled: true
      origins: ["https://qa.example.com"]
    rate_limiting:
      enabled: true
      max_requests_per_minute: 30
"""


def test_layers_in_order_with_provenance(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(YAML)
    loaded = load_settings(
        cfg,
        {"server": {"host": "127.0.0.2"}},
        environ={
            "WEBSOCKET_PORT": "9100",
            "WEBSOCKET_SECURITY__RATE_LIMITING__MAX_REQUESTS_PER_MINUTE": "45",
        },
    )
    s = loaded.settings
    assert s.server.host == "127.0.0.2"  # flag beats file
    assert s.server.port == 9100  # environment beats file
    assert s.server.max_connections == 500  # file beats default
    assert s.security.rate_limiting.max_requests_per_minute == 45
    assert s.security.cors.origins == ["https://qa.example.com"]
    assert s.limits.max_message_bytes == 64 * 1024  # default
    assert loaded.origins["server.host"] == "flag"
    assert loaded.origins["server.port"] == "environment"
    assert loaded.origins["server.max_connections"] == f"file {cfg}"
    assert "limits.max_message_bytes" not in loaded.origins


def test_the_plans_variables_work(tmp_path: Path) -> None:
    s = load_settings(
        None,
        environ={
            "WEBSOCKET_ENABLED": "false",
            "WEBSOCKET_HOST": "::1",
            "WEBSOCKET_PORT": "1234",
            "WEBSOCKET_SECRET_KEY": "s" * 40,
            "WEBSOCKET_AGENT__SPEC": "echo",
            "WEBSOCKET_SECURITY__CORS__ORIGINS": '["http://a", "http://b"]',
        },
    ).settings
    assert (s.enabled, s.server.host, s.server.port) == (False, "::1", 1234)
    assert s.secret() == "s" * 40 and s.agent.spec == "echo"
    assert s.security.cors.origins == ["http://a", "http://b"]


def test_bad_values_name_the_field_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"websocket\.server\.port"):
        load_settings(None, environ={"WEBSOCKET_PORT": "eighty"})
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "websocket:\n  security:\n    rate_limiting:\n      max_requests_per_minute: -1\n"
    )
    with pytest.raises(ConfigError) as caught:
        validate_file(cfg)
    assert caught.value.path == "websocket.security.rate_limiting.max_requests_per_minute"
    cfg.write_text("websocket:\n  server:\n    prot: 1\n")
    with pytest.raises(ConfigError, match=r"websocket\.server\.prot"):
        validate_file(cfg)
    cfg.write_text("websocket: [1, 2]\n")
    with pytest.raises(ConfigError, match="mapping"):
        validate_file(cfg)
    cfg.write_text("- a\n")
    with pytest.raises(ConfigError, match="mapping"):
        validate_file(cfg)
    cfg.write_text("websocket: {server: [}\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        validate_file(cfg)
    with pytest.raises(ConfigError, match="cannot read"):
        validate_file(tmp_path / "missing.yaml")


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("")
    assert validate_file(cfg).server.port == 8765


def test_repo_configs_are_valid() -> None:
    root = Path(__file__).resolve().parents[1] / "configs"
    files = sorted(root.glob("*.yaml"))
    assert files, "configs/*.yaml ship with the repo"
    for path in files:
        validate_file(path)


def test_flatten_redacts_secrets() -> None:
    s = load_settings(None, environ={"WEBSOCKET_SECRET_KEY": "topsecret" * 5}).settings
    flat = flatten(s)
    assert flat["security.secret_key"] == "**********"
    assert "topsecret" not in repr(flat)
    assert flat["server.port"] == 8765


def test_ensure_secret() -> None:
    weak = load_settings(None, environ={"WEBSOCKET_SECRET_KEY": "short"}).settings
    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        ensure_secret(weak, dev=False)
    with pytest.raises(ConfigError, match="shorter"):
        ensure_secret(weak, dev=True)  # --dev never silently replaces a configured key
    none = load_settings(None, environ={}).settings
    with pytest.raises(ConfigError, match=r"missing.*WEBSOCKET_SECRET_KEY"):
        ensure_secret(none, dev=False)
    dev = ensure_secret(none, dev=True)
    assert len(dev.secret() or "") >= 32
    off = load_settings(
        None, {"security": {"authentication": {"enabled": False}}}, environ={}
    ).settings
    assert ensure_secret(off, dev=False) is off


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("2d", 172800),
        ("250ms", 0.25),
        ("1.5h", 5400),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1w", "-1s", "soon"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
