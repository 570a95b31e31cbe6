"""``qa-ws token issue|verify|revoke``: JWTs signed with the configured key."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from redis.exceptions import RedisError

from qa_ws_cli.auth.revocation import RevocationList, Revocations
from qa_ws_cli.auth.tokens import TokenVerifier, issue_token, peek_claims
from qa_ws_cli.cli.common import (
    EXIT_USAGE,
    SIGNING_HINT,
    ConfigOption,
    err_console,
    fail,
    failures,
    out_console,
    read_stdin_value,
    settings_from,
)
from qa_ws_cli.cli.help import Command, Group
from qa_ws_cli.client.text import token_problem
from qa_ws_cli.config import (
    MAX_TOKEN_TTL_S,
    Settings,
    parse_duration,
    redact_url,
    store_scheme_problem,
)
from qa_ws_cli.errors import QaWsError
from qa_ws_cli.server.redis_revocations import RedisRevocations

app = typer.Typer(
    help="""Mint, check and revoke JSON Web Tokens.

    Without WEBSOCKET_SECRET_KEY these use the development secret `qa-ws serve --dev` keeps.

    Examples:
      qa-ws token issue --sub alice --ttl 1h
      qa-ws token verify "$TOKEN"
      qa-ws token revoke "$TOKEN"
    """,
    no_args_is_help=True,
    cls=Group,
)

TokenArg = Annotated[str, typer.Argument(help="The token, or - to read it from stdin.")]


def _given_token(value: str) -> str:
    """The token from the argument (or stdin for ``-``); a usage error when there is none."""
    token = read_stdin_value(value).strip()
    if not token:
        why = "stdin was empty" if value == "-" else "pass the token, or - to read it from stdin"
        fail(f"no token was given: {why}", EXIT_USAGE)
    problem = token_problem(token)
    if problem is not None:  # the reason it is not valid (exit 1), never the token itself
        fail(f"the token is malformed: it {problem}")
    return token


def _when(ts: Any) -> str:
    try:
        return datetime.fromtimestamp(float(ts), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError, OverflowError):
        return str(ts)


@app.command(cls=Command)
def issue(
    sub: Annotated[str, typer.Option("--sub", help="User id (the token's subject).")],
    ttl: Annotated[str, typer.Option("--ttl", help="Lifetime: 90s, 15m, 1h, 7d.")] = "1h",
    scope: Annotated[
        str, typer.Option("--scope", help="Space-separated scopes: chat, admin.")
    ] = "chat",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the token and its claims as JSON.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Print a token signed with the configured key (WEBSOCKET_SECRET_KEY for HS256), or else
    with the development secret `qa-ws serve --dev` keeps, so the token works against it.

    Example: qa-ws token issue --sub alice --ttl 1h --scope chat
    """
    if not sub:
        fail("--sub must name a user: it is empty", EXIT_USAGE)
    try:  # a bad --ttl is a usage error (exit 2), as a bad value of any option is
        ttl_s = parse_duration(ttl)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)
    if ttl_s <= 0:
        fail("--ttl must be positive", EXIT_USAGE)
    if ttl_s > MAX_TOKEN_TTL_S:
        fail(f"--ttl must be at most {MAX_TOKEN_TTL_S // 86400}d (a year and a day)", EXIT_USAGE)
    loaded = settings_from(config, dev_secret=True)
    settings = loaded.settings
    source = loaded.source("security.secret_key")
    if source.startswith("dev secret "):
        err_console.print(f"signed with the {source} (no WEBSOCKET_SECRET_KEY set)", markup=False)
    try:
        token, claims = issue_token(settings, sub, ttl_s=ttl_s, scope=scope)
    except QaWsError as exc:
        fail(exc.message + (SIGNING_HINT if settings.secret() is None else ""))
    if as_json:
        print(json.dumps({"token": token, "claims": claims}))
    else:
        print(token)


@app.command(cls=Command)
def verify(token: TokenArg, config: ConfigOption = None) -> None:
    """Check a token against the configured key, issuer and audience; exit 1 with the reason.

    Example: qa-ws token verify "$TOKEN"
    """
    token = _given_token(token)
    settings = settings_from(config, dev_secret=True).settings
    auth = settings.security.authentication
    with failures():
        claims = TokenVerifier(auth, settings.secret()).verify(token)
        revocations, where = _revocations(settings, settings.store.url)
        try:
            revoked = revocations.is_revoked(claims.jti, claims.sub, claims.iat)
        except RedisError as exc:
            fail(f"cannot reach {where} ({type(exc).__name__})")
    if revoked:
        fail(f"token revoked (jti {claims.jti}, sub {claims.sub})")
    out_console.print_json(json.dumps(dict(claims.raw)))
    left = claims.exp - time.time()
    out_console.print(
        f"[green]valid[/]: sub={claims.sub} scopes={' '.join(sorted(claims.scopes))} "
        f"expires {_when(claims.exp)} (in {int(left)} s)"
    )


@app.command(cls=Command)
def revoke(
    token: Annotated[str | None, typer.Argument(help="The token, or - for stdin.")] = None,
    jti: Annotated[str | None, typer.Option("--jti", help="Revoke by token id instead.")] = None,
    sub: Annotated[
        str | None,
        typer.Option("--sub", help="Revoke every token of this user issued before now."),
    ] = None,
    ttl: Annotated[
        str,
        typer.Option(
            "--keep",
            help="With --jti or --sub: how long to keep the entry (default 7d; --sub: 366d). "
            "A TOKEN's entry is kept until the token expires.",
        ),
    ] = "",
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url", help="The servers' Redis (default: store.url): every instance sees it."
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Revoke a token: servers refuse it (401 token_revoked) and close its connections (4003).

    With a Redis store (--redis-url or store.url) every instance closes them within a second;
    without one, servers on this machine read the revocation list
    (security.authentication.revocation_file).
    Examples: qa-ws token revoke "$TOKEN";  qa-ws token revoke --sub alice --redis-url redis://127.0.0.1:6379/0
    """
    settings = settings_from(config).settings
    if sum(x is not None for x in (token, jti, sub)) != 1:
        fail("give exactly one of TOKEN, --jti or --sub", EXIT_USAGE)
    for flag, value in (("--jti", jti), ("--sub", sub)):
        if value is not None and not value.strip():
            fail(f"{flag} must not be empty: it would revoke nothing", EXIT_USAGE)
    if token is not None and ttl:
        fail(
            "--keep goes with --jti or --sub: a revoked TOKEN is kept until it expires",
            EXIT_USAGE,
        )
    try:  # --sub: a token issued before now lives at most the longest lifetime allowed
        keep_s = parse_duration(ttl) if ttl else (MAX_TOKEN_TTL_S if sub else 7 * 86400)
    except ValueError as exc:
        fail(f"--keep: {exc}", EXIT_USAGE)
    exp = time.time() + keep_s
    if token is not None:
        raw = _given_token(token)
        with failures():
            claims = peek_claims(raw)
        jti = claims.get("jti")
        if not isinstance(jti, str):
            fail("this token has no 'jti' claim: revoke its user with --sub instead")
        with contextlib.suppress(TypeError, ValueError):
            exp = float(claims["exp"]) if "exp" in claims else exp
    url = redis_url or settings.store.url
    revocations, where = _revocations(settings, url)
    try:
        if sub is not None:
            revocations.revoke_subject(sub, time.time(), exp)
        else:
            assert jti is not None
            revocations.revoke(jti, exp)
    except OSError as exc:
        fail(f"cannot write the revocation list {where}: {exc.strerror}")
    except RedisError as exc:
        fail(f"cannot reach {where} ({type(exc).__name__}): nothing was revoked")
    what = f"every token of sub {sub} issued before now" if sub else f"jti {jti}"
    out_console.print(f"revoked {what}, until {_when(exp)} ({where})")


def _revocations(settings: Settings, url: str | None) -> tuple[Revocations, str]:
    """Redis when the servers share one, else the revocation list file."""
    if url:
        problem = store_scheme_problem(url)
        if problem:
            fail(f"--redis-url: {problem}")
        return RedisRevocations(url), f"Redis {redact_url(url)}"
    path = settings.security.authentication.revocation_file
    return RevocationList(path), f"list: {path}"
