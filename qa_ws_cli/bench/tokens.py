"""Where each virtual user's token comes from: one fixed token, or one minted per user.

Minting gives every user its own ``sub``, so per-user limits (connections per user, messages
per minute) apply to each virtual user as they would to real people, not to the bench as a
whole. It uses the same ``issue_token`` and Settings as ``qa-ws token issue``, so issuer,
audience and algorithm match what the server checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from qa_ws_cli.auth.tokens import issue_token
from qa_ws_cli.bench.spec import TOKEN_ENV
from qa_ws_cli.config import Settings, load_settings
from qa_ws_cli.errors import QaWsError


class TokenSource:
    def __init__(
        self, *, fixed: str | None = None, settings: Settings | None = None, ttl_s: float = 3600.0
    ) -> None:
        self.fixed = fixed
        self.settings = settings
        self.ttl_s = ttl_s

    @property
    def mints(self) -> bool:
        return self.fixed is None and self.settings is not None

    def for_user(self, sub: str) -> str | None:
        if self.fixed is not None or self.settings is None:
            return self.fixed
        return issue_token(self.settings, sub, ttl_s=self.ttl_s)[0]

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str],
        *,
        config_file: str | None = None,
        mint: bool | None = None,
        ttl_s: float = 3600.0,
        dev_secret: bool | None = None,
    ) -> TokenSource:
        """``mint=None`` (plain locust): the fixed token if set, else mint when a key is known.

        ``mint=True`` (qa-ws bench without --token) must be able to sign, else ValueError;
        ``mint=False`` presents the fixed token, or none at all. ``dev_secret`` (default: with
        ``mint=True``): without a configured key, sign with the one ``qa-ws serve --dev`` keeps,
        as ``send --sub`` and ``repl --sub`` do.
        """
        fixed = environ.get(TOKEN_ENV) or None
        if mint is False or (mint is None and fixed):
            return cls(fixed=fixed)
        try:
            settings = load_settings(
                Path(config_file) if config_file else None,
                environ=dict(environ),
                dev_secret=bool(mint) if dev_secret is None else dev_secret,
            ).settings
            probe = cls(settings=settings, ttl_s=ttl_s)
            probe.for_user("bench-probe")
        except QaWsError as exc:
            if mint:
                raise ValueError(f"cannot mint tokens: {exc.message}") from None
            return cls()
        return probe
