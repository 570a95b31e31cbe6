"""The log handler: the lines of one event-loop iteration in one write, warnings at once."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qa_ws_cli.config import LoggingSettings
from qa_ws_cli.server.logs import (
    ConsoleFormatter,
    IterationBatchedHandler,
    configure_logging,
    json_line,
    log_event,
)


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def handler_and_logger() -> tuple[CountingStream, logging.Logger]:
    stream = CountingStream()
    handler = IterationBatchedHandler(stream)
    handler.setFormatter(ConsoleFormatter())
    logger = logging.getLogger(f"qa_ws.test.{id(stream)}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return stream, logger


async def test_the_lines_of_one_iteration_go_out_in_one_write_in_order() -> None:
    stream, log = handler_and_logger()
    for n in range(5):
        log.info("chat %d", n)
    assert stream.getvalue() == ""  # not yet: at the end of this iteration
    await asyncio.sleep(0)
    lines = stream.getvalue().splitlines()
    assert [line.split(maxsplit=2)[2] for line in lines] == [f"chat {n}" for n in range(5)]
    assert stream.writes == 1


async def test_a_warning_writes_at_once_with_what_was_waiting() -> None:
    stream, log = handler_and_logger()
    log.info("before")
    log.warning("the store went away")
    assert stream.getvalue().splitlines()[-1].endswith("the store went away")
    assert "before" in stream.getvalue()
    await asyncio.sleep(0)
    assert len(stream.getvalue().splitlines()) == 2  # nothing written twice


def test_outside_a_running_loop_each_line_is_written_at_once() -> None:
    stream, log = handler_and_logger()
    log.info("starting")
    assert stream.getvalue().endswith("starting\n")


async def test_a_closed_stream_loses_the_lines_but_not_the_server() -> None:
    stream, log = handler_and_logger()
    log.info("into the void")
    stream.close()
    await asyncio.sleep(0)  # the write fails inside the loop's callback: dropped, no raise
    log.warning("still no raise")


def test_a_console_line_escapes_every_control_character_of_message_and_values() -> None:
    stream, log = handler_and_logger()
    log.info("hello\x1b[2J", extra={"fields": {"user": "eve\nFAKE 00:00:00 INFO", "n": 3}})
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("hello\\x1b[2J user=eve\\nFAKE 00:00:00 INFO n=3")


def test_a_console_line_escapes_the_bidirectional_controls_that_reorder_it() -> None:
    stream, log = handler_and_logger()
    fields = {"user": "user\u202egnp.exe", "x": "\u2066a\u2069\u061c"}
    log.info("connect", extra={"fields": fields})
    (line,) = stream.getvalue().splitlines()
    assert line.endswith("connect user=user\\u202egnp.exe x=\\u2066a\\u2069\\u061c")


def test_a_json_line_falls_back_to_the_stdlib_for_what_orjson_refuses() -> None:
    lone_surrogate, huge = "eve\ud800", 2**70  # a token's sub may carry one; ints are unbounded
    for value in (lone_surrogate, huge, {"nested": [1.5, None, True]}, Path("/tmp/x")):
        line = json_line({"event": "connect", "user": value})
        assert "\n" not in line and line.startswith('{"event":"connect","user":')
        decoded = json.loads(line)["user"]
        assert decoded == (str(value) if isinstance(value, Path) else value)


def test_a_json_line_escapes_c1_controls_and_line_separators_but_keeps_utf8() -> None:
    line = json_line({"user": "é\x85\x9b\u2028\u2029\x1b\n\u202e", "n": 3})
    assert line.isprintable() and "é" in line and "\u202e" not in line
    assert json.loads(line) == {"user": "é\x85\x9b\u2028\u2029\x1b\n\u202e", "n": 3}


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], io.StringIO]]:
    """``configure_logging`` into a string, and the logging tree as it was afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogRecordFactory())
    saved_flags = (logging._srcfile, logging.logThreads, logging.logProcesses)

    def configure(log_format: str) -> io.StringIO:
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)
        configure_logging(LoggingSettings(format=log_format))
        return stream

    yield configure
    root.handlers[:], _, factory = saved
    root.setLevel(saved[1])
    logging.setLogRecordFactory(factory)
    logging._srcfile, logging.logThreads, logging.logProcesses = saved_flags


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _same_line(direct: str, through_logging: str, log_format: str) -> None:
    if log_format == "json":
        one, two = json.loads(direct), json.loads(through_logging)
        assert one.pop("ts")[:10] == two.pop("ts")[:10]  # the day; the milliseconds differ
        assert list(one.items()) == list(two.items())  # order included
    else:
        assert direct.split(" ", 1)[1] == through_logging.split(" ", 1)[1]  # bar the time


@pytest.mark.parametrize("log_format", ["console", "json"])
def test_log_event_writes_what_logging_writes_and_yields_to_anything_added(
    configured: Callable[[str], io.StringIO], log_format: str
) -> None:
    stream = configured(log_format)
    log = logging.getLogger("qa_ws.test.direct")
    fields = {"user": "eve\n\x1b[2J\u2028", "session": "s" * 32, "latency_ms": 0.5, "ok": True}
    log_event(log, "chat", **fields)  # the direct path: no record is made
    seen = Records()
    logging.getLogger("qa_ws").addHandler(seen)  # somebody else's handler on the way
    try:
        log_event(log, "chat", **fields)
    finally:
        logging.getLogger("qa_ws").removeHandler(seen)
    direct, through_logging = stream.getvalue().splitlines()
    _same_line(direct, through_logging, log_format)
    assert [r.getMessage() for r in seen.records] == ["chat"]
    assert seen.records[0].__dict__["fields"] == fields  # as logging.extra sets it


def test_log_event_keeps_logging_s_filters_levels_factories_and_disabled_loggers(
    configured: Callable[[str], io.StringIO],
) -> None:
    stream = configured("console")
    log = logging.getLogger("qa_ws.test.rules")
    log.addFilter(lambda record: getattr(record, "fields", {}).get("keep", True))
    try:
        log_event(log, "dropped by a filter", keep=False)
        log_event(log, "kept by the filter", keep=True)
    finally:
        log.filters.clear()
    log.disabled = True
    log_event(log, "from a disabled logger")
    log.disabled = False
    handler = logging.getLogger().handlers[0]
    handler.setLevel(logging.WARNING)
    log_event(log, "below the handler's level")
    handler.setLevel(logging.NOTSET)
    default = logging.getLogRecordFactory()

    def tagged(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = default(*args, **kwargs)
        record.msg = f"[tagged] {record.msg}"
        return record

    logging.setLogRecordFactory(tagged)
    log_event(log, "through the factory")
    logging.setLogRecordFactory(default)
    log_event(log, "direct again")
    lines = [line.split(maxsplit=2)[2] for line in stream.getvalue().splitlines()]
    assert lines == ["kept by the filter keep=True", "[tagged] through the factory", "direct again"]
