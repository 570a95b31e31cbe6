"""stdout that notices its reader leaving (``qa-ws send … | head -c 80``).

Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError wherever it
happens, including inside the client's reader task, where it would kill the reader and leave
the command waiting for its whole timeout. Writes go through ``Output`` instead: a broken
pipe resolves ``closed``, and so does the pipe's reader leaving while nothing is written (an
event loop reports a pipe whose far end closed as ready). Commands race their work against
``closed`` (``unless_closed``) and then end quietly with the shell's status for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
from collections.abc import Awaitable
from typing import TextIO, TypeVar

from qa_ws_cli.errors import ClientError, QaWsError

T = TypeVar("T")
EXIT_PIPE = 128 + signal.SIGPIPE  # what a shell reports for a writer its reader left


class OutputClosed(QaWsError):
    code = "output_closed"

    def __init__(self) -> None:
        super().__init__("stdout was closed by its reader")


def unwritable_stdout(exc: OSError) -> str:
    """The one line for a stdout that refused a write (not its reader leaving)."""
    return f"cannot write to stdout: {exc.strerror or 'unwritable'}"


class OutputFailed(ClientError):
    """stdout refused a write for another reason than its reader leaving (ENOSPC, EBADF)."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(unwritable_stdout(exc))


class Output:
    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.failure: OSError | None = None  # set: not the reader leaving, a write error
        self._watched: int | None = None

    def write(self, text: str) -> None:
        """Never raises: inside the client's reader task an exception would kill the reader
        and leave the command waiting for its timeout; ``closed`` resolves instead."""
        if self.closed.done():
            return
        try:
            self.stream.write(text)
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the stream itself was closed
            self._close()
        except OSError as exc:  # a full disk (/dev/full), a closed descriptor: say it
            self.failure = exc
            self._close()

    def watch(self) -> None:
        """Also notice a reader that leaves while nothing is written (pipes only)."""
        try:
            fd = self.stream.fileno()
            is_pipe = stat.S_ISFIFO(os.fstat(fd).st_mode)
        except (OSError, ValueError, AttributeError):
            return
        if is_pipe:
            asyncio.get_running_loop().add_reader(fd, self._close)
            self._watched = fd

    def unwatch(self) -> None:
        if self._watched is not None:
            asyncio.get_running_loop().remove_reader(self._watched)
            self._watched = None

    def _close(self) -> None:
        self.unwatch()
        if not self.closed.done():
            self.closed.set_result(None)


async def unless_closed(out: Output, work: Awaitable[T]) -> T:
    """``work``'s result, or OutputClosed as soon as stdout's reader is gone (OutputFailed
    when stdout refused a write)."""
    task = asyncio.ensure_future(work)
    racing: set[asyncio.Future[object]] = {task, out.closed}  # type: ignore[arg-type]
    await asyncio.wait(racing, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, QaWsError):
        await task
    if out.failure is not None:
        raise OutputFailed(out.failure)
    raise OutputClosed


def silence_stdout() -> None:
    """Point fd 1 at /dev/null so the interpreter's last flush cannot complain."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
