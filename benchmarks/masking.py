"""What the unmasked-frame check costs per frame, next to aiohttp's own frame reader.

    .venv/bin/python -m benchmarks.masking

Masked 100-byte text frames, one per read (the common case: one small chat frame per read),
then 64 per read; best of seven runs, nanoseconds per frame. The readers' queues are never
read (their limit is huge), so each run starts with a fresh one.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable

from aiohttp._websocket.reader import WebSocketDataQueue  # benchmark only: a reader's queue
from aiohttp.http import WebSocketReader

from qa_ws_cli.server.masking import FrameScanner, MaskedFramesOnly

PAYLOAD = 100
FRAMES = 20_000  # per run, whatever the frames per read


def masked_frame(size: int = PAYLOAD) -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(b"x" * size))
    return bytes([0x81, 0x80 | size]) + mask + body


class _Protocol:
    """The queue's flow-control peer; never paused here."""

    _reading_paused = False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


def _reader(loop: asyncio.AbstractEventLoop) -> WebSocketReader:
    queue = WebSocketDataQueue(_Protocol(), 2**30, loop=loop)  # type: ignore[arg-type]
    return WebSocketReader(queue, 1 << 20, False, True)


def best_ns(make: Callable[[], Callable[[bytes], object]], data: bytes, frames: int) -> float:
    reads = FRAMES // frames
    runs = []
    gc.disable()  # the queues only grow: no collection in the middle of a run
    try:
        for _ in range(7):
            feed = make()
            start = time.perf_counter()
            for _ in range(reads):
                feed(data)
            runs.append(time.perf_counter() - start)
            del feed
            gc.collect()
    finally:
        gc.enable()
    return min(runs) / (reads * frames) * 1e9


class _NoRefuser:
    def refuse_unmasked(self) -> None:
        return None


def main() -> None:
    loop = asyncio.new_event_loop()
    one = masked_frame()
    for label, data, frames in (("1 frame/read", one, 1), ("64 frames/read", one * 64, 64)):
        scan = best_ns(lambda: FrameScanner().feed, data, frames)
        plain = best_ns(lambda: _reader(loop).feed_data, data, frames)
        checked = best_ns(
            lambda: MaskedFramesOnly(_reader(loop), _NoRefuser()).feed_data, data, frames
        )
        print(
            f"{label}: scanner alone {scan:.0f} ns/frame; aiohttp reader {plain:.0f} ns/frame, "
            f"through the check {checked:.0f} ns/frame (+{checked - plain:.0f} ns, "
            f"+{(checked - plain) / plain:.0%})"
        )
    loop.close()


if __name__ == "__main__":
    main()
