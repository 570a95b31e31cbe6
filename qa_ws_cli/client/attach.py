"""``/attach PATH`` in both repl modes: files uploaded now (so a wrong path or a refused type
is told at once), held for the next message, and sent with it as its ``attachments``."""

from __future__ import annotations

from pathlib import Path

from qa_ws_cli.client.connection import QaWsClient
from qa_ws_cli.client.files import UploadedFile, upload_file
from qa_ws_cli.errors import ClientError

USAGE = "usage: /attach PATH (the file goes with the next message)"


def _path(arg: str) -> Path:
    return Path(arg).expanduser()  # no I/O: it only reads $HOME


def command_arg(line: str) -> str:
    """What follows the command word: ``/attach my file.png`` -> ``my file.png``."""
    parts = line.strip().split(maxsplit=1)
    return parts[1].strip() if len(parts) > 1 else ""


class NextMessage:
    """The files waiting for the next message; ``take`` hands their ids over once."""

    def __init__(self) -> None:
        self.files: list[UploadedFile] = []

    async def attach(self, client: QaWsClient, arg: str) -> str:
        """Upload ``arg``'s file; the line that tells the user. Raises a ClientError."""
        if not arg:
            if not self.files:
                raise ClientError(USAGE)
            return "attached to the next message: " + ", ".join(f.describe() for f in self.files)
        limit = (client.connected.limits or {}) if client.connected else {}
        most = limit.get("max_attachments")
        if isinstance(most, int) and len(self.files) >= most:
            raise ClientError(f"at most {most} files go with one message")
        uploaded = await upload_file(client.options, _path(arg), session_id=client.session_id)
        self.files.append(uploaded)
        return f"attached {uploaded.describe()} to the next message"

    def take(self) -> tuple[str, ...]:
        ids = tuple(f.file_id for f in self.files)
        self.files = []
        return ids


__all__ = ["USAGE", "NextMessage", "command_arg"]
