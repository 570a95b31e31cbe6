"""The log handler: the lines of one event-loop iteration in one write, warnings at once."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

from qa_ws_cli.server.logs import ConsoleFormatter, IterationBatchedHandler, json_line


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


def test_a_json_line_falls_back_to_the_stdlib_for_what_orjson_refuses() -> None:
    lone_surrogate, huge = "eve\ud800", 2**70  # a token's sub may carry one; ints are unbounded
    for value in (lone_surrogate, huge, {"nested": [1.5, None, True]}, Path("/tmp/x")):
        line = json_line({"event": "connect", "user": value})
        assert "\n" not in line and line.startswith('{"event":"connect","user":')
        decoded = json.loads(line)["user"]
        assert decoded == (str(value) if isinstance(value, Path) else value)


def test_a_json_line_escapes_c1_controls_and_line_separators_but_keeps_utf8() -> None:
    line = json_line({"user": "é\x85\x9b\u2028\u2029\x1b\n", "n": 3})
    assert line.isprintable() and "é" in line
    assert json.loads(line) == {"user": "é\x85\x9b\u2028\u2029\x1b\n", "n": 3}
