"""Revoked tokens, shared by ``qa-ws token revoke`` and the running servers.

Two kinds of entry: one token by its id (``jti``), or every token of a user (``sub``) issued
before a moment (its ``iat`` earlier than ``before``), for tokens without a ``jti`` and for
"log this user out everywhere". ``Revocations`` is the interface the gateway and the CLI use;
``RevocationList`` keeps it in a JSON-lines file (the CLI appends, every server on the machine
re-reads it when its modification time changes). Entries whose tokens have expired anyway are
dropped on load, so the list stays as small as the set of live revoked tokens.
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from pathlib import Path


class Revocations(ABC):
    """Where revocations live; a shared store (Redis) can implement the same four methods."""

    @abstractmethod
    def revoke(self, jti: str, exp: float) -> None:
        """Refuse the token ``jti`` until ``exp`` (its own expiry: after that it is refused
        anyway)."""

    @abstractmethod
    def revoke_subject(self, sub: str, before: float, keep_until: float) -> None:
        """Refuse every token of ``sub`` issued before ``before``; remember it until
        ``keep_until`` (the longest lifetime such a token can have)."""

    @abstractmethod
    def revoked_ids(self) -> frozenset[str]:
        """The ``jti`` of every revoked token still alive."""

    @abstractmethod
    def revoked_subjects(self) -> dict[str, float]:
        """``sub`` -> tokens issued before this moment are revoked."""

    def is_revoked(self, jti: str | None, sub: str | None = None, iat: float | None = None) -> bool:
        if jti is not None and jti in self.revoked_ids():
            return True
        if sub is None:
            return False
        before = self.revoked_subjects().get(sub)
        return before is not None and (iat is None or iat < before)


class RevocationList(Revocations):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._revoked: dict[str, float] = {}
        self._subjects: dict[str, float] = {}
        self._stamp: tuple[int, int] | None = None

    def _append(self, entry: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")

    def revoke(self, jti: str, exp: float) -> None:
        self._append({"jti": jti, "exp": exp})
        self._revoked[jti] = exp

    def revoke_subject(self, sub: str, before: float, keep_until: float) -> None:
        self._append({"sub": sub, "before": before, "exp": keep_until})
        self._subjects[sub] = max(before, self._subjects.get(sub, 0.0))

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._revoked, self._subjects, self._stamp = {}, {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        now = time.time()
        revoked: dict[str, float] = {}
        subjects: dict[str, float] = {}
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    exp = float(entry["exp"])
                    if exp <= now:
                        continue
                    if "sub" in entry:
                        sub, before = str(entry["sub"]), float(entry["before"])
                        subjects[sub] = max(before, subjects.get(sub, 0.0))
                    else:
                        revoked[str(entry["jti"])] = exp
                except (ValueError, KeyError, TypeError):
                    continue  # a torn or hand-edited line must not take revocation down
        self._revoked, self._subjects, self._stamp = revoked, subjects, stamp

    def revoked_ids(self) -> frozenset[str]:
        self._reload()
        return frozenset(self._revoked)

    def revoked_subjects(self) -> dict[str, float]:
        self._reload()
        return dict(self._subjects)

    def is_revoked(self, jti: str | None, sub: str | None = None, iat: float | None = None) -> bool:
        self._reload()  # one stat a call; the dictionaries are read in place
        if jti is not None and jti in self._revoked:
            return True
        before = self._subjects.get(sub) if sub is not None else None
        return before is not None and (iat is None or iat < before)


class RevocationCache(Revocations):
    """A local list merged with entries read from a shared store (Redis), so that a handshake
    checks revocations with no round trip: the gateway refreshes the shared half on every
    revocation message from the other instances and every few seconds."""

    def __init__(self, local: Revocations) -> None:
        self.local = local
        self._ids: dict[str, float] = {}
        self._subjects: dict[str, float] = {}

    def update(self, ids: dict[str, float], subjects: dict[str, float]) -> None:
        """The shared entries, as read from the store (``sub`` -> ``before``)."""
        self._ids, self._subjects = ids, subjects

    def revoke(self, jti: str, exp: float) -> None:
        self.local.revoke(jti, exp)

    def revoke_subject(self, sub: str, before: float, keep_until: float) -> None:
        self.local.revoke_subject(sub, before, keep_until)

    def revoked_ids(self) -> frozenset[str]:
        return self.local.revoked_ids() | frozenset(self._ids)

    def revoked_subjects(self) -> dict[str, float]:
        subjects = self.local.revoked_subjects()
        for sub, before in self._subjects.items():
            subjects[sub] = max(before, subjects.get(sub, 0.0))
        return subjects

    def is_revoked(self, jti: str | None, sub: str | None = None, iat: float | None = None) -> bool:
        if self.local.is_revoked(jti, sub, iat):
            return True
        if jti is not None and jti in self._ids:
            return True
        before = self._subjects.get(sub) if sub is not None else None
        return before is not None and (iat is None or iat < before)
