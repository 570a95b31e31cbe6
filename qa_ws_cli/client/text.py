"""What a token or a message may hold, checked before anything is sent.

A JWT is printable ASCII (base64url segments and dots): a CR or LF left by a paste or a CRLF
file would be refused by the HTTP client, or worse, echoed back with the whole token, so the
CLI says which character is wrong and where, never the token. A message is Unicode text: a
byte the locale could not decode (``$(printf 'x\\xff')``, a Latin-1 file on stdin) reaches
Python as a lone surrogate, which no JSON frame can carry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO

from qa_ws_cli.errors import ClientError

_NAMES = {"\r": "a carriage return (\\r)", "\n": "a line feed (\\n)", " ": "a space"}


class InvalidText(ClientError):
    """A message (or a stdin line) that is not Unicode text: the CLI's usage error (exit 2)."""

    code = "invalid_text"


def describe_char(char: str) -> str:
    """``a carriage return (\\r)``, ``a non-ASCII character (U+00E9)``, ``the byte 0xff ...``."""
    code = ord(char)
    if char in _NAMES:
        return _NAMES[char]
    if 0xDC80 <= code <= 0xDCFF:  # how Python keeps a byte the locale could not decode
        return f"the byte 0x{code - 0xDC00:02x} (not UTF-8)"
    if 0xD800 <= code <= 0xDFFF:
        return f"a lone surrogate (U+{code:04X})"
    if code < 0x20 or code == 0x7F:
        return f"a control character (U+{code:04X})"
    return f"a non-ASCII character (U+{code:04X})"


def _where(index: int, length: int) -> str:
    return "at its end" if index == length - 1 else f"at position {index + 1} of {length}"


def token_problem(token: str) -> str | None:
    """None for a token of printable ASCII, else what is wrong (never the token itself), to
    follow "the token" or "it": ``has a carriage return (\\r) at its end: ...``."""
    for index, char in enumerate(token):
        if not "!" <= char <= "~":
            hint = " (a pasted line end, or a file with CRLF line ends?)" if char in "\r\n" else ""
            return (
                f"has {describe_char(char)} {_where(index, len(token))}: "
                f"a JWT is printable ASCII only{hint}"
            )
    return None


def bearer(token: str | None) -> dict[str, str]:
    """The Authorization header for ``token`` (none without one); ClientError, naming the bad
    character but never the token, when it cannot be a header's value."""
    if not token:
        return {}
    problem = token_problem(token)
    if problem is not None:
        raise ClientError(f"cannot send the token: it {problem}")
    return {"Authorization": f"Bearer {token}"}


def text_problem(text: str) -> str | None:
    """None when ``text`` is Unicode text (encodable as UTF-8), else what is wrong."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        char = text[exc.start]
        return (
            f"it has {describe_char(char)} {_where(exc.start, len(text))}: "
            "send UTF-8 text (convert the input, e.g. with iconv -f latin1 -t utf-8)"
        )
    return None


def check_text(text: str, what: str = "the message") -> None:
    """Raise InvalidText when ``text`` is not Unicode text."""
    problem = text_problem(text)
    if problem is not None:
        raise InvalidText(f"{what} is not valid text: {problem}")


def undecoded(stream: TextIO) -> Iterator[str]:
    """``stream``'s lines as UTF-8 whatever the locale, a byte that is not UTF-8 kept as a lone
    surrogate (never an exception halfway through), so each line can be judged on its own.

    It reads the stream's own binary buffer: a second buffered reader (or a text wrapper that
    closes it) would be finalized under a daemon thread still reading it (the repl's pump).
    """
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        yield from stream
        return
    for raw in buffer:
        yield raw.decode("utf-8", errors="surrogateescape")


__all__ = [
    "InvalidText",
    "bearer",
    "check_text",
    "describe_char",
    "text_problem",
    "token_problem",
    "undecoded",
]
