"""A stdout that cannot be written (``> /dev/full``, a closed descriptor: ``>&-``) is one line on
stderr and exit 1, as for any Unix tool, never a traceback or a silent success.

Python leaves ``sys.stdout`` None when descriptor 1 is closed (``print`` then drops every line)
and raises a plain OSError from wherever a write fails. ``guard_stdout`` puts a stdout there
whose failures are ``StdoutUnwritable`` (still an OSError, so the client's ``Output`` treats it
as any write error); ``main`` turns it into the line. A reader that leaves (EPIPE: ``| head``)
is not this: it stays the quiet exit it always was.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from typing import Any

from qa_ws_cli.cli.common import EXIT_FAILED
from qa_ws_cli.client.output import silence_stdout, unwritable_stdout


class StdoutUnwritable(OSError):
    """stdout refused a write for another reason than its reader leaving."""

    def describe(self) -> str:
        return unwritable_stdout(self)


def _unwritable(exc: OSError) -> OSError:
    if isinstance(exc, BrokenPipeError | StdoutUnwritable):
        return exc
    return StdoutUnwritable(exc.errno, exc.strerror)


class _GuardedStdout(io.TextIOWrapper):
    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except OSError as exc:
            raise _unwritable(exc) from None

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as exc:
            raise _unwritable(exc) from None


class _ClosedStdout(io.TextIOBase):
    """Descriptor 1 was closed before we started: every write says so."""

    def write(self, text: str) -> int:
        raise StdoutUnwritable(errno.EBADF, "it is closed")

    def fileno(self) -> int:
        raise StdoutUnwritable(errno.EBADF, "it is closed")


def guard_stdout() -> None:
    stream: Any = sys.stdout
    if stream is None:
        # keep descriptor 1 taken, or the first socket opened would get it
        devnull = os.open(os.devnull, os.O_WRONLY)
        if devnull != 1:
            os.dup2(devnull, 1)
            os.close(devnull)
        sys.stdout = _ClosedStdout()
        return
    if type(stream) is not io.TextIOWrapper:  # replaced already (a test runner): leave it
        return
    line_buffering, write_through = stream.line_buffering, stream.write_through
    encoding, errors = stream.encoding, stream.errors
    stream.flush()
    guarded = _GuardedStdout(  # on the same buffer; sys.__stdout__ stays the original
        stream.buffer,
        encoding=encoding,
        errors=errors,
        line_buffering=line_buffering,
        write_through=write_through,
    )
    sys.stdout = guarded


def report_unwritable(exc: StdoutUnwritable) -> int:
    """The one line on stderr; stdout then points at /dev/null so the interpreter's last flush
    cannot complain again. Returns the exit code."""
    silence_stdout()
    sys.stderr.write(f"error: {exc.describe()}\n")
    sys.stderr.flush()
    return EXIT_FAILED


def flush_stdout() -> None:
    """What is still buffered, written now (a StdoutUnwritable here, not at exit)."""
    stream = sys.stdout
    if stream is not None and not getattr(stream, "closed", False):
        stream.flush()
