"""Structured logs: one line per connect, disconnect and chat; JSON or console; no tokens.

``log_event`` writes a line; its fields travel in ``extra={"fields": {...}}`` when it goes
through ``logging``, and straight to our handler while nothing else is configured. Tokens
never reach a log call, and the access
log prints the path with ``token=`` redacted (the protocol's last-resort carrier). The console
format escapes every control character (C0, DEL, C1) in the message and each value, so what a
client sends (a path, a ``sub``) can neither start a forged line nor drive the terminal. The
JSON format is UTF-8 from orjson (an eighth of the stdlib encoder's instructions for a chat's
line); JSON escapes C0 itself, and the C1 controls and U+2028/U+2029 are escaped after it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from typing import Any, TextIO
from urllib.parse import unquote

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from qa_ws_cli.config import LoggingSettings
from qa_ws_cli.protocol.events import utc_timestamp
from qa_ws_cli.server.keys import REQUEST_ID, UNPARSED

# the value ends at the next parameter, or at the end of the path inside a log line
_TOKEN_RE = re.compile(r"((?:^|[?&])(?:token|access_token)=)[^&\s\"]*", re.IGNORECASE)
# the bidirectional controls (Unicode's Bidi_Control property), which reorder what a terminal
# or an editor shows of a line
BIDI_CONTROLS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS.update({0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x2028: "\\u2028", 0x2029: "\\u2029"})
_CONTROLS.update({c: f"\\u{c:04x}" for c in BIDI_CONTROLS})
# what JSON leaves raw but a terminal or a line splitter acts on, as JSON escapes (inside strings:
# everything orjson writes outside a string is ASCII)
_JSON_UNSAFE = {c: f"\\u{c:04x}" for c in (*range(0x80, 0xA0), 0x2028, 0x2029, *BIDI_CONTROLS)}


def escape_controls(text: str) -> str:
    """``\\n``, ``\\r``, ``\\t`` and ``\\xNN`` for every C0/C1 control and DEL, ``\\uNNNN`` for
    the line separators and the bidirectional controls."""
    return text.translate(_CONTROLS) if not text.isprintable() else text


_JWT_RE = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")
# any JWS-shaped value (three base64url segments), whatever its header's first bytes: a path
# is what a client writes, so its check is broader than every line's ``eyJ`` test
_JWS_SHAPE_RE = re.compile(r"[\w-]{8,}\.[\w-]{8,}\.[\w-]{8,}")


def redact(text: str) -> str:
    """Hide query-string tokens and anything shaped like a JWT (substring tests first: this
    runs on every log line, and nearly none holds either)."""
    if "eyJ" in text:
        text = _JWT_RE.sub("[redacted]", text)
    if "oken=" in text.lower():
        text = _TOKEN_RE.sub(r"\1[redacted]", text)
    return text


def loggable_path(raw_path: str) -> str:
    """A request's path and query as logged: percent-escapes decoded first (``%74oken=`` is
    ``token=``), then tokens and anything shaped like one redacted."""
    return _JWS_SHAPE_RE.sub("[redacted]", redact(unquote(raw_path)))


class EventFormatter(logging.Formatter):
    """A line from a record's parts: ``line`` is shared by ``format`` (any record) and by
    ``log_event``'s direct path, which has the parts without a record."""

    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        fields = getattr(record, "fields", {})
        parts = (record.created, record.levelname, record.name, record.getMessage(), fields)
        return redact(self.line(*parts, exc))

    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        message: str,
        fields: dict[str, Any],
        exc: str | None = None,
    ) -> str:
        """The line before redaction."""
        raise NotImplementedError


class JsonFormatter(EventFormatter):
    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        message: str,
        fields: dict[str, Any],
        exc: str | None = None,
    ) -> str:
        entry: dict[str, Any] = {
            "ts": utc_timestamp(created),
            "level": levelname.lower(),
            "logger": name,
            "event": message,
        }
        entry.update(fields)
        if exc is not None:
            entry["exc"] = exc
        return json_line(entry)


def json_line(entry: dict[str, Any]) -> str:
    """One JSON object on one line, UTF-8, with nothing a terminal would act on."""
    try:
        line = orjson.dumps(entry, default=str).decode()
    except orjson.JSONEncodeError:
        # what orjson refuses and the stdlib takes: a lone surrogate (a token's ``sub`` can
        # carry one), an integer past 64 bits; ASCII, every non-ASCII character escaped
        return json.dumps(entry, default=str, separators=(",", ":"))
    return line if line.isascii() else line.translate(_JSON_UNSAFE)


class ConsoleFormatter(EventFormatter):
    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def line(
        self,
        created: float,
        levelname: str,
        name: str,
        message: str,
        fields: dict[str, Any],
        exc: str | None = None,
    ) -> str:
        second = int(created)
        if second != self._second:  # one strftime a second, not one a line
            self._second, self._stamp = second, time.strftime("%H:%M:%S", time.localtime(second))
        values = " ".join([f"{k}={v}" for k, v in fields.items()])
        # one escape of the whole line: it changes control characters only, so this is the
        # same as escaping the message and each value, for one call instead of one a field
        text = escape_controls(f"{message} {values}".rstrip())
        line = f"{self._stamp} {levelname:<7} {text}"
        return line if exc is None else f"{line}\n{exc}"


class IterationBatchedHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that writes the lines of one event-loop iteration in one write.

    Each record is formatted at once, in order; the write waits for the end of the loop's
    iteration (``call_soon``), so a busy gateway makes one write (and one flush, a system call)
    an iteration instead of one a line. Outside a running loop (start-up, other threads) and
    from WARNING up it writes at once, with whatever waits: a ``kill -9`` can lose at most the
    INFO lines of the iteration it interrupts.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._pending: list[str] = []
        self._scheduled = False

    def emit(self, record: logging.LogRecord) -> None:  # called with the handler's lock held
        try:
            self._pending.append(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)
            return
        if record.levelno >= logging.WARNING or not self._schedule():
            self.flush()

    def emit_event(
        self, formatter: EventFormatter, level: int, name: str, message: str, fields: dict[str, Any]
    ) -> bool:
        """``emit`` of the record ``log_event`` would have made, without making it; False
        (nothing written) if the line cannot be formatted: the record path then reports it."""
        levelname = logging.getLevelName(level)
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            try:
                line = redact(formatter.line(time.time(), levelname, name, message, fields))
            except Exception:
                return False
            self._pending.append(line + self.terminator)
            if level >= logging.WARNING or not self._schedule():
                self.flush()
        return True

    def _schedule(self) -> bool:
        if self._scheduled:
            return True
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._scheduled = True
        loop.call_soon(self.flush)
        return True

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]  # made by Handler.__init__
            self._scheduled = False
            text, self._pending = "".join(self._pending), []
            try:
                if text:
                    self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # the stream is gone (closed, a broken pipe)
                pass  # as logging does for a failed write: the server carries on


_direct: list[IterationBatchedHandler] = []  # the handler configure_logging installed


def configure_logging(settings: LoggingSettings) -> None:
    handler = IterationBatchedHandler(sys.stderr)
    _direct[:] = [handler]
    handler.setFormatter(JsonFormatter() if settings.format == "json" else ConsoleFormatter())
    # the logging HOWTO's "Optimization" advice: a server needs no caller frame, thread or
    # process name on each record, and collecting them is most of a record's cost
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level)


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One structured line. While the logging tree is the one ``configure_logging`` set up
    (one handler, ours, on the root; no filter; the default record factory), the line goes
    straight to that handler: what ``logging`` would have written, without the record and the
    call chain to reach it, which cost more than the line itself. Anything added by somebody
    else (a handler, a filter, a record factory: pytest's ``caplog``, say) and every record
    goes through ``logging`` again."""
    if not logger.isEnabledFor(level):
        return
    handler = _direct_handler(logger, level)
    if handler is None or not handler.emit_event(
        handler.formatter,  # type: ignore[arg-type]  # checked by _direct_handler
        level,
        logger.name,
        event,
        fields,
    ):
        logger.log(level, event, extra={"fields": fields})


def _direct_handler(logger: logging.Logger, level: int) -> IterationBatchedHandler | None:
    """Our handler, if a record of ``logger`` at ``level`` would reach it alone, unchanged."""
    if not _direct or logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    handler = _direct[0]
    if (
        handler.filters
        or level < handler.level
        or not isinstance(handler.formatter, EventFormatter)
    ):
        return None
    node: logging.Logger | None = logger
    while node is not None:
        if node.filters or node.disabled:
            return None
        if node.handlers:  # the first logger with handlers must be the root, with ours only
            root = node is logging.root and len(node.handlers) == 1
            return handler if root and node.handlers[0] is handler else None
        if not node.propagate:
            return None
        node = node.parent
    return None


class RateLimitedLog:
    """One event logged at most once a second: the first at once, the rest counted and
    reported (``count=``) by one line when the second is over."""

    def __init__(self, logger: logging.Logger, event: str, level: int = logging.WARNING) -> None:
        self.logger = logger
        self.event = event
        self.level = level
        self.total = 0
        self._window_end = 0.0
        self._pending = 0
        self._last: dict[str, Any] = {}
        self._flush: asyncio.TimerHandle | None = None

    def hit(self, **fields: Any) -> None:
        self.total += 1
        now = time.monotonic()
        if now >= self._window_end and self._flush is None:
            self._window_end = now + 1.0
            log_event(self.logger, self.event, self.level, count=1, **fields)
            return
        self._pending += 1
        self._last = fields
        if self._flush is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._flush = loop.call_at(loop.time() + max(0.0, self._window_end - now), self._report)

    def _report(self) -> None:
        self._flush = None
        if self._pending:
            count, self._pending = self._pending, 0
            self._window_end = time.monotonic() + 1.0
            log_event(self.logger, self.event, self.level, count=count, **self._last)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access log with the query string's tokens redacted. A WebSocket (101) gets
    none: its ``connect`` and ``disconnect`` lines carry the same request id, and aiohttp would
    write this one only at the disconnect, with the connection's whole life as ``ms``."""

    __slots__ = ()  # aiohttp makes one per connection: no __dict__ beside the base's slots

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if response.status == 101 or not self.logger.isEnabledFor(logging.INFO):
            return
        if request.get(UNPARSED):
            return
        log_event(
            self.logger,
            "http",
            request_id=request.get(REQUEST_ID, "-"),
            remote=request.remote,
            method=request.method,
            path=loggable_path(request.raw_path),
            status=response.status,
            ms=round(time * 1000, 1),
        )
