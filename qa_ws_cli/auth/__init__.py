"""Tokens: issue and verify (pyjwt), key loading, and the revocation list."""

from qa_ws_cli.auth.revocation import RevocationList
from qa_ws_cli.auth.tokens import Claims, TokenVerifier, issue_token, peek_claims

__all__ = ["Claims", "RevocationList", "TokenVerifier", "issue_token", "peek_claims"]
