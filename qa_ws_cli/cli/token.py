"""``qa-ws token issue|verify|revoke``: JWTs signed with the configured key."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from qa_ws_cli.auth.revocation import RevocationList
from qa_ws_cli.auth.tokens import TokenVerifier, issue_token, peek_claims
from qa_ws_cli.cli.common import (
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
from qa_ws_cli.config import parse_duration
from qa_ws_cli.errors import QaWsError

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
    try:
        ttl_s = parse_duration(ttl)
    except ValueError as exc:
        fail(str(exc))
    if ttl_s <= 0:
        fail("--ttl must be positive")
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
    token = read_stdin_value(token)
    settings = settings_from(config, dev_secret=True).settings
    auth = settings.security.authentication
    with failures():
        claims = TokenVerifier(auth, settings.secret()).verify(token)
        revoked = RevocationList(auth.revocation_file).is_revoked(claims.jti)
    if revoked:
        fail(f"token revoked (jti {claims.jti})")
    out_console.print_json(json.dumps(claims.raw))
    left = claims.exp - time.time()
    out_console.print(
        f"[green]valid[/]: sub={claims.sub} scopes={' '.join(sorted(claims.scopes))} "
        f"expires {_when(claims.exp)} (in {int(left)} s)"
    )


@app.command(cls=Command)
def revoke(
    token: Annotated[str | None, typer.Argument(help="The token, or - for stdin.")] = None,
    jti: Annotated[str | None, typer.Option("--jti", help="Revoke by token id instead.")] = None,
    ttl: Annotated[
        str, typer.Option("--keep", help="With --jti: how long to keep the entry.")
    ] = "7d",
    config: ConfigOption = None,
) -> None:
    """Revoke a token: servers refuse it (401 token_revoked) and close its connections (4003).

    Servers on this machine read the revocation list (security.authentication.revocation_file).
    Example: qa-ws token revoke "$TOKEN"
    """
    settings = settings_from(config).settings
    if (token is None) == (jti is None):
        fail("give exactly one of TOKEN or --jti")
    if token is not None:
        with failures():
            claims = peek_claims(read_stdin_value(token))
        jti = claims.get("jti")
        if not isinstance(jti, str):
            fail("this token has no 'jti' claim, so it cannot be revoked; rotate the key instead")
        exp = float(claims.get("exp", time.time() + parse_duration(ttl)))
    else:
        try:
            exp = time.time() + parse_duration(ttl)
        except ValueError as exc:
            fail(str(exc))
    assert jti is not None
    path = settings.security.authentication.revocation_file
    try:
        RevocationList(path).revoke(jti, exp)
    except OSError as exc:
        fail(f"cannot write the revocation list {path}: {exc.strerror}")
    out_console.print(f"revoked jti {jti} until {_when(exp)} (list: {path})")
