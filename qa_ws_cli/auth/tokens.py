"""Issue and verify JSON Web Tokens (pyjwt) as the protocol's Authentication section says.

Only the configured algorithm is accepted, so ``alg: none`` and HS/RS confusion are refused by
construction. Verification errors become ``AuthError`` with the handshake's error code.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jwt

from qa_ws_cli.config import MAX_TOKEN_TTL_S, AuthenticationSettings, Settings
from qa_ws_cli.errors import AuthError, ConfigError
from qa_ws_cli.protocol.codes import HandshakeError

DEFAULT_SCOPE = "chat"
LAST_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z: later (or negative) is not a time


NO_PAYLOAD: Mapping[str, Any] = MappingProxyType({})  # one for every connection's claims


@dataclass(frozen=True, slots=True)
class Claims:
    sub: str
    exp: float
    iat: float
    jti: str | None
    scopes: frozenset[str]
    raw: Mapping[str, Any]  # the whole payload, or NO_PAYLOAD where only the claims are kept

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def _read_key(path: Any, what: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the {what} {path}: {exc.strerror}",
            path=f"websocket.security.authentication.{what.replace(' ', '_')}_file",
        ) from None


def _check_times(payload: dict[str, Any]) -> None:
    """``exp``, ``iat`` and ``nbf`` must be plain numbers between 1970 and 9999: anything else
    (pyjwt lets 1e300 or -5 through) would break the timers that close an expiring connection."""
    for name in ("exp", "iat", "nbf"):
        if name not in payload:
            continue
        value = payload[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value <= LAST_TIMESTAMP  # also false for NaN
        ):
            raise AuthError(f"the token's '{name}' is not a valid time")


@functools.lru_cache(maxsize=256)
def _scopes(scope: str) -> frozenset[str]:
    """One set for every connection whose token says the same scope (most say "chat")."""
    return frozenset(scope.split())


def _check_text(value: str, name: str) -> None:
    """A claim the gateway writes to frames, stores and logs must be Unicode text: a signed
    ``"\ud800"`` escape parses to a lone surrogate, which none of them can carry."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise AuthError(f"the token's '{name}' is not valid text") from None


def _claims(payload: dict[str, Any], keep_payload: bool = True) -> Claims:
    _check_times(payload)
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise AuthError("the token's 'sub' must be a non-empty string")
    scope = payload.get("scope", DEFAULT_SCOPE)
    scopes = _scopes(scope) if isinstance(scope, str) else frozenset()
    jti = payload.get("jti")
    _check_text(sub, "sub")
    if isinstance(jti, str):
        _check_text(jti, "jti")
    return Claims(
        sub=sub,
        exp=float(payload["exp"]),
        iat=float(payload["iat"]),
        jti=jti if isinstance(jti, str) else None,
        scopes=scopes,
        raw=payload if keep_payload else NO_PAYLOAD,
    )


_REASONS: tuple[tuple[type[Exception], str, str], ...] = (
    (jwt.ExpiredSignatureError, HandshakeError.TOKEN_EXPIRED, "the token has expired"),
    (jwt.ImmatureSignatureError, HandshakeError.INVALID_TOKEN, "the token is not valid yet (nbf)"),
    (jwt.InvalidAudienceError, HandshakeError.INVALID_TOKEN, "the token has the wrong audience"),
    (jwt.InvalidIssuerError, HandshakeError.INVALID_TOKEN, "the token has the wrong issuer"),
    (jwt.InvalidSignatureError, HandshakeError.INVALID_TOKEN, "the token's signature is invalid"),
    (
        jwt.InvalidAlgorithmError,
        HandshakeError.INVALID_TOKEN,
        "the token's algorithm is not allowed",
    ),
    (jwt.PyJWKClientError, HandshakeError.INVALID_TOKEN, "no signing key matches the token"),
)


def _reason(exc: Exception) -> AuthError:
    for kind, code, message in _REASONS:
        if isinstance(exc, kind):
            return AuthError(message, code=code)
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return AuthError(f"the token lacks the required claim '{exc.claim}'")
    return AuthError("the token is malformed")


class TokenVerifier:
    """Checks signature, time claims, issuer and audience against the configured key."""

    def __init__(self, auth: AuthenticationSettings, secret: str | None) -> None:
        self.algorithm = auth.algorithm
        self.issuer = auth.issuer
        self.audience = auth.audience
        self.leeway = auth.leeway_s
        self._jwks: jwt.PyJWKClient | None = None
        self._key: Any = None
        if auth.jwks_url:
            self._jwks = jwt.PyJWKClient(auth.jwks_url, cache_keys=True, lifespan=300)
        elif auth.algorithm.startswith("HS"):
            if not secret:
                raise ConfigError(
                    "authentication needs a secret key (WEBSOCKET_SECRET_KEY)",
                    path="websocket.security.secret_key",
                )
            self._key = secret
        else:
            if auth.public_key_file is None:
                raise ConfigError(
                    f"{auth.algorithm} needs public_key_file or jwks_url",
                    path="websocket.security.authentication.public_key_file",
                )
            self._key = _read_key(auth.public_key_file, "public key")
            try:
                jwt.get_algorithm_by_name(auth.algorithm).prepare_key(self._key)
            except (ValueError, TypeError, jwt.PyJWTError) as exc:
                raise ConfigError(
                    f"the public key file {auth.public_key_file} holds no usable "
                    f"{auth.algorithm} key: {exc}",
                    path="websocket.security.authentication.public_key_file",
                ) from None
        required = ["sub", "exp", "iat"]
        required += [c for c, v in (("iss", self.issuer), ("aud", self.audience)) if v]
        self._options: Any = {"require": required, "verify_aud": bool(self.audience)}

    def _decode(self, token: str, key: Any, keep_payload: bool = True) -> Claims:
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options=self._options,
            )
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError) as exc:
            # signed correctly (pyjwt checks times after the signature): is the time absurd?
            _check_times(jwt.decode(token, options={"verify_signature": False}))
            raise _reason(exc) from None
        except jwt.PyJWTError as exc:
            raise _reason(exc) from None
        except UnicodeError:  # a byte that was not UTF-8 (a lone surrogate): not a JWT at all
            raise AuthError("the token is malformed: it is not ASCII text") from None
        except (OverflowError, ValueError, TypeError):  # e.g. "exp": 1e999 inside pyjwt
            raise AuthError("the token's time claims are not valid times") from None
        return _claims(payload, keep_payload)

    def verify(self, token: str, keep_payload: bool = True) -> Claims:
        """Synchronous check; with a JWKS URL the key fetch may block (use ``averify``)."""
        key = self._key
        if self._jwks is not None:
            try:
                key = self._jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWTError as exc:
                raise _reason(exc) from None
        return self._decode(token, key, keep_payload)

    async def averify(self, token: str) -> Claims:
        """The gateway's check: the claims without ``raw`` (a connection holds its claims for
        its whole life, and the payload's dict was most of their size)."""
        if self._jwks is None:
            return self._decode(token, self._key, keep_payload=False)
        check = functools.partial(self.verify, token, keep_payload=False)
        return await asyncio.get_running_loop().run_in_executor(None, check)


def issue_token(
    settings: Settings,
    sub: str,
    *,
    ttl_s: float | None = None,
    scope: str = DEFAULT_SCOPE,
    extra: dict[str, Any] | None = None,
    now: float | None = None,
) -> tuple[str, dict[str, Any]]:
    """Mint a token with the configured key, issuer and audience; returns (token, claims)."""
    auth = settings.security.authentication
    if not sub:
        raise ValueError("sub must not be empty")
    lifetime = int(auth.token_expiry if ttl_s is None else ttl_s)
    if lifetime > MAX_TOKEN_TTL_S:  # (a negative one is allowed: tests mint expired tokens)
        raise ValueError(f"the lifetime must be at most {MAX_TOKEN_TTL_S // 86400} days")
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": sub,
        "iat": issued,
        "exp": issued + lifetime,
        "jti": uuid.uuid4().hex,
        "scope": scope,
        **(extra or {}),
    }
    if auth.issuer:
        claims["iss"] = auth.issuer
    if auth.audience:
        claims["aud"] = auth.audience
    if auth.algorithm.startswith("HS"):
        key: Any = settings.secret()
        if not key:
            raise ConfigError(
                "cannot sign: no secret key (set WEBSOCKET_SECRET_KEY)",
                path="websocket.security.secret_key",
            )
    else:
        if auth.private_key_file is None:
            raise ConfigError(
                f"cannot sign {auth.algorithm}: set security.authentication.private_key_file",
                path="websocket.security.authentication.private_key_file",
            )
        key = _read_key(auth.private_key_file, "private key")
    return jwt.encode(claims, key, algorithm=auth.algorithm), claims


def peek_claims(token: str) -> dict[str, Any]:
    """Claims without verification, for display (``/token`` in the repl) and revocation."""
    try:
        payload: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AuthError("the token is malformed") from None
    return payload
