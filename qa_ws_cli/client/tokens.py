"""``/token`` in both repl modes: what a user wants to know of their token, never the token."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from qa_ws_cli.auth.tokens import peek_claims
from qa_ws_cli.errors import AuthError


def _when(epoch: float, now: float) -> str:
    stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = epoch - now
    span = _span(abs(delta))
    return f"{stamp} ({'in ' + span if delta >= 0 else span + ' ago'})"


def _span(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def token_rows(token: str | None, now: float | None = None) -> list[tuple[str, str]]:
    """What a user wants to know of their token; never the token or its signature."""
    if not token:
        return [("token", "none (the server must have authentication off)")]
    try:
        claims = peek_claims(token)
    except AuthError as exc:
        return [("token", exc.message)]
    now = time.time() if now is None else now
    rows = [("sub", str(claims.get("sub", "?"))), ("scope", str(claims.get("scope", "chat")))]
    rows += [(key, str(claims[key])) for key in ("iss", "aud", "jti") if key in claims]
    for key, label in (("iat", "issued"), ("nbf", "not before"), ("exp", "expires")):
        value = claims.get(key)
        if isinstance(value, int | float):
            rows.append((label, _when(float(value), now)))
    exp = claims.get("exp")
    if isinstance(exp, int | float) and exp <= now:
        rows.append(("status", "EXPIRED: get a fresh token (or use --sub)"))
    return rows


__all__ = ["token_rows"]
