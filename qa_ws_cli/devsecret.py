"""The signing secret ``qa-ws serve --dev`` keeps between runs, in the user's state directory.

Only ``qa_ws_cli.config`` calls this: Settings stays the one reader of env and files. The file
is made once, atomically, with mode 0600 (its directory 0700), and refused when others can read it.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from qa_ws_cli.errors import ConfigError

MIN_SECRET_BYTES = 32
_WHERE = "websocket.security.secret_key"


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/qa-ws`` (an absolute one), else ``~/.local/state/qa-ws``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "").strip()
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "state"
    return root / "qa-ws"


def dev_secret_path(environ: Mapping[str, str] | None = None) -> Path:
    return state_dir(environ) / "dev-secret"


def read_dev_secret(path: Path) -> str | None:
    """The secret ``serve --dev`` kept, None when there is none; ``ConfigError`` when unusable."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise ConfigError(f"cannot read the dev secret {path}: {reason}", path=_WHERE) from None
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(
            f"the dev secret {path} is open to other users (mode {stat.S_IMODE(mode):04o}): "
            f"run `chmod 600 {path}`, or delete it to get a new one",
            path=_WHERE,
        )
    if len(text.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the dev secret {path} is shorter than {MIN_SECRET_BYTES} bytes: delete it and "
            "run `qa-ws serve --dev` again for a new one",
            path=_WHERE,
        )
    return text


def keep_dev_secret(path: Path) -> tuple[str, bool]:
    """The kept dev secret, made (mode 0600) when there is none; True when it was just made."""
    existing = read_dev_secret(path)
    if existing is not None:
        return existing, False
    secret = secrets.token_urlsafe(48)
    draft = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(secret + "\n")
        os.link(draft, path)  # atomic, and never over a secret another process kept meanwhile
    except FileExistsError:  # another `serve --dev` kept one first: use that one
        return _kept_by_another(path), False
    except OSError as exc:
        raise ConfigError(
            f"cannot keep the dev secret in {path}: {exc.strerror}",
            path=_WHERE,
        ) from None
    finally:
        draft.unlink(missing_ok=True)
    return secret, True


def _kept_by_another(path: Path) -> str:
    kept = read_dev_secret(path)
    if kept is None:
        raise ConfigError(
            f"the dev secret {path} vanished while being made: try again", path=_WHERE
        )
    return kept
