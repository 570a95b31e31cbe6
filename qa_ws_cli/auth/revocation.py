"""Revoked token ids (``jti``), shared by ``qa-ws token revoke`` and the running servers.

The list is a JSON-lines file: the CLI appends, every server on the machine re-reads it when its
modification time changes. Entries whose token has expired anyway are dropped on load, so the
list stays as small as the set of live revoked tokens.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


class RevocationList:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._revoked: dict[str, float] = {}
        self._stamp: tuple[int, int] | None = None

    def revoke(self, jti: str, exp: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"jti": jti, "exp": exp}) + "\n")
        self._revoked[jti] = exp

    def _reload(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._revoked, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        now = time.time()
        revoked: dict[str, float] = {}
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                    jti, exp = str(entry["jti"]), float(entry["exp"])
                except (ValueError, KeyError, TypeError):
                    continue  # a torn or hand-edited line must not take revocation down
                if exp > now:
                    revoked[jti] = exp
        self._revoked, self._stamp = revoked, stamp

    def is_revoked(self, jti: str | None) -> bool:
        if jti is None:
            return False
        self._reload()
        return jti in self._revoked

    def revoked_ids(self) -> frozenset[str]:
        self._reload()
        return frozenset(self._revoked)
