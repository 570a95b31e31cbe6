"""An incremental server-sent events parser (WHATWG HTML, "Interpreting an event stream").

Fed bytes as the network hands them over, split anywhere (even inside a UTF-8 character or
between ``\\r`` and ``\\n``), it returns the complete events so far. Like the protocol core of
python-websockets it does no I/O, so the HTTP backends and the tests share one implementation.
``id`` and ``retry`` fields are read and dropped: the backends never reconnect a stream.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_LINE_END = re.compile(rb"\r\n|\r|\n")
_BOM = b"\xef\xbb\xbf"
DEFAULT_MAX_LINE = 1 << 20


class SSEError(ValueError):
    """The stream broke a limit; the caller treats it as a malformed answer."""


class SSEEvent(NamedTuple):
    event: str
    data: str


class SSEParser:
    """Feed bytes with ``feed``; each call returns the events its bytes completed."""

    __slots__ = ("_after_cr", "_buffer", "_data", "_event", "_max_line", "_started")

    def __init__(self, *, max_line: int = DEFAULT_MAX_LINE) -> None:
        self._after_cr = False  # the last chunk ended with "\r": a "\n" next is part of it
        self._buffer = b""
        self._data: list[str] = []
        self._event = ""
        self._max_line = max_line
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._after_cr and chunk:
            self._after_cr = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        buffer = self._buffer + chunk if self._buffer else chunk
        if not self._started:
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._buffer = buffer
                return []
            self._started = True
            if buffer.startswith(_BOM):
                buffer = buffer[len(_BOM) :]
        events: list[SSEEvent] = []
        start = 0
        for match in _LINE_END.finditer(buffer):
            self._line(buffer[start : match.start()], events)
            start = match.end()
        if start and buffer[start - 1 : start] == b"\r" and start == len(buffer):
            self._after_cr = True
        self._buffer = buffer[start:]
        if len(self._buffer) > self._max_line:
            raise SSEError(f"an event stream line exceeded {self._max_line} bytes")
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        if not raw:
            if self._data:
                events.append(SSEEvent(self._event or "message", "\n".join(self._data)))
            self._data = []
            self._event = ""
            return
        line = raw.decode("utf-8", "replace")
        name, colon, value = line.partition(":")
        if not name and colon:
            return  # a comment, e.g. ": keep-alive"
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
