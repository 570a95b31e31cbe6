"""One WebSocket connection of a load user: websockets' Sans-I/O protocol over a plain socket.

``websockets.sync.client`` runs a reader thread per connection and hands every frame to the
caller through a lock and a condition; under gevent that thread is a greenlet, and the
handoff costs more CPU per answer than the frame itself. Here the user's own greenlet does
everything: ``ClientProtocol`` (``websockets.client``, the library's public Sans-I/O core)
builds the handshake and parses frames, and this class only moves bytes: one ``recv`` per
read, whatever it holds fed to the protocol at once, the protocol's replies (pongs, the
close echo) written back before the caller sees the frame. No thread, no lock, no queue
between two greenlets.

The socket is the stdlib's, so in a load process it is gevent's cooperative one (Locust
monkey-patches on import) and a blocked read lets every other user run; elsewhere (tests,
a plain process) it simply blocks. Locust's stop (``GreenletExit``) is never caught: it
passes through any read, and the socket is closed on the way out.

Errors are websockets' own, so a caller handles them as it would the sync client's:
``InvalidStatus`` (refused handshake, with the response body), ``InvalidHandshake`` /
``InvalidMessage`` (not a WebSocket server), ``ConnectionClosed`` (``rcvd`` is the server's
close frame, or None when the connection was cut), ``TimeoutError`` and ``OSError``.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import time
from collections import deque

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidStatus
from websockets.frames import CloseCode, Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import BytesLike
from websockets.uri import parse_uri

CLOSE_TIMEOUT_S = 1.0  # how long a closing handshake may wait for the server's side of it
RECV_BUFSIZE = 65536
USER_AGENT = "qa-ws-bench"


class WsConnection:
    """A client connection whose reads and writes happen in the caller's greenlet."""

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.socket = sock
        self.protocol = protocol
        self.frames: deque[Frame] = deque()  # parsed, not yet handed to the caller
        self.parts: list[BytesLike] = []  # a fragmented message so far
        self.text = False  # whether that message is text

    @property
    def close_code(self) -> int | None:
        """The server's close code once closed (1006 when cut without one), else None."""
        return self.protocol.close_code

    # -- bytes in and out ------------------------------------------------------------------

    def flush(self) -> None:
        """Write what the protocol has to send (frames, pongs, close echo, end of stream)."""
        for data in self.protocol.data_to_send():
            if data:
                self.socket.sendall(data)
            else:  # SEND_EOF: half-close, the server closes its side
                with contextlib.suppress(OSError):
                    self.socket.shutdown(socket.SHUT_WR)

    def read(self, timeout: float) -> None:
        """One ``recv`` (TimeoutError when nothing comes), fed to the protocol, replies flushed."""
        self.socket.settimeout(timeout)
        data = self.socket.recv(RECV_BUFSIZE)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        self.flush()

    # -- opening handshake -----------------------------------------------------------------

    def handshake(self, headers: dict[str, str], timeout: float) -> None:
        """Send ``ClientProtocol.connect()``'s request and read until its response."""
        request = self.protocol.connect()
        for name, value in headers.items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self.socket.settimeout(timeout)
        self.flush()
        deadline = time.monotonic() + timeout
        while True:
            for event in self.protocol.events_received():
                if isinstance(event, Response):
                    if self.protocol.handshake_exc is not None:
                        raise self.protocol.handshake_exc
                elif isinstance(event, Frame):
                    self.frames.append(event)  # sent together with the response
            if self.protocol.state is not State.CONNECTING:
                if self.protocol.handshake_exc is not None:  # cut before any response
                    raise self.protocol.handshake_exc
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out while waiting for the handshake response")
            self.read(remaining)

    # -- messages --------------------------------------------------------------------------

    def send(self, message: str) -> None:
        """One text frame (InvalidState once closing, OSError when the socket is gone)."""
        self.protocol.send_text(message.encode())
        self.flush()

    def recv(self, timeout: float) -> str | bytes:
        """The next message within ``timeout`` s: text as str, binary as bytes.

        Pings are answered by the protocol as they are read. TimeoutError when nothing
        complete arrives in time (the connection stays usable); ConnectionClosed when the
        server closed or cut it (the socket is then closed).
        """
        deadline = 0.0
        while True:
            while self.frames:
                message = self._assemble(self.frames.popleft())
                if message is not None:
                    return message
            if self.protocol.state is not State.OPEN:  # a close frame, a cut or a failure
                self.finish()
                raise self.protocol.close_exc
            if deadline == 0.0:
                deadline = time.monotonic() + timeout
                remaining = timeout
            else:
                remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no message in time")
            self.read(remaining)
            self.frames.extend(self.protocol.events_received())  # type: ignore[arg-type]

    def _assemble(self, frame: Frame) -> str | bytes | None:
        """A whole message once its last fragment is here; None for control frames."""
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                return self._decode(frame.data, opcode is Opcode.TEXT)
            self.parts, self.text = [frame.data], opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self.parts.append(frame.data)
            if frame.fin:
                data, self.parts = b"".join(self.parts), []
                return self._decode(data, self.text)
        return None  # ping (already answered), pong, close (state says it)

    def _decode(self, data: BytesLike, text: bool) -> str | bytes:
        if not text:
            return bytes(data)
        try:
            return str(data, "utf-8")
        except UnicodeDecodeError:  # RFC 6455 7.1.7: fail the connection with 1007
            self.protocol.fail(CloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
            with contextlib.suppress(OSError):
                self.flush()
            self.finish()
            raise self.protocol.close_exc from None

    # -- closing ---------------------------------------------------------------------------

    def finish(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Wait (bounded) for the server to end the TCP connection, then close the socket."""
        deadline = time.monotonic() + timeout
        try:
            while self.protocol.state is not State.CLOSED:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.read(remaining)
        except OSError:  # TimeoutError included: the server did not close in time
            pass
        finally:
            if self.protocol.state is not State.CLOSED:
                self.protocol.receive_eof()  # give up on the server's side: closed for us
            self.socket.close()

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """The closing handshake: a close frame, then at most ``timeout`` s for the answer."""
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(code)
            try:
                self.flush()
            except OSError:
                self.protocol.receive_eof()
        self.finish(timeout)

    def abort(self) -> None:
        """Cut the TCP connection without a closing handshake."""
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)
        self.socket.close()
        if self.protocol.state is not State.CLOSED:
            self.protocol.receive_eof()


def refusal(exc: InvalidStatus) -> tuple[str, str]:
    """The handshake refusal's ``error`` code and ``detail`` (docs/protocol.md), else the status."""
    code, detail = f"http_{exc.response.status_code}", ""
    try:
        body = json.loads(exc.response.body or b"{}")
        code, detail = str(body.get("error") or code), str(body.get("detail") or "")
    except (ValueError, AttributeError):
        pass
    return code, detail


def open_connection(
    url: str, token: str | None, timeout: float, *, max_size: int = 4 * 1024 * 1024
) -> WsConnection:
    """Connect and complete the opening handshake within ``timeout`` s.

    The token travels as ``Authorization: Bearer``; no compression, no proxy (loopback
    targets), no client pings (the server sends heartbeats and the protocol answers them).
    """
    uri = parse_uri(url)
    sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if uri.secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=uri.host)
        connection = WsConnection(sock, ClientProtocol(uri, max_size=max_size))
        headers = {"User-Agent": USER_AGENT}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        connection.handshake(headers, timeout)
    except BaseException:
        sock.close()
        raise
    return connection
