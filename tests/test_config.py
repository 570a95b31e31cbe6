"""Settings: defaults < YAML < environment < flags, with provenance and clear errors."""

from __future__ import annotations

import re
import stat
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
from qa_ws_cli.devsecret import dev_secret_path, keep_dev_secret

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


def test_an_empty_environ_means_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBSOCKET_SERVER__PORT", "9001")
    monkeypatch.setenv("WEBSOCKET_LIMITS__HEARTBEAT_S", "3")
    isolated = load_settings(None, environ={}).settings
    assert (isolated.server.port, isolated.limits.heartbeat_s) == (8765, 20.0)
    loaded = load_settings(None)
    assert (loaded.settings.server.port, loaded.settings.limits.heartbeat_s) == (9001, 3.0)
    assert loaded.source("server.port") == "env WEBSOCKET_SERVER__PORT"


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


def test_ensure_secret(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    weak = load_settings(None, environ={"WEBSOCKET_SECRET_KEY": "short"}).settings
    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        ensure_secret(weak, dev=False, environ=env)
    with pytest.raises(ConfigError, match="shorter"):
        ensure_secret(weak, dev=True, environ=env)  # --dev never silently replaces a configured key
    none = load_settings(None, environ={}).settings
    with pytest.raises(ConfigError, match=r"missing.*WEBSOCKET_SECRET_KEY"):
        ensure_secret(none, dev=False, environ=env)
    dev, kept_in = ensure_secret(none, dev=True, environ=env)
    assert kept_in == tmp_path / "state" / "qa-ws" / "dev-secret"
    assert len(dev.secret() or "") >= 32 and kept_in.read_text().strip() == dev.secret()
    assert ensure_secret(none, dev=True, environ=env)[0].secret() == dev.secret()  # kept
    off = load_settings(
        None, {"security": {"authentication": {"enabled": False}}}, environ={}
    ).settings
    assert ensure_secret(off, dev=False) == (off, None)


def test_the_dev_secret_fills_in_only_a_missing_secret(tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert load_settings(None, environ=env, dev_secret=True).settings.secret() is None  # none kept
    kept, created = keep_dev_secret(dev_secret_path(env))
    assert created and keep_dev_secret(dev_secret_path(env)) == (kept, False)
    loaded = load_settings(None, environ=env, dev_secret=True)
    assert loaded.settings.secret() == kept
    assert loaded.source("security.secret_key") == f"dev secret {dev_secret_path(env)}"
    assert load_settings(None, environ=env).settings.secret() is None  # only when asked
    configured = {**env, "WEBSOCKET_SECRET_KEY": "c" * 40}
    assert load_settings(None, environ=configured, dev_secret=True).settings.secret() == "c" * 40


def test_state_dir_follows_xdg_and_ignores_a_relative_one(tmp_path: Path) -> None:
    assert dev_secret_path({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "qa-ws/dev-secret"
    home = Path.home() / ".local/state/qa-ws/dev-secret"
    assert dev_secret_path({"XDG_STATE_HOME": "relative/dir"}) == home
    assert dev_secret_path({}) == home


@pytest.mark.parametrize(
    ("content", "mode", "problem"),
    [("s" * 64, 0o640, "open to other users (mode 0640)"), ("short", 0o600, "shorter than 32")],
)
def test_an_unusable_dev_secret_is_refused_and_left_alone(
    tmp_path: Path, content: str, mode: int, problem: str
) -> None:
    path = tmp_path / "dev-secret"
    path.write_text(content)
    path.chmod(mode)
    with pytest.raises(ConfigError, match=re.escape(problem)):
        keep_dev_secret(path)
    assert path.read_text() == content and stat.S_IMODE(path.stat().st_mode) == mode


def test_sources_name_the_environment_variable(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("websocket:\n  server:\n    max_connections: 5\n    port: 9001\n")
    loaded = load_settings(
        cfg,
        {"server": {"host": "127.0.0.2"}},
        environ={
            "WEBSOCKET_PORT": "9100",
            "websocket_limits__heartbeat_s": "5",
            "WEBSOCKET_SECURITY": '{"cors": {"origins": ["http://a"]}, '
            '"rate_limiting": {"burst": 3}}',
            "WEBSOCKET_SECURITY__RATE_LIMITING__BURST": "4",
        },
    )
    assert loaded.settings.security.rate_limiting.burst == 4  # the deeper name wins
    assert loaded.source("server.port") == "env WEBSOCKET_PORT"
    assert loaded.source("limits.heartbeat_s") == "env websocket_limits__heartbeat_s"
    assert loaded.source("security.cors.origins") == "env WEBSOCKET_SECURITY"
    assert loaded.source("security.rate_limiting.burst") == (
        "env WEBSOCKET_SECURITY__RATE_LIMITING__BURST"
    )
    assert loaded.source("server.max_connections") == f"file {cfg}"
    assert loaded.source("server.host") == "flag"
    assert loaded.source("limits.max_message_bytes") == "default"


@pytest.mark.parametrize(
    ("yaml_text", "path", "hint"),
    [
        ("server:\n  prot: 1\n", "websocket.server.prot", "did you mean `port`?"),
        ("sever:\n  port: 1\n", "websocket.sever", "did you mean `server`?"),
        (
            "security:\n  rate_limiting:\n    max_request_per_minute: 5\n",
            "websocket.security.rate_limiting.max_request_per_minute",
            "did you mean `max_requests_per_minute`?",
        ),
        ("logging:\n  zzz: 1\n", "websocket.logging.zzz", "valid here: `format`, `level`"),
    ],
)
def test_an_unknown_key_gets_the_nearest_valid_one(
    tmp_path: Path, yaml_text: str, path: str, hint: str
) -> None:
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("websocket:\n" + "".join("  " + line + "\n" for line in yaml_text.splitlines()))
    with pytest.raises(ConfigError) as caught:
        validate_file(cfg)
    assert caught.value.path == path
    assert caught.value.message == f"{path}: unknown setting; {hint}"
    assert "Extra inputs" not in caught.value.message


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


@pytest.mark.parametrize("text", ["", "h", "1w", "-1s", "soon", "²s", "\u0661\u0660m"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
