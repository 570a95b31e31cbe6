"""The mask check's frame scanner on its own: fed bytes, split anywhere, it keeps in step."""

from __future__ import annotations

from qa_ws_cli.server.masking import UNMASKED_CLOSE, FrameScanner
from tests.server.wire import WS_BINARY, WS_PING, WS_TEXT, RawPeer

STREAM = b"".join(
    RawPeer.encode_frame(op, b"a" * size, fin=fin)
    for op, size, fin in (
        (WS_TEXT, 0, True),
        (WS_TEXT, 125, True),
        (WS_BINARY, 126, True),
        (WS_TEXT, 65_535, False),
        (0x0, 65_536, True),
        (WS_PING, 5, True),
    )
)
UNMASKED = RawPeer.encode_frame(WS_TEXT, b"hi", masked=False)


def feed_split(data: bytes, cut: int, second: int) -> list[bool]:
    scanner = FrameScanner()
    return [scanner.feed(data[:cut]), scanner.feed(data[cut:second]), scanner.feed(data[second:])]


def test_masked_frames_split_at_any_two_points_pass() -> None:
    header_zone = [*range(0, 20), *range(131, 150), *range(283, 300)]
    for cut in header_zone:
        for second in (cut, cut + 1, cut + 7, len(STREAM) - 3):
            assert feed_split(STREAM, cut, second) == [True, True, True], (cut, second)


def test_an_unmasked_frame_after_masked_ones_is_found_however_split() -> None:
    data = STREAM + UNMASKED
    start = len(STREAM)
    for cut in range(start - 3, len(data) + 1):
        scanner = FrameScanner()
        first, rest = scanner.feed(data[:cut]), scanner.feed(data[cut:])
        assert first is (cut <= start + 1) and rest is False, cut  # its 2nd byte decides
        assert scanner.feed(STREAM) is False  # and it stays refused


def test_the_close_frame_is_an_unmasked_1002_with_its_reason() -> None:
    assert UNMASKED_CLOSE[0] == 0x88 and UNMASKED_CLOSE[1] == len(UNMASKED_CLOSE) - 2
    assert int.from_bytes(UNMASKED_CLOSE[2:4], "big") == 1002
    assert UNMASKED_CLOSE[4:] == b"protocol error: unmasked frame"
