"""Connections before the upgrade: handshake deadline, per-address cap, parser errors, EMFILE.

aiohttp makes one ``RequestHandler`` (an asyncio protocol) per TCP connection. ``serve`` listens
with ``loop.create_server`` and a factory making ``GuardedHandler``, a subclass that overrides
only public methods (``connection_made``, ``connection_lost``, ``handle_error``,
``log_exception``, ``set_parser``), so a connection is counted and timed from ``accept()`` on,
before aiohttp has parsed a single byte:

- the client address is the TCP peer; behind a trusted proxy it is the one the
  ``X-Forwarded-For`` handling resolves, attributed when the first request head is parsed
  (the proxy's own connections are not capped at accept time);
- a connection whose first request head is not complete ``server.handshake_timeout_s`` after
  ``accept()`` is closed (silent sockets, slowloris headers);
- past ``server.max_connections_per_ip`` open connections, a new one is closed at once;
- a request aiohttp cannot parse gets a generic JSON 400 (nothing of it echoed) and one
  rate-limited log line, not a traceback;
- ``accept()`` failing for lack of file descriptors is logged at most once a second, with a count;
- after the upgrade, an unmasked client frame gets a close frame with 1002 and the connection
  is closed (``masking.py``: aiohttp's reader does not check the MASK bit).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import sys
from collections.abc import Callable, Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any, cast

from aiohttp import hdrs, web
from aiohttp.http import WebSocketReader
from aiohttp.http_exceptions import HttpProcessingError

from qa_ws_cli.config import ServerSettings
from qa_ws_cli.server.keys import REQUEST_ID_HEADER, UNPARSED, new_request_id
from qa_ws_cli.server.logs import RateLimitedLog, log_event
from qa_ws_cli.server.masking import UNMASKED_CLOSE, MaskedFramesOnly

SERVER_HEADER = "qa-ws"
_ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
log = logging.getLogger("qa_ws.server")


def in_networks(address: str, networks: Sequence[IPv4Network | IPv6Network]) -> bool:
    """Whether ``address`` (an IP, or anything else: False) is in one of ``networks``."""
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


class ConnectionGuard:
    """Per-address counts of open connections, shared by every ``GuardedHandler``."""

    def __init__(self, server: ServerSettings) -> None:
        self.handshake_timeout_s = server.handshake_timeout_s
        self.max_per_ip = server.max_connections_per_ip
        self._trusted: Sequence[IPv4Network | IPv6Network] = server.trusted_proxies
        self._open: dict[str, int] = {}
        self.refused = RateLimitedLog(log, "connection_refused", logging.WARNING)
        self.timed_out = RateLimitedLog(log, "handshake_timeout", logging.INFO)
        self.bad_requests = RateLimitedLog(log, "bad_request", logging.INFO)
        self.accept_errors = RateLimitedLog(log, "accept_failed", logging.WARNING)
        self.unmasked = RateLimitedLog(log, "unmasked_frame", logging.INFO)

    def open_from(self, address: str) -> int:
        return self._open.get(address, 0)

    def is_trusted_proxy(self, address: str) -> bool:
        # none configured (the default): no address to parse
        return bool(self._trusted) and in_networks(address, self._trusted)

    def take(self, address: str) -> bool:
        """Count one more connection from ``address``; False (not counted) over the cap."""
        held = self._open.get(address, 0)
        if held >= self.max_per_ip:
            return False
        self._open[address] = held + 1
        return True

    def release(self, address: str) -> None:
        left = self._open.get(address, 0) - 1
        if left > 0:
            self._open[address] = left
        else:
            self._open.pop(address, None)

    def handler_factory(self, server: web.Server, **kwargs: Any) -> Callable[[], GuardedHandler]:
        """What ``loop.create_server`` needs: ``server`` is the runner's (``runner.server``)."""
        loop = asyncio.get_running_loop()
        return lambda: GuardedHandler(self, server, loop=loop, **kwargs)

    def exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's handler: accept() resource errors counted, everything else as usual.

        asyncio retries such an accept() for each queued connection and reports each failure,
        thousands a second when the descriptors run out; one line a second is enough.
        """
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS:
            self.accept_errors.hit(error=errno.errorcode.get(exc.errno or 0, str(exc.errno)))
            return
        loop.default_exception_handler(context)


class GuardedHandler(web.RequestHandler):
    """aiohttp's handler, counted per client address and timed until its first request."""

    # aiohttp's handler has slots; without these, each connection would carry a __dict__ too
    __slots__ = ("_deadline", "address", "guard", "started", "unmasked_frame")

    def __init__(self, guard: ConnectionGuard, server: web.Server, **kwargs: Any) -> None:
        super().__init__(server, **kwargs)
        self.guard = guard
        self.address: str | None = None
        self.started = False
        self.unmasked_frame = False  # closed with 1002 for an unmasked client frame
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else "-"
        if not self.guard.is_trusted_proxy(address):
            if not self.guard.take(address):
                self.guard.refused.hit(remote=address, reason="max_connections_per_ip")
                transport.close()  # before aiohttp ever sees it: nothing is held
                return
            # one string for every connection from an address (its count's key), not one each
            self.address = sys.intern(address)
        super().connection_made(transport)
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_later(self.guard.handshake_timeout_s, self._handshake_expired)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.address is not None:
            self.guard.release(self.address)
            self.address = None
        super().connection_lost(exc)

    def request_started(self, remote: str | None) -> bool:
        """The first middleware saw a parsed request; False when its address is over the cap."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.started = True
        if self.address is None and remote is not None:  # came through a trusted proxy
            if not self.guard.take(remote):
                self.guard.refused.hit(remote=remote, reason="max_connections_per_ip")
                return False
            self.address = remote
        return True

    def set_parser(
        self, parser: WebSocketReader, data_received_cb: Callable[[], None] | None = None
    ) -> None:
        """The upgrade (``WebSocketResponse.prepare``): aiohttp's frame reader gets the client's
        bytes through the mask check, those that came with the upgrade request included (aiohttp
        feeds them here, inside ``set_parser``)."""
        checked = MaskedFramesOnly(parser, self)
        # the handler's payload parser is duck-typed (feed_data, feed_eof) and stored as Any
        super().set_parser(cast(WebSocketReader, checked), data_received_cb)

    def refuse_unmasked(self) -> None:
        """RFC 6455 5.1: close with 1002, written here since aiohttp never sees the frame."""
        self.unmasked_frame = True
        transport = self.transport
        self.guard.unmasked.hit(remote=self.address or _peer(transport))
        if transport is not None and not transport.is_closing():
            transport.write(UNMASKED_CLOSE)
        self.force_close()  # closes the transport once the close frame is written

    def _handshake_expired(self) -> None:
        self._deadline = None
        if not self.started:
            self.guard.timed_out.hit(remote=self.address or "-")
            self.force_close()
            if self.transport is not None:
                self.transport.abort()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's error answer, without echoing the request: a generic JSON body."""
        super().handle_error(request, status, exc, message)  # its logging and its checks
        if status >= 500:
            body = '{"error": "internal_error", "detail": "internal error"}'
        else:
            body = '{"error": "bad_request", "detail": "the request could not be parsed"}'
        headers = {
            hdrs.SERVER: SERVER_HEADER,
            hdrs.X_CONTENT_TYPE_OPTIONS: "nosniff",
            REQUEST_ID_HEADER: new_request_id(),
        }
        response = web.Response(
            status=status, text=body, content_type="application/json", headers=headers
        )
        response.force_close()
        if status < 500:
            request[UNPARSED] = True  # no access line: the bad_request line counts it
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError):  # the client's fault: one short line
            self.guard.bad_requests.hit(remote=_peer(self.transport), error=type(exc).__name__)
            return
        super().log_exception(*args, **kw)


def _peer(transport: asyncio.BaseTransport | None) -> str:
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if isinstance(peer, tuple) and peer else "-"


def raise_open_files_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard one (a common service default is 1,024)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        log_event(log, "open_files_limit", soft=soft, hard=hard)
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log_event(log, "open_files_limit", logging.WARNING, soft=soft, hard=hard, error=str(exc))
        return
    log_event(log, "open_files_limit", raised_from=soft, to=hard)
