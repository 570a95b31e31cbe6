"""Issuing and verifying tokens, and the revocation list."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from qa_ws_cli.auth import RevocationList, TokenVerifier, issue_token, peek_claims
from qa_ws_cli.config import AuthenticationSettings, Settings
from qa_ws_cli.errors import AuthError, ConfigError
from tests.conftest import SECRET, make_settings


def rsa_pair(tmp_path: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = tmp_path / "private.pem"
    public = tmp_path / "public.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def verifier(settings: Settings) -> TokenVerifier:
    return TokenVerifier(settings.security.authentication, settings.secret())


def test_issue_then_verify(settings: Settings) -> None:
    token, claims = issue_token(settings, "alice", ttl_s=60, scope="chat admin")
    checked = verifier(settings).verify(token)
    assert checked.sub == "alice"
    assert checked.has_scope("admin") and checked.has_scope("chat")
    assert checked.jti == claims["jti"] and len(checked.jti or "") == 32
    assert checked.exp - checked.iat == 60


def test_a_token_without_scope_may_chat(settings: Settings) -> None:
    now = int(time.time())
    token = jwt.encode({"sub": "a", "iat": now, "exp": now + 60}, SECRET, algorithm="HS256")
    assert verifier(settings).verify(token).scopes == {"chat"}


def _hs(payload: dict[str, Any], key: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg)


NOW = int(time.time())


@pytest.mark.parametrize(
    ("token", "code", "reason"),
    [
        (_hs({"sub": "a", "iat": NOW - 100, "exp": NOW - 10}), "token_expired", "expired"),
        (
            _hs({"sub": "a", "iat": NOW, "exp": NOW + 86400, "nbf": NOW + 3600}),
            "invalid_token",
            "not valid yet",
        ),
        (
            _hs({"sub": "a", "iat": NOW, "exp": NOW + 86400}, key="another-" + "k" * 40),
            "invalid_token",
            "signature",
        ),
        (
            jwt.encode({"sub": "a", "iat": NOW, "exp": NOW + 86400}, None, algorithm="none"),
            "invalid_token",
            "algorithm",
        ),
        (_hs({"iat": NOW, "exp": NOW + 86400}), "invalid_token", "'sub'"),
        (_hs({"sub": "a", "iat": NOW}), "invalid_token", "'exp'"),
        (_hs({"sub": "a", "exp": NOW + 86400}), "invalid_token", "'iat'"),
        (_hs({"sub": "", "iat": NOW, "exp": NOW + 86400}), "invalid_token", "sub"),
        (
            _hs({"sub": "a", "iat": NOW, "exp": NOW + 86400}, alg="HS512"),
            "invalid_token",
            "algorithm",
        ),
        ("not.a.token", "invalid_token", "malformed"),
        # a byte that was not UTF-8 (argv, a header): not "the time claims are not valid times"
        ("ab\udce9", "invalid_token", "malformed: it is not ASCII text"),
    ],
)
def test_refusals_name_the_reason(settings: Settings, token: str, code: str, reason: str) -> None:
    with pytest.raises(AuthError) as caught:
        verifier(settings).verify(token)
    assert caught.value.code == code
    assert reason in caught.value.message


def test_audience_and_issuer_are_required_and_checked_when_configured(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, security={"authentication": {"issuer": "qa", "audience": "qa-ws"}}
    )
    good, claims = issue_token(settings, "a")
    assert claims["iss"] == "qa" and claims["aud"] == "qa-ws"
    verifier(settings).verify(good)
    base = {"sub": "a", "iat": NOW, "exp": NOW + 86400}
    for payload, reason in [
        ({**base, "iss": "qa", "aud": "elsewhere"}, "audience"),
        ({**base, "iss": "evil", "aud": "qa-ws"}, "issuer"),
        ({**base, "aud": "qa-ws"}, "'iss'"),
        ({**base, "iss": "qa"}, "'aud'"),
    ]:
        with pytest.raises(AuthError, match=reason):
            verifier(settings).verify(_hs(payload))


def test_rs256_tokens_and_algorithm_confusion(tmp_path: Path) -> None:
    private, public = rsa_pair(tmp_path)
    rs = make_settings(
        tmp_path,
        security={
            "authentication": {
                "algorithm": "RS256",
                "public_key_file": str(public),
                "private_key_file": str(private),
            }
        },
    )
    token, _ = issue_token(rs, "bob")
    assert verifier(rs).verify(token).sub == "bob"
    # an HS256 token (signed with the public key text as the HMAC secret) against the RS256 key
    forged = jwt.api_jws.PyJWS()
    forged._algorithms["HS256"].prepare_key = lambda key: key  # type: ignore[method-assign]
    confused = forged.encode(
        json.dumps({"sub": "x", "iat": NOW, "exp": NOW + 86400}).encode(),
        public.read_bytes(),
        algorithm="HS256",
    )
    with pytest.raises(AuthError, match="algorithm"):
        verifier(rs).verify(confused)
    # and the reverse: an RS256 token against the HS256 secret
    hs = make_settings(tmp_path)
    with pytest.raises(AuthError, match="algorithm"):
        verifier(hs).verify(token)


def test_rs256_without_a_key_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="public_key_file"):
        TokenVerifier(AuthenticationSettings(algorithm="RS256"), None)
    with pytest.raises(ConfigError, match="cannot read"):
        TokenVerifier(
            AuthenticationSettings(algorithm="RS256", public_key_file=tmp_path / "nope"), None
        )
    with pytest.raises(ConfigError, match="secret"):
        TokenVerifier(AuthenticationSettings(), None)
    rs = make_settings(tmp_path, security={"authentication": {"algorithm": "RS256"}})
    with pytest.raises(ConfigError, match="private_key_file"):
        issue_token(rs, "a")


def test_issue_needs_a_secret(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, security={"secret_key": None})
    with pytest.raises(ConfigError, match="WEBSOCKET_SECRET_KEY"):
        issue_token(settings, "a")
    with pytest.raises(ValueError, match="sub"):
        issue_token(make_settings(tmp_path), "")


def test_peek_claims_reads_without_verifying(settings: Settings) -> None:
    token, claims = issue_token(settings, "carol")
    assert peek_claims(token)["jti"] == claims["jti"]
    with pytest.raises(AuthError):
        peek_claims("garbage")


def test_revocation_list_is_shared_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "revoked.jsonl"
    writer, reader = RevocationList(path), RevocationList(path)
    assert not reader.is_revoked("j1") and not reader.is_revoked(None)
    writer.revoke("j1", time.time() + 60)
    writer.revoke("old", time.time() - 1)  # already expired: dropped on load
    assert reader.is_revoked("j1")
    assert reader.revoked_ids() == {"j1"}
    with path.open("a") as fh:
        fh.write("{torn line\n")
    writer.revoke("j2", time.time() + 60)
    assert reader.revoked_ids() == {"j1", "j2"}
    path.unlink()
    assert not reader.is_revoked("j1")
