"""Settings: defaults < YAML file < environment < flags. The only module that reads env or files.

The YAML follows the original plan (a ``websocket:`` root with ``server``, ``security`` ...).
Environment variables use the ``WEBSOCKET_`` prefix and ``__`` between levels
(``WEBSOCKET_SECURITY__RATE_LIMITING__MAX_REQUESTS_PER_MINUTE=120``); the plan's short names
``WEBSOCKET_HOST``, ``WEBSOCKET_PORT`` and ``WEBSOCKET_SECRET_KEY`` work too.
``load_settings`` also records where each value came from, for ``qa-ws config show``.

``qa-ws serve --dev`` keeps its generated secret in a state file (``dev_secret_path``) so that
tokens minted by ``qa-ws token issue`` or ``--sub`` work against it and survive its restarts.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, SettingsError

from qa_ws_cli.config_env import env_json_error
from qa_ws_cli.devsecret import MIN_SECRET_BYTES, dev_secret_path, keep_dev_secret, read_dev_secret
from qa_ws_cli.errors import ConfigError

ENV_PREFIX = "WEBSOCKET_"
DEFAULT_CONFIG = Path("configs/default.yaml")
MAX_TOKEN_TTL_S = 366 * 86400  # `token issue` refuses longer lifetimes (a year and a day)
_ENV_ALIASES = {
    "WEBSOCKET_HOST": ("server", "host"),
    "WEBSOCKET_PORT": ("server", "port"),
    "WEBSOCKET_SECRET_KEY": ("security", "secret_key"),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class SSLSettings(_Section):
    certfile: Path | None = None
    keyfile: Path | None = None


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    # The plan's example said 100, below its own "100+ connections" target.
    max_connections: int = Field(10_000, ge=1)
    max_connections_per_user: int = Field(10, ge=1)
    name: str = "qa-ws"
    event_loop: Literal["auto", "uvloop", "asyncio"] = Field(
        "auto", description="auto: uvloop when it is installed (it is, on Linux and macOS)"
    )
    ssl: SSLSettings = SSLSettings()
    # proxies (addresses or networks) whose X-Forwarded-For names the real client, e.g. nginx
    trusted_proxies: list[IPvAnyNetwork] = []
    # Timeouts and limits before the upgrade (docs/security.md)
    handshake_timeout_s: float = Field(
        10.0, gt=0, description="a connection must send its first request head within this"
    )
    keepalive_timeout_s: float = Field(
        15.0, gt=0, description="plain HTTP: an idle keep-alive connection is closed after this"
    )
    max_connections_per_ip: int = Field(
        128, ge=1, description="open TCP connections per client address (upgraded or not)"
    )


class AuthenticationSettings(_Section):
    enabled: bool = True
    token_expiry: int = Field(
        3600, ge=1, le=MAX_TOKEN_TTL_S, description="seconds a token issued here lives"
    )
    algorithm: Literal["HS256", "HS384", "HS512", "RS256", "ES256"] = "HS256"
    public_key_file: Path | None = None
    private_key_file: Path | None = None
    jwks_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = Field(0.0, ge=0)
    revocation_file: Path = Field(
        default_factory=lambda: default_revocation_file(),
        description="absolute; a relative path in a config file is relative to that file",
    )
    expiring_notice_s: float = Field(60.0, ge=0)


def default_revocation_file() -> Path:
    """``$XDG_STATE_HOME/qa-ws/revoked.jsonl`` (``~/.local/state`` without it): one list per user
    account, whatever directory ``serve`` or ``token revoke`` was started in."""
    state = os.environ.get("XDG_STATE_HOME", "").strip()
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local/state"
    return base / "qa-ws" / "revoked.jsonl"


class MetricsSettings(_Section):
    token: SecretStr | None = Field(
        None, description="if set, GET /metrics needs Authorization: Bearer <this token>"
    )
    public: bool = Field(
        False, description="serve /metrics without a token on a non-loopback bind too"
    )


class CorsSettings(_Section):
    enabled: bool = True
    origins: list[str] = ["http://127.0.0.1:8765", "http://localhost:8765"]


class RateLimitSettings(_Section):
    enabled: bool = True
    max_requests_per_minute: int = Field(60, ge=1)
    burst: int = Field(10, ge=1, description="messages allowed within one second")
    abuse_factor: float = Field(
        2.0, gt=0, description="close with 1008 once rejections in a minute exceed factor x limit"
    )


class SecuritySettings(_Section):
    secret_key: SecretStr | None = None
    authentication: AuthenticationSettings = AuthenticationSettings()
    cors: CorsSettings = CorsSettings()
    rate_limiting: RateLimitSettings = RateLimitSettings()


class LimitSettings(_Section):
    max_message_bytes: int = Field(64 * 1024, ge=64)
    max_content_chars: int = Field(8000, ge=1)
    max_inflight_per_connection: int = Field(4, ge=1)
    send_queue_bytes: int = Field(1024 * 1024, ge=1024)
    heartbeat_s: float = Field(20.0, ge=0, description="0 turns server pings off")
    idle_timeout_s: float = Field(0.0, ge=0, description="0: no idle timeout")
    max_frames_per_second: int = Field(
        100, ge=1, description="per connection, every frame type; past it: rate_limited"
    )
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="POST /files, per file")
    file_ttl_s: float = Field(3600.0, gt=0, description="how long an uploaded file is kept")
    file_url_ttl_s: float = Field(300.0, gt=0, description="signed URLs of produced files")
    files_memory_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="total size of files in the in-memory store"
    )


class SessionSettings(_Section):
    buffer_events: int = Field(200, ge=0)
    buffer_age_s: float = Field(600.0, ge=0)
    ttl_s: float = Field(900.0, ge=1, description="a session with no connection lives this long")
    max_answered_ids: int = Field(500, ge=0)
    history_turns: int = Field(10, ge=0)
    run_lease_s: float = Field(
        5.0, gt=0, description="an answer's claim lapses this long after its instance died"
    )


class NotificationSettings(_Section):
    inbox_size: int = Field(
        100, ge=1, le=100_000, description="notifications kept per offline user (oldest dropped)"
    )
    ttl_s: float = Field(86400.0, gt=0, description="a kept notification is dropped after this")
    max_data_bytes: int = Field(
        4096, ge=2, le=65536, description="the largest 'data' object of POST /admin/notify"
    )


class AgentSettings(_Section):
    spec: str = "demo"
    timeout_s: float = Field(30.0, gt=0)
    connect_timeout_s: float = Field(5.0, gt=0)
    retries: int = Field(2, ge=0)
    demo_latency_ms: float = Field(200.0, ge=0)
    model: str | None = None
    system_prompt: str | None = None
    api_key_env: str | None = None
    max_concurrency: int = Field(64, ge=1)
    max_queue: int = Field(256, ge=0)


class LoggingSettings(_Section):
    format: Literal["console", "json"] = "console"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class ShutdownSettings(_Section):
    drain_timeout_s: float = Field(10.0, ge=0)
    reconnect_after_ms: int = Field(1000, ge=0)


STORE_SCHEMES = ("redis", "rediss", "unix")


# scheme://user:password@ anywhere in a value (a store URL, an agent spec's agno+http://…)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^/@\s]*@")


def redact_url(url: str) -> str:
    """``url`` (or any text holding URLs) without their passwords: never print one. Read as
    text, not parsed: a bad port or an IPv6 host must not let a password through."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", url)


def store_scheme_problem(url: str) -> str | None:
    """Why a store URL is not one Redis speaks, or None when it is."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in STORE_SCHEMES:
        return None
    return (
        f"the scheme must be one of {', '.join(STORE_SCHEMES)} "
        f"(e.g. redis://127.0.0.1:6379/0), not {scheme or 'missing'!r}"
    )


class StoreSettings(_Section):
    url: str | None = Field(
        None, description="redis://host:port/db, rediss://… or unix:///path; null: in memory"
    )

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is None or not url.strip():
            return None
        problem = store_scheme_problem(url)
        if problem:
            raise ValueError(problem)
        return url


class Settings(BaseSettings):
    """Everything the gateway and the tools need, as one validated tree."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    enabled: bool = True
    server: ServerSettings = ServerSettings()
    security: SecuritySettings = SecuritySettings()
    limits: LimitSettings = LimitSettings()
    sessions: SessionSettings = SessionSettings()
    agent: AgentSettings = AgentSettings()
    logging: LoggingSettings = LoggingSettings()
    shutdown: ShutdownSettings = ShutdownSettings()
    store: StoreSettings = StoreSettings()
    metrics: MetricsSettings = MetricsSettings()
    notifications: NotificationSettings = NotificationSettings()

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: Any, *_sources: Any, **_named: Any
    ) -> tuple[Any, ...]:
        """Only the values given: ``load_settings`` layers file, environment and flags itself
        (so ``environ={}`` means no environment, and the defaults are the built-in ones)."""
        return (init_settings,)

    def secret(self) -> str | None:
        key = self.security.secret_key
        return key.get_secret_value() if key is not None else None


@dataclass
class LoadedSettings:
    settings: Settings
    # dotted path -> "file PATH", "environment", "flag" or "dev secret PATH"; absent: default
    origins: dict[str, str] = field(default_factory=dict)
    config_file: Path | None = None
    # dotted path -> the environment variable that set it, for the paths from "environment"
    env_names: dict[str, str] = field(default_factory=dict)

    def source(self, path: str) -> str:
        """Where a value came from, as a user would name it: ``default``, ``file configs/x.yaml``,
        ``env WEBSOCKET_PORT``, ``flag``, ``dev secret ~/.local/state/qa-ws/dev-secret``."""
        origin = self.origins.get(path, "default")
        if origin == "environment" and path in self.env_names:
            return f"env {self.env_names[path]}"
        return origin


def _merge(
    into: dict[str, Any],
    layer: dict[str, Any],
    origin: str,
    origins: dict[str, str],
    prefix: str = "",
) -> None:
    for key, value in layer.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value, origin, origins, path + ".")
        elif isinstance(value, dict):
            into[key] = {}
            _merge(into[key], value, origin, origins, path + ".")
        else:
            into[key] = value
            origins[path] = origin


def read_yaml(path: Path) -> dict[str, Any]:
    """The ``websocket:`` section of a config file (a file without that root is taken whole)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}", path=str(path)
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", path=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping", path="websocket")
    section = data.get("websocket", data)
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'websocket' must be a mapping", path="websocket")
    return section


def _env_source(env: Mapping[str, str]) -> dict[str, Any]:
    source = EnvSettingsSource(
        Settings, env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=False
    )
    source.env_vars = {k.lower(): v for k, v in env.items()}
    values: dict[str, Any] = source()
    return values


def _env_layer(name: str, value: str) -> dict[str, Any]:
    try:
        return _env_source({name: value})
    except SettingsError:  # a list or object setting whose value does not parse as JSON
        raise env_json_error(Settings, name[len(ENV_PREFIX) :], name, value) from None


def env_layers(environ: Mapping[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """One layer per ``WEBSOCKET_*`` variable, named by it, in the order they apply.

    Deeper names apply after shallower ones (``WEBSOCKET_SERVER__PORT`` over a JSON
    ``WEBSOCKET_SERVER``), as pydantic-settings merges them; the short aliases come last.
    """
    env = dict(os.environ if environ is None else environ)
    names = [k for k in env if k.upper().startswith(ENV_PREFIX) and k.upper() not in _ENV_ALIASES]
    layers: list[tuple[str, dict[str, Any]]] = []
    for name in sorted(names, key=lambda k: (k.count("__"), k)):
        layer = _env_layer(name, env[name])
        if layer:
            layers.append((name, layer))
    for name, (section, key) in _ENV_ALIASES.items():
        if name in env:
            layers.append((name, {section: {key: env[name]}}))
    return layers


def _error_path(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors(include_url=False)[0]
    path = ".".join(str(p) for p in ("websocket", *err["loc"]))
    if err["type"] == "extra_forbidden":
        return path, unknown_key_message(tuple(str(p) for p in err["loc"]))
    return path, err["msg"]


def _section_at(loc: tuple[str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for name in loc:
        info = model.model_fields.get(name)
        annotation = info.annotation if info is not None else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def unknown_key_message(loc: tuple[str, ...]) -> str:
    """``unknown setting; did you mean `port`?`` for a key that is not a field where it sits."""
    section = _section_at(loc[:-1])
    if section is None:
        return "unknown setting"
    valid = list(section.model_fields)
    close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.6)
    if close:
        return f"unknown setting; did you mean `{close[0]}`?"
    return "unknown setting; valid here: " + ", ".join(f"`{name}`" for name in valid)


def load_settings(
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    dev_secret: bool = False,
) -> LoadedSettings:
    """Layer the sources; raise ``ConfigError`` naming the bad field's path.

    With ``dev_secret``, a secret kept by ``qa-ws serve --dev`` fills in a missing one.
    """
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    path = config_file
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    if path is not None:
        _merge(merged, read_yaml(path), f"file {path}", origins)
    env_names: dict[str, str] = {}
    for name, layer in env_layers(environ):
        _merge(merged, layer, name, env_names)
    origins.update(dict.fromkeys(env_names, "environment"))
    _merge(merged, overrides or {}, "flag", origins)
    for flagged in (p for p in origins if origins[p] == "flag"):
        env_names.pop(flagged, None)
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        where, msg = _error_path(exc)
        raise ConfigError(f"{where}: {msg}", path=where) from None
    settings = _absolute_revocation_file(settings, origins, path)
    loaded = LoadedSettings(settings, origins, path, env_names)
    if dev_secret:
        kept = with_dev_secret(settings, environ)
        if kept is not settings:
            loaded.settings = kept
            loaded.origins["security.secret_key"] = f"dev secret {dev_secret_path(environ)}"
    return loaded


def _absolute_revocation_file(
    settings: Settings, origins: dict[str, str], config_file: Path | None
) -> Settings:
    """A relative revocation list is relative to the config file that names it (else to the
    working directory, once, here): ``serve`` and ``token revoke`` then share one file."""
    auth = settings.security.authentication
    if auth.revocation_file.is_absolute():
        return settings
    from_file = origins.get("security.authentication.revocation_file", "").startswith("file ")
    base = config_file.resolve().parent if from_file and config_file else Path.cwd()
    resolved = auth.model_copy(update={"revocation_file": base / auth.revocation_file})
    security = settings.security.model_copy(update={"authentication": resolved})
    return settings.model_copy(update={"security": security})


def validate_file(path: Path) -> Settings:
    try:
        return Settings.model_validate(read_yaml(path))
    except ValidationError as exc:
        where, msg = _error_path(exc)
        raise ConfigError(f"{where}: {msg}", path=where) from None


def flatten(settings: Settings) -> dict[str, Any]:
    """Dotted paths to values, secrets redacted (for ``config show``)."""
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        if isinstance(obj, BaseModel):
            for name in type(obj).model_fields:
                walk(getattr(obj, name), f"{prefix}{name}.")
        else:
            key = prefix[:-1]
            if isinstance(obj, SecretStr):
                out[key] = "**********"
            elif isinstance(obj, Path):
                out[key] = str(obj)
            elif isinstance(obj, str):  # a URL's password (store.url, agent.spec, ...)
                out[key] = redact_url(obj)
            elif isinstance(obj, list | tuple):
                out[key] = [redact_url(v) if isinstance(v, str) else v for v in obj]
            else:
                out[key] = obj

    walk(settings, "")
    return out


# -- the signing secret -----------------------------------------------------------------------


def _needs_shared_secret(settings: Settings) -> bool:
    auth = settings.security.authentication
    return auth.enabled and not auth.jwks_url and auth.algorithm.startswith("HS")


def _with_secret(settings: Settings, secret: str) -> Settings:
    security = settings.security.model_copy(update={"secret_key": SecretStr(secret)})
    return settings.model_copy(update={"security": security})


def with_dev_secret(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """The settings, with the secret ``serve --dev`` kept when none is configured."""
    if settings.secret() is not None or not _needs_shared_secret(settings):
        return settings
    kept = read_dev_secret(dev_secret_path(environ))
    return settings if kept is None else _with_secret(settings, kept)


def ensure_secret(
    settings: Settings, *, dev: bool, environ: Mapping[str, str] | None = None
) -> tuple[Settings, Path | None]:
    """Authentication needs a strong key; ``--dev`` keeps one in the state file instead.

    Every HMAC algorithm (HS256/384/512) needs a secret of 32+ bytes, whatever else is set; an
    asymmetric one needs a readable public key file, or a JWKS URL. Returns the settings to
    serve with, and the dev secret's file when that is the key.
    """
    auth = settings.security.authentication
    if not auth.enabled or auth.jwks_url:
        return settings, None
    if not auth.algorithm.startswith("HS"):
        _check_key_file(auth)
        return settings, None
    secret = settings.secret()
    if secret is not None and len(secret.encode()) >= MIN_SECRET_BYTES:
        return settings, None
    if dev and secret is None:
        path = dev_secret_path(environ)
        return _with_secret(settings, keep_dev_secret(path)[0]), path
    problem = "is missing" if secret is None else f"is shorter than {MIN_SECRET_BYTES} bytes"
    raise ConfigError(
        f"the signing secret {problem}: set WEBSOCKET_SECRET_KEY to {MIN_SECRET_BYTES}+ random "
        "bytes (e.g. `export WEBSOCKET_SECRET_KEY=$(python -c 'import secrets; "
        "print(secrets.token_urlsafe(48))')`), or use --dev for a development secret kept in "
        f"{dev_secret_path(environ)}",
        path="websocket.security.secret_key",
    )


def _check_key_file(auth: AuthenticationSettings) -> None:
    where = "websocket.security.authentication.public_key_file"
    if auth.public_key_file is None:
        raise ConfigError(
            f"{auth.algorithm} needs security.authentication.public_key_file (or jwks_url)",
            path=where,
        )
    try:
        with auth.public_key_file.open("rb") as fh:
            head = fh.read(64)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the public key file {auth.public_key_file}: {exc.strerror}", path=where
        ) from None
    if b"-----BEGIN" not in head:
        raise ConfigError(
            f"the public key file {auth.public_key_file} is not a PEM file", path=where
        )


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def agent_api_key(settings: AgentSettings, default_env: str) -> str | None:
    """An HTTP backend's bearer token, from ``agent.api_key_env`` (or the backend's usual name)."""
    value = os.environ.get(settings.api_key_env or default_env, "").strip()
    return value or None


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``1h``, ``2d``, ``250ms`` -> seconds."""
    raw = text.strip().lower()
    if not raw.isascii():  # str.isdigit() below takes "²", which float() refuses
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 1h, 2d)")
    for unit in ("ms", "s", "m", "h", "d"):
        if raw.endswith(unit) and raw[: -len(unit)].replace(".", "", 1).isdigit():
            return float(raw[: -len(unit)]) * _UNITS[unit]
    if raw.replace(".", "", 1).isdigit():
        return float(raw)
    raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 15m, 1h, 2d)")
