"""RFC 6455 5.1: every client frame is masked, and a server closes with 1002 when one is not.

aiohttp's frame reader uses the MASK bit only to unmask and has no option to require it, so
``MaskedFramesOnly`` stands in front of it: a frame-boundary scanner that reads each frame's
header (2 bytes, the 16/64-bit extended length, then skips the 4-byte mask key and the payload
by length, across any split of the bytes into reads) and looks at one bit. Payload bytes are
never looked at one by one: a read that falls inside a payload costs one subtraction.
"""

from __future__ import annotations

import struct
from typing import Protocol

from aiohttp.http import WebSocketReader

from qa_ws_cli.protocol.codes import CloseCode

_REASON = b"protocol error: unmasked frame"
# an unmasked server close frame: FIN + opcode 8, length, the code, the reason
UNMASKED_CLOSE = (
    bytes([0x88, 2 + len(_REASON)]) + struct.pack("!H", CloseCode.PROTOCOL_ERROR) + _REASON
)
_U16 = struct.Struct("!H").unpack_from
_U64 = struct.Struct("!Q").unpack_from


class FrameScanner:
    """Fed the client's bytes in order; ``feed`` is False from the first unmasked frame on."""

    __slots__ = ("_head", "_skip", "unmasked")

    def __init__(self) -> None:
        self._skip = 0  # bytes of the current frame (mask key and payload) still to come
        self._head = b""  # the start of a header split across reads (at most 9 bytes)
        self.unmasked = False

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        if self.unmasked:
            return False
        if self._head:  # rare: a read ended inside a header
            data = self._head + data
            self._head = b""
        end = len(data)
        pos = self._skip
        while pos < end:
            if end - pos < 2:
                self._head = bytes(data[pos:])
                self._skip = 0
                return True
            second = data[pos + 1]
            if not second & 0x80:
                self.unmasked = True
                return False
            length = second & 0x7F
            if length < 126:
                pos += 6 + length  # header 2, mask key 4, payload
            elif length == 126:
                if end - pos < 4:
                    self._head = bytes(data[pos:])
                    self._skip = 0
                    return True
                pos += 8 + _U16(data, pos + 2)[0]
            else:
                if end - pos < 10:
                    self._head = bytes(data[pos:])
                    self._skip = 0
                    return True
                pos += 14 + _U64(data, pos + 2)[0]
        self._skip = pos - end
        return True


class Refuser(Protocol):
    """Who closes the connection on its first unmasked frame (the connection's handler)."""

    def refuse_unmasked(self) -> None: ...


class MaskedFramesOnly:
    """What ``RequestHandler.set_parser`` is given instead of aiohttp's reader: every read goes
    through the scanner, then on to the reader; from the first unmasked frame on, nothing does
    (that read included) and ``owner.refuse_unmasked`` is called once. (The owner, not a bound
    method: that would be one more object on every connection.)"""

    __slots__ = ("_owner", "reader", "scanner")  # one per connection: no __dict__

    def __init__(self, reader: WebSocketReader, owner: Refuser) -> None:
        self.reader = reader
        self.scanner = FrameScanner()
        self._owner: Refuser | None = owner

    def feed_data(self, data: bytes | bytearray | memoryview) -> tuple[bool, bytes]:
        if self.scanner.feed(data):
            return self.reader.feed_data(data)
        if self._owner is not None:
            owner, self._owner = self._owner, None
            owner.refuse_unmasked()
        return False, b""

    def feed_eof(self) -> None:
        self.reader.feed_eof()
