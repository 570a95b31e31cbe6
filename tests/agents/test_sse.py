"""The incremental SSE parser, against the WHATWG rules and arbitrary chunking."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_ws_cli.agents.sse import SSEError, SSEEvent, SSEParser

SAMPLE = (
    b": keep-alive\r\n"
    b"\r\n"
    b"event: RunContent\r\n"
    b'data: {"content":"na\xc3\xafve \xe2\x9c\x93"}\r\n'
    b"\r\n"
    b"data: first line\n"
    b"data:second line\n"
    b"data:  two spaces keep one\n"
    b"id: 7\n"
    b"retry: 1000\n"
    b"\n"
    b"event: done\r"
    b"data\r"
    b"\r"
)
EXPECTED = [
    SSEEvent("RunContent", '{"content":"naïve ✓"}'),
    SSEEvent("message", "first line\nsecond line\n two spaces keep one"),
    SSEEvent("done", ""),
]


def parse(*chunks: bytes) -> list[SSEEvent]:
    parser = SSEParser()
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_whole_stream() -> None:
    assert parse(SAMPLE) == EXPECTED


def test_every_split_point_and_byte_by_byte() -> None:
    for cut in range(len(SAMPLE) + 1):
        assert parse(SAMPLE[:cut], SAMPLE[cut:]) == EXPECTED, cut
    assert parse(*(SAMPLE[i : i + 1] for i in range(len(SAMPLE)))) == EXPECTED


def test_events_are_plain_tuples() -> None:
    assert parse(b"event: x\ndata: y\n\n") == [("x", "y")]


def test_rules_for_fields_and_blank_lines() -> None:
    assert parse(b"event: lonely\n\n") == []  # no data: nothing to dispatch
    assert parse(b"event: a\n\ndata: b\n\n") == [("message", "b")]  # type resets
    assert parse(b"data: unterminated") == []  # incomplete at the end: dropped
    assert parse(b"unknown: field\ndata: x\n\n") == [("message", "x")]
    assert parse(b":comment only\n\n") == []


def test_byte_order_mark_is_stripped_even_when_split() -> None:
    assert parse(b"\xef\xbb", b"\xbfdata: x\n\n") == [("message", "x")]
    assert parse(b"", b"\xef\xbb\xbfdata: y\n\n") == [("message", "y")]
    assert parse(b"data: \xef\xbb\xbfz\n\n") == [("message", "\ufeffz")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert parse(b"data: \xff\n\n") == [("message", "\ufffd")]


def test_a_line_without_end_is_bounded() -> None:
    parser = SSEParser(max_line=16)
    assert parser.feed(b"data: 0123456789\n\n") == [("message", "0123456789")]
    with pytest.raises(SSEError):
        parser.feed(b"data: " + b"x" * 20)


_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(
        st.tuples(
            st.text(st.characters(min_codepoint=33, max_codepoint=0x2FFF), min_size=1, max_size=8),
            st.lists(_text, min_size=1, max_size=3),
        ),
        max_size=5,
    ),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_stream_split_anywhere(
    events: list[tuple[str, list[str]]], newline: bytes, cuts: list[int]
) -> None:
    lines: list[str] = []
    for name, data in events:
        lines.append(f"event: {name}")
        lines += [f"data: {line}" for line in data]
        lines.append("")
    stream = newline.join(line.encode() for line in lines) + (newline if lines else b"")
    points = sorted({min(cut, len(stream)) for cut in cuts})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    assert parse(*chunks) == [(name, "\n".join(data)) for name, data in events]
